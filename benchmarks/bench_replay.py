"""Replay benchmark: rebuild the last decision of a 30-turn session, plus a diff, median of N runs.

    python benchmarks/bench_replay.py [--turns 30] [--repeat 50]

Two sessions of ``--turns`` turns are recorded through the real pipeline (``_workload.py``: a
``tracer.Recorder`` with an instrumented anthropic client on a ``tracer.testing.FakeModel``).
Then, timed: ``replay.reconstruct`` of the last turn plus one ``replay.diff``: of the two
sessions (turn-by-turn alignment), or of the two last decisions' contexts (both rebuilt). Each
public call opens the store read-only and closes it, as the CLI does; the "open store" rows time
the same work on a store that is already open (what the dashboard does). Target: ≤ 50 ms median.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _workload import Agent, machine_header, table  # noqa: E402

import replay  # noqa: E402
import tracer  # noqa: E402
from replay._diff import diff_in  # noqa: E402
from replay._reconstruct import reconstruct_in  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = str(Path(tmp) / "bench.duckdb")
        recorder = tracer.Recorder(db)
        agent = Agent(recorder)
        a, _ = agent.run(args.turns, seed=1)
        b, _ = agent.run(args.turns, seed=2)
        recorder.shutdown()
        n = args.turns

        cases = {
            "reconstruct turn N + session diff": lambda run_diff: run_diff(a, b),
            "reconstruct turn N + context diff of the two turn-N decisions":
                lambda run_diff: run_diff(f"{a}:{n}", f"{b}:{n}", context=True),
        }
        rows = []
        for label, case in cases.items():
            def public(case: Callable[..., Any] = case) -> None:
                assert replay.reconstruct(a, n, db=db).exact
                case(lambda x, y, **kw: replay.diff(x, y, db=db, **kw))

            store = tracer.Store(db, read_only=True)

            def opened(case: Callable[..., Any] = case, store: tracer.Store = store) -> None:
                assert reconstruct_in(store, a, n).exact
                case(lambda x, y, **kw: diff_in(store, x, y, **kw))

            for how, fn in (("public API, store opened per call", public), ("on an open store", opened)):
                times = []
                for _ in range(args.repeat + 3):
                    t0 = time.perf_counter()
                    fn()
                    times.append((time.perf_counter() - t0) * 1000)
                times = times[3:]  # warm-up
                rows.append((label, how, f"{statistics.median(times):.1f}", f"{min(times):.1f}",
                             f"{max(times):.1f}"))
            store.close()
    print(machine_header(f"replay: reconstruct + diff of a {n}-turn session"))
    print(table(("work", "how", "median ms", "min ms", "max ms"), rows))


if __name__ == "__main__":
    main()
