"""An online detection run's cost against the size of the store it runs on.

    python benchmarks/bench_online_detect.py [--sizes 2000,20000] [--covers 150] [--runs 5]

For each size, a store of that many sessions is built as ``bench_detect_scale.py`` builds it
(the same deterministic sessions, child spans included), then ``evals.detectors.detect`` runs over
the newest ``--covers`` ended sessions (``Scope(session_ids=…)``, as ``flightrec serve``'s online
detector calls it every 10 s), ``--runs`` times, after one warm-up run. Reported: the median
process CPU of a run, all detectors together and each shared pass alone. A run whose cost
follows the sessions it covers costs the same on both stores; one that joins whole tables costs
more on the larger.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _workload import machine_header  # noqa: E402
from bench_detect_scale import build  # noqa: E402

import evals.detectors as detect_module  # noqa: E402
from tracer._store import Store  # noqa: E402


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _measure(path: str, covers: int, runs: int) -> dict[str, object]:
    spent: dict[str, list[float]] = defaultdict(list)
    passes = {}
    for name, run in detect_module.DETECTORS.items():
        passes.setdefault(run, name)

    def timed(run, name):  # one wrapper per shared pass, so detect still runs each pass once
        def wrapper(*args):
            t0 = _cpu_s()
            try:
                return run(*args)
            finally:
                spent[name].append(_cpu_s() - t0)
        return wrapper

    wrapped = {run: timed(run, name) for run, name in passes.items()}
    saved = dict(detect_module.DETECTORS)
    detect_module.DETECTORS.update({name: wrapped[run] for name, run in saved.items()})
    try:
        with Store(path) as store:
            spans = store.sql("SELECT count(*) FROM spans")[0][0]
            ids = tuple(r[0] for r in store.sql(
                "SELECT session_id FROM sessions WHERE ended ORDER BY end_ns DESC LIMIT ?", [covers]))
            scope = detect_module.Scope(session_ids=ids)
            detect_module.detect(store, scope=scope)  # warm-up
            spent.clear()
            totals = []
            for _ in range(runs):
                t0 = _cpu_s()
                detect_module.detect(store, scope=scope)
                totals.append(_cpu_s() - t0)
    finally:
        detect_module.DETECTORS.update(saved)
    return {"spans": spans, "run_cpu_ms": round(statistics.median(totals) * 1e3, 1),
            "by_pass_ms": {name: round(statistics.median(v) * 1e3, 1)
                           for name, v in sorted(spent.items(), key=lambda kv: -statistics.median(kv[1]))}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="2000,20000", help="store sizes in sessions, comma-separated")
    parser.add_argument("--covers", type=int, default=150, help="ended sessions a run covers")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in (int(s) for s in args.sizes.split(",")):
            path = str(Path(tmp) / f"{n}.duckdb")
            build(path, n, child_spans=True)
            out[f"{n}_sessions"] = _measure(path, args.covers, args.runs)
    print(machine_header("online detection against the store's size"))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
