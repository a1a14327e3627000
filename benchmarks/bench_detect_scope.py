"""An online detection run when one of the sessions it judges is old, or long.

    python benchmarks/bench_detect_scope.py --db STORE [--newest 100] [--spread-every 20000] [--reps 5]

The online detector judges the sessions that have just ended (``Scope(session_ids=…)``). Each
per-session detector reads only those sessions' rows (``scope_head``), from the earliest start
among them on. A session that began long ago, or lasted long, makes that start early; in a fleet,
a long session's rows lie among everybody else's, across its whole life. This times
``detect`` over, in turn:

- ``newest``: the ``--newest`` sessions that started last;
- ``+ oldest``: those and the session that started first (a short session, long ago);
- ``+ spread``: those and a session whose rows lie across the whole store, one in every
  ``--spread-every`` rows of each per-session table (made by moving those rows to the oldest
  session, whose start is the store's first): a session as long as the store, as a fleet stores it.

The store is copied to a temporary directory first; the copy is changed (the spread session, the
alerts). Prints the median seconds of each, and of the four detectors that the spread session slows most.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _workload import machine_header, table  # noqa: E402

import tracer  # noqa: E402
from evals.detectors import Scope, detect  # noqa: E402
from evals.detectors._scope import _PER_SESSION_TABLES  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--db", required=True, help="a store to copy, for example benchmarks/out/queries-1m.duckdb")
    ap.add_argument("--newest", type=int, default=100)
    ap.add_argument("--spread-every", type=int, default=20_000,
                    help="one row in this many goes to the spread session (20,000: one every 2 s at 10,000 spans/s)")
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    print(machine_header("An online detection run when one of its sessions is old, or long"))
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "store.duckdb"
        shutil.copyfile(args.db, db)
        store = tracer.Store(db)
        newest = [r[0] for r in store.sql("SELECT session_id FROM sessions WHERE ended AND origin = 'production' "
                                          "ORDER BY start_ns DESC LIMIT ?", [args.newest])]
        oldest, spread = (r[0] for r in store.sql("SELECT session_id FROM sessions WHERE ended AND "
                                                  "origin = 'production' ORDER BY start_ns LIMIT 2"))
        first = store.sql("SELECT min(start_ns) FROM spans")[0][0]
        for t in _PER_SESSION_TABLES:
            store.sql(f"UPDATE {t} SET session_id = ? WHERE rowid % ? = 0", [spread, args.spread_every])
        store.sql("UPDATE sessions SET start_ns = ? WHERE session_id = ?", [first, spread])
        store.sql("CHECKPOINT")
        spans = store.sql("SELECT count(*), count(*) FILTER (WHERE session_id = ?) FROM spans", [spread])[0]
        print(f"store: {spans[0]:,} spans; the spread session holds {spans[1]:,} of them\n")
        runs = {"newest": newest, "+ oldest": [*newest, oldest], "+ spread": [*newest, spread]}
        took: dict[str, list[float]] = {k: [] for k in runs}
        each: dict[str, dict[str, list[float]]] = {k: {} for k in runs}
        for _ in range(args.reps):
            for name, ids in runs.items():
                result = detect(store, scope=Scope(session_ids=tuple(ids)))
                took[name].append(result.seconds)
                for det, s in result.by_detector.items():
                    each[name].setdefault(det, []).append(s)
        store.close()

    def grew(det: str) -> float:
        return statistics.median(each["+ spread"][det]) - statistics.median(each["newest"].get(det, [0.0]))

    heavy = sorted(each["+ spread"], key=grew, reverse=True)[:4]
    print(table(["run", "detect s", *heavy],
                [[name, f"{statistics.median(took[name]):.3f}",
                  *(f"{statistics.median(each[name][d]):.3f}" for d in heavy)] for name in runs]))


if __name__ == "__main__":
    main()
