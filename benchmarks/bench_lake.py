"""The lake (DuckLake on PostgreSQL, Parquet files in a directory) against the DuckDB file.

    python benchmarks/bench_lake.py throughput [--collectors 1 2 4] [--sessions 300]
    python benchmarks/bench_lake.py reads [--spans 1000000]

Run it in the lake's venv (``make test`` builds ``.venv-lake``; ``flightrec[lake]`` pins duckdb
1.5.5), so that the file it is compared with runs on the same duckdb. Both start a private
PostgreSQL server (``tracer.testing.PrivatePostgres``; Debian's ``postgresql``).

``throughput``: four sender processes post the realistic spans of ``bench_collector.py`` (OTLP/HTTP
protobuf, 512 spans a request), sender k to collector k mod N, to N ``flightrec serve --db
ducklake:… --no-dashboard --no-grpc`` processes on one lake, and to one on a file. Reported: spans
committed a second, acknowledgement latency, the collectors' CPU a span, bytes a span (the data
directory plus the catalog database; the file), the lake's files after the load and after
``flightrec maintain``.

``reads``: a >= 1M-span file store (``bench_store.generate_store``), imported into a lake
(``Store.import_file``), then ``traces list``'s first page and a 30-turn session's account on fresh
read-only connections, before and after maintenance, beside the same on the file.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

import bench_collector as bc  # noqa: E402
from _workload import machine_header  # noqa: E402

from tracer import Store  # noqa: E402
from tracer._collector import wait_until_serving  # noqa: E402
from tracer.testing import PrivatePostgres, postgres_binaries  # noqa: E402


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _catalog_bytes(pg: PrivatePostgres, conninfo: str) -> int:
    name = conninfo.split("dbname=")[1].split()[0]
    out = subprocess.run([str(pg.bin / "psql"), "-h", "127.0.0.1", "-p", str(pg.port), "-U", "flightrec", "-d", name,
                          "-Atc", f"SELECT pg_database_size('{name}')"], capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


def _load(db: str, collectors: int, args: argparse.Namespace, tmp: str) -> dict[str, Any]:
    """The senders' load on ``collectors`` serve processes writing ``db``; the figures of one run."""
    flightrec = Path(sys.executable).with_name("flightrec")
    ports = [bc._free_port() for _ in range(collectors)]
    servers = [subprocess.Popen([str(flightrec), "serve", "--db", db, "--port", str(p), "--no-grpc", "--no-dashboard"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for p in ports]
    try:
        for p in ports:
            wait_until_serving(f"http://127.0.0.1:{p}", 60)
        start, out = mp.Event(), mp.Queue()
        procs = [mp.Process(target=bc._sender, args=(k, args, ports[k % collectors], tmp, start, out))
                 for k in range(args.senders)]
        for p in procs:
            p.start()
        for _ in procs:
            assert out.get(timeout=900)[0] == "ready"
        cpu = [bc._cpu_s(s.pid) for s in servers]
        start.set()
        done = [out.get(timeout=900) for _ in procs]
        failures = [f"sender {d[1]}: {d[2]}" for d in done if d[0] == "failed"]
        if failures:
            raise SystemExit("; ".join(failures))
        cpu = sum(bc._cpu_s(s.pid) for s in servers) - sum(cpu)
        for p in procs:
            p.join(60)
    finally:
        for s in servers:
            s.send_signal(signal.SIGTERM)
        for s in servers:
            s.wait(120)
    with Store(db, read_only=True) as store:
        stored = store.sql("SELECT count(*) FROM spans")[0][0]
    first, last = min(d[2] for d in done), max(d[3] for d in done)
    lat = sorted(x for d in done for x in d[4])
    q = lambda f: round(lat[min(int(f * len(lat)), len(lat) - 1)] * 1e3)  # noqa: E731
    return {"collectors": collectors, "spans": stored, "seconds": round(last - first, 1),
            "spans_per_s": round(stored / (last - first)), "ack_p50_ms": q(0.5), "ack_p99_ms": q(0.99),
            "cpu_us_per_span": round(cpu / stored * 1e6)}


def cmd_throughput(args: argparse.Namespace) -> None:
    pg = PrivatePostgres(postgres_binaries())
    rows = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for n in args.collectors:
                conninfo = pg.database()
                data = Path(tmp) / f"lake{n}"
                url = f"ducklake:postgres:{conninfo}?data_path={data}/"
                row = _load(url, n, args, tmp)
                with Store(url) as store:
                    files = store.sql("SELECT sum(file_count) FROM ducklake_table_info('lake')")[0][0]
                    row["bytes_per_span"] = round((_dir_bytes(data) + _catalog_bytes(pg, conninfo)) / row["spans"])
                    t0 = time.perf_counter()
                    done = store.maintain_lake(keep_snapshots_s=0)
                    row |= {"files_after_load": files, "files_per_hour": round(files / row["seconds"] * 3600),
                            "maintain_s": round(time.perf_counter() - t0, 1), "files_after_maintain": done.files_after,
                            "bytes_per_span_after_maintain": round(
                                (_dir_bytes(data) + _catalog_bytes(pg, conninfo)) / row["spans"])}
                rows.append({"store": "lake", **row})
                print(json.dumps(rows[-1]), file=sys.stderr)
            file = str(Path(tmp) / "file.duckdb")
            row = _load(file, 1, args, tmp)
            rows.append({"store": "file", **row, "bytes_per_span": round(os.path.getsize(file) / row["spans"])})
    finally:
        pg.stop()
    print(machine_header("lake throughput"))
    print(json.dumps(rows, indent=2))


def _reads(db: str, session_id: str, runs: int) -> dict[str, float]:
    opens, lists, accounts = [], [], []
    for _ in range(runs):
        t0 = time.perf_counter()
        with Store(db, read_only=True) as store:
            t1 = time.perf_counter()
            store.list_sessions(limit=50)
            t2 = time.perf_counter()
            store.session_account(session_id)
            t3 = time.perf_counter()
        opens.append(t1 - t0)
        lists.append(t2 - t1)
        accounts.append(t3 - t2)
    ms = lambda xs: round(statistics.median(xs) * 1e3, 1)  # noqa: E731
    return {"open_ms": ms(opens), "traces_list_ms": ms(lists), "session_account_ms": ms(accounts)}


def cmd_reads(args: argparse.Namespace) -> None:
    import bench_store

    out = ROOT / "out"
    out.mkdir(exist_ok=True)
    import duckdb

    file = str(out / f"lake-source-{args.spans}-duckdb{duckdb.__version__}.duckdb")
    if not os.path.exists(file):
        gen = argparse.Namespace(base_sessions=60, min_turns=2, max_turns=30, seed=7, write_batch=20_000)
        bench_store.generate_store(file, args.spans, gen)
    with Store(file, read_only=True) as store:
        spans = store.sql("SELECT count(*) FROM spans")[0][0]
        target = store.sql("SELECT session_id FROM sessions ORDER BY abs(turns - 30), session_id LIMIT 1")[0][0]
        turns = store.get_session(target).turns
    pg = PrivatePostgres(postgres_binaries())
    try:
        with tempfile.TemporaryDirectory() as tmp:
            url = f"ducklake:postgres:{pg.database()}?data_path={tmp}/lake/"
            with Store(url) as lake:
                t0 = time.perf_counter()
                lake.import_file(file)
                imported_s = time.perf_counter() - t0
            before = _reads(url, target, args.runs)
            with Store(url) as lake:
                t0 = time.perf_counter()
                done = lake.maintain_lake(keep_snapshots_s=0)
                maintain_s = time.perf_counter() - t0
            after = _reads(url, target, args.runs)
            on_file = _reads(file, target, args.runs)
            lake_bytes = _dir_bytes(Path(tmp) / "lake")
    finally:
        pg.stop()
    print(machine_header("lake reads"))
    print(json.dumps({"spans": spans, "session_turns": turns, "import_s": round(imported_s, 1),
                      "maintain_s": round(maintain_s, 1), "files_before": done.files_before,
                      "files_after": done.files_after, "lake_before_maintenance": before,
                      "lake_after_maintenance": after, "file": on_file,
                      "bytes_per_span": {"lake_files": round(lake_bytes / spans),
                                         "file": round(os.path.getsize(file) / spans)}}, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("throughput")
    t.add_argument("--collectors", type=int, nargs="+", default=[1, 2, 4])
    t.add_argument("--senders", type=int, default=4)
    t.add_argument("--sessions", type=int, default=300)
    t.add_argument("--turns", type=int, default=8)
    t.add_argument("--batch", type=int, default=512)
    t.add_argument("--transport", default="http")
    r = sub.add_parser("reads")
    r.add_argument("--spans", type=int, default=1_000_000)
    r.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    {"throughput": cmd_throughput, "reads": cmd_reads}[args.cmd](args)


if __name__ == "__main__":
    main()
