"""Rerun every session of the default demo against its recording and count those that take the
recorded path (issue 4: deterministic re-execution must not report false divergences).

    python benchmarks/rerun_demo.py [--sessions 200]

Records the demo (``run_demo``: streamed sessions, approvals and rejections, crashes and resumes,
model faults, wall-clock guards) into a temp dir, then ``replay.rerun`` on each session in turn.
Prints how many took the recorded path, every divergence, and the median time of one rerun.
"""

from __future__ import annotations

import argparse
import collections
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _workload import machine_header  # noqa: E402

import replay  # noqa: E402
import tracer  # noqa: E402
from reference_agent import run_demo  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = str(Path(tmp) / "demo.duckdb")
        run_demo(db, str(Path(tmp) / "demo.world.sqlite"), sessions=args.sessions)
        store = tracer.Store(db, read_only=True)
        ids = [s.session_id for s in store.list_sessions(limit=args.sessions)]
        runs = collections.Counter(len(store.session_runs(sid)) for sid in ids)
        store.close()
        outcomes: collections.Counter[str] = collections.Counter()
        times = []
        for sid in ids:
            started = time.perf_counter()
            result = replay.rerun(sid, db=db)
            times.append(time.perf_counter() - started)
            outcomes["same path" if result.same_path else f"{sid}: {result.first_divergence}"] += 1
    print(machine_header("rerun of every demo session"))
    print(f"sessions by number of runs: {dict(sorted(runs.items()))}")
    for what, n in outcomes.most_common():
        print(f"{n:>4}  {what}")
    print(f"median rerun: {statistics.median(times) * 1e3:.0f} ms")


if __name__ == "__main__":
    main()
