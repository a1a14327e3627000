"""The store's write path statement by statement, and what each table and column takes on disk.

    python benchmarks/bench_write.py [--sessions 600] [--senders 4] [--group 4] [--columns]

Builds the requests ``bench_collector.py`` sends (``--senders`` × ``--sessions`` realistic sessions
in OTLP requests of 512 spans), decodes and ingests them up front, then times ``Store.write``
alone over them, ``--group`` requests a transaction as the collector's writer groups them (one
request of each of four waiting senders). Reported: the process CPU of the writes per span and
per commit, each statement's CPU per commit (the connection is wrapped, so every ``execute`` is
timed; ``COMMIT`` is the log's write and sync), and the file's bytes per span after a checkpoint.

``--columns`` also copies each table, and each column alone, into a fresh DuckDB file and reports
its bytes per span there: what the data takes compressed, apart from indexes and free blocks.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import resource
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import duckdb  # noqa: E402
from _workload import machine_header  # noqa: E402
from bench_collector import _prepare  # noqa: E402

from tracer._ingest import Batch, Ingestor  # noqa: E402
from tracer._otlp import decode_request  # noqa: E402
from tracer._store import Store  # noqa: E402

_TABLES = ("spans", "llm_calls", "tool_calls", "content", "message_chain", "turns", "sessions")


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class _Timed:
    """A DuckDB connection whose ``execute`` adds its CPU to ``spent``, by the statement's start."""

    def __init__(self, con: duckdb.DuckDBPyConnection, spent: collections.Counter[str]) -> None:
        self._con, self._spent = con, spent

    def execute(self, sql: str, *args: Any) -> Any:
        t0 = _cpu_s()
        try:
            return self._con.execute(sql, *args)
        finally:
            self._spent[" ".join(sql.split())[:48]] += _cpu_s() - t0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._con, name)


def _columns(path: str, spans: int, tmp: str) -> dict[str, Any]:
    con = duckdb.connect()
    con.execute(f"ATTACH '{path}' AS src (READ_ONLY)")
    scratch = str(Path(tmp) / "scratch.duckdb")

    def size(select: str) -> int:
        if os.path.exists(scratch):
            os.remove(scratch)
        con.execute(f"ATTACH '{scratch}' AS d")
        con.execute(f"CREATE TABLE d.x AS {select}")
        con.execute("DETACH d")
        return os.path.getsize(scratch)

    empty = size("SELECT 1 AS a WHERE false")
    out: dict[str, Any] = {}
    for table in _TABLES:
        columns = [r[0] for r in con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_catalog = 'src' AND table_name = ? "
            "ORDER BY ordinal_position", [table]).fetchall()]
        on_disk = {c: (size(f'SELECT "{c}" FROM src.{table}') - empty) / spans for c in columns}
        raw = {c: (con.execute(f'SELECT sum(strlen("{c}"::VARCHAR)) FROM src.{table}').fetchone()[0] or 0) / spans
               for c in columns}
        out[table] = {
            "bytes_per_span": round((size(f"SELECT * FROM src.{table}") - empty) / spans),
            # A column under one 256 KB block shows as that block; read the small ones as "at most".
            "columns": {c: {"disk": round(on_disk[c]), "text": round(raw[c])}
                        for c in sorted(columns, key=lambda c: -on_disk[c])[:6]},
        }
    copy = str(Path(tmp) / "copy.duckdb")
    con.execute(f"ATTACH '{copy}' AS c")
    con.execute("COPY FROM DATABASE src TO c")
    con.execute("DETACH c")
    out["copied_whole_bytes_per_span"] = round(os.path.getsize(copy) / spans)
    con.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--senders", type=int, default=4)
    parser.add_argument("--sessions", type=int, default=600)
    parser.add_argument("--group", type=int, default=4, help="requests a transaction")
    parser.add_argument("--columns", action="store_true", help="bytes on disk by table and column")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        sent = [_prepare(k, args.sessions, 8, 512, tmp) for k in range(args.senders)]
        bodies = [b for i in range(max(map(len, sent))) for b in (s[i] for s in sent if i < len(s))]
        ingestor = Ingestor()
        batches = []
        for i in range(0, len(bodies), args.group):
            records = [r for body in bodies[i:i + args.group]
                       for r in decode_request(body, "application/x-protobuf")[0]]
            batches.append((len(records), ingestor.build(records, Batch())))
        path = str(Path(tmp) / "write.duckdb")
        store = Store(path)
        store.defer_checkpoints("128MB")  # as the collector
        spent: collections.Counter[str] = collections.Counter()
        con = store._con
        store._con = _Timed(con, spent)  # type: ignore[assignment]
        spans = 0
        t0 = _cpu_s()
        for n, batch in batches:
            store.write(batch)
            spans += n
        write = _cpu_s() - t0
        store._con = con
        t0 = _cpu_s()
        con.execute("CHECKPOINT")
        checkpoint = _cpu_s() - t0
        store.close()
        commits = len(batches)
        out: dict[str, Any] = {
            "spans": spans, "commits": commits, "write_us_per_span": round(write / spans * 1e6, 1),
            "write_ms_per_commit": round(write / commits * 1e3, 1),
            "checkpoint_us_per_span": round(checkpoint / spans * 1e6, 1),
            "file_bytes_per_span": round(os.path.getsize(path) / spans),
            "statement_ms_per_commit": {k: round(v / commits * 1e3, 2) for k, v in spent.most_common()},
        }
        if args.columns:
            out["on_disk"] = _columns(path, spans, tmp)
    print(machine_header("the store's write path, statement by statement"))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
