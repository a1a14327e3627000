"""What an online detection run needs: the seconds of ``detect`` over the newest sessions, and the
least DuckDB memory each of its queries runs in.

    python benchmarks/bench_detect_memory.py --db STORE [--newest 100 2000] [--reps 3] [--history 10]
                                             [--detectors NAME ...]

A bounded collector (``serve --no-dashboard``) holds DuckDB to 48 MB and lends a run 96 MB
(``evals.detectors._online.RUN_MEMORY_MB``); DuckDB's ``memory_limit`` is the database's, so a
query that needs more fails the run. This copies the store to a temporary directory, runs
``detect`` over the ``--newest`` sessions that ended last (``Scope(session_ids=…)``, as serve's
online detector does) ``--reps`` times and keeps the median, and records every query the run sent.
Then each query runs again on its own connection to the copy, at memory limits from 8 MB up, and
the least it passes at three times running is its need. The table gives each detector's largest need and the run's.

``--history K`` first adds K - 1 copies of every ``sessions`` row, each moved back in time by the
store's span and given new ids: a store of K times the sessions whose older ones keep only their
``sessions`` row, as after ``flightrec prune``. What a run reads of a route's history shows there.

``--detectors`` runs only those (``score.drop``, say). Stores: ``bench_detect_scale.py --db PATH`` builds
a routed store of 100,000 sessions (3 agents, 10 routes); ``bench_score_drop.py --routes 240 --db PATH``
one of 552,342 scored sessions.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import duckdb

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _workload import machine_header, table  # noqa: E402

import evals.detectors as D  # noqa: E402
import tracer  # noqa: E402

LIMITS_MB = (8, 12, 16, 20, 24, 28, 32, 40, 48, 56, 64, 72, 80, 96, 112, 128, 160, 192, 256, 384, 512, 1024)


def lengthen(path: str, copies: int) -> None:
    """Adds ``copies - 1`` copies of every session row, each further back by the store's span."""
    con = duckdb.connect(path)
    span = con.execute("SELECT max(end_ns) - min(start_ns) + 1 FROM sessions").fetchone()[0]
    con.execute(f"""INSERT INTO sessions SELECT * EXCLUDE (k) REPLACE (
                        session_id || '~' || k AS session_id, start_ns - k * {span} AS start_ns,
                        end_ns - k * {span} AS end_ns)
                    FROM sessions, range(1, {copies}) r(k)""")
    con.execute("CHECKPOINT")
    con.close()


def caller() -> str:
    """The detector module that sent a query: the nearest frame in ``evals.detectors`` but ``_detect``."""
    frame = sys._getframe(2)
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        if module.startswith("evals.detectors.") and module != "evals.detectors._detect":
            return f"{module.rsplit('.', 1)[1].lstrip('_')}.{frame.f_code.co_name}"
        frame = frame.f_back
    return "detect"


def least_memory(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any], tries: int = 3) -> float:
    """The least limit the query passes at ``tries`` times running: one pass in two is luck (how
    DuckDB's threads happen to share the work), and a run must not fail on bad luck."""
    for mb in LIMITS_MB:
        try:
            con.execute(f"SET memory_limit = '{mb}MB'")
            for _ in range(tries):
                con.execute(sql, params).fetchall()
            return mb
        except duckdb.OutOfMemoryException:
            continue
    return float("inf")


def measure(path: str, newest: int, reps: int, detectors: list[str] | None) -> tuple[float, dict[str, float]]:
    """The run's median seconds, and each caller's largest need in MB."""
    sent: list[tuple[str, str, list[Any]]] = []
    seconds = []
    with tracer.Store(path) as store:
        ids = tuple(r[0] for r in store.sql(
            "SELECT session_id FROM sessions WHERE ended ORDER BY end_ns DESC LIMIT ?", [newest]))
        plain = store.sql

        def recording(sql: str, params: Any = None, *args: Any, **kwargs: Any) -> Any:
            if not seconds:  # the first run's
                sent.append((caller(), sql, list(params or [])))
            return plain(sql, params, *args, **kwargs)

        store.sql = recording  # type: ignore[method-assign]
        for _ in range(reps):
            store.sql("DELETE FROM alert_observations")
            store.sql("DELETE FROM alerts")
            start = time.perf_counter()
            D.detect(store, scope=D.Scope(session_ids=ids), detectors=detectors)
            seconds.append(time.perf_counter() - start)
    con = duckdb.connect(path, read_only=True)
    needs: dict[str, float] = collections.defaultdict(float)
    for who, sql, params in sent:
        if not sql.lstrip().upper().startswith(("DELETE", "INSERT", "UPDATE")):
            needs[who] = max(needs[who], least_memory(con, sql, params))
    con.close()
    return statistics.median(seconds), needs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", required=True)
    ap.add_argument("--newest", type=int, nargs="+", default=[100, 2000])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--history", type=int, default=1, help="the store's sessions this many times over (see above)")
    ap.add_argument("--detectors", nargs="+", metavar="NAME", help="only these detectors (default: all)")
    args = ap.parse_args()
    print(machine_header("What an online detection run needs: seconds, and DuckDB memory a query"))
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "store.duckdb")
        shutil.copy(args.db, path)
        if args.history > 1:
            lengthen(path, args.history)
        with tracer.Store(path) as store:
            sessions, routes = store.sql("SELECT count(*), count(DISTINCT (agent, route)) FROM sessions")[0]
        print(f"store: {args.db} ({sessions:,} sessions, {routes} agent routes)\n")
        rows = []
        for newest in args.newest:
            seconds, needs = measure(path, newest, args.reps, args.detectors)
            worst = sorted(needs.items(), key=lambda kv: -kv[1])[:4]
            shown = [f"{mb:.0f}" if mb < float("inf") else f">{LIMITS_MB[-1]}" for _, mb in worst]
            rows.append((f"{newest:,}", f"{seconds:.2f}", shown[0],
                         ", ".join(f"{who} {mb}" for (who, _), mb in zip(worst, shown))))
        print(table(("sessions judged", "detect s (median)", "largest need MB", "the four largest, MB"), rows))


if __name__ == "__main__":
    main()
