"""Collector throughput: realistic agent spans over OTLP/HTTP protobuf (or OTLP/gRPC) from 4 sender
processes to ``flightrec serve``, which acknowledges each request only after committing it.

    python benchmarks/bench_collector.py [--senders 4] [--sessions 300] [--turns 8] [--batch 512]
                                         [--transport http|grpc] [--no-dashboard] [--stages]
                                         [--content full|redacted|none] [--store PATH] [--retry]

Each sender first records ``--sessions`` sessions of ``--turns`` LLM calls with the real
capture path (``_workload.Agent``: instrumented anthropic client, tools, content included) into
memory and encodes them with the OTLP exporter's own encoder in requests of ``--batch`` spans.
Then, all at once, every sender POSTs its requests on one keep-alive connection, one at a time,
as the SDK's exporter does, and times each request until its 200 (over gRPC: one channel each,
one ``Export`` at a time, until its OK). Reported: spans committed per
second over the whole load (first send to last acknowledgement), the p50 and p99 latency of an
acknowledgement, the collector process's CPU time per span over the load (less sensitive than
throughput to what else runs on a shared machine), the same from the load's start to the
process's exit after SIGTERM (``..._to_exit``: it adds what the load left to do, the online
detectors' last run and the final checkpoint), the process's peak resident memory by the load's
end, and the file's size per span once serve has exited (its last checkpoint done). Target:
≥ 10,000 spans/s with 4 senders. Serve runs with its dashboard (no browser on it) unless
``--no-dashboard``, which bounds its memory (RESULTS §71: the two differ in speed and memory).
A 503 fails the run, unless ``--retry``: then a sender waits as the answer's ``Retry-After`` says and
sends again, as OTLP exporters do (a load that outgrows serve's memory bound), and the acknowledgement's
latency counts the wait. ``--store`` serves a copy of a store instead of an empty one, as a collector
that has run for a while (its online detectors judge each new session against that history); the
figures count the new spans only. ``--sessions 1800`` passes the log size at which serve checkpoints
(RESULTS §74); the default load does not. ``online_runs_failed`` counts the online detection and scoring
runs that serve's log says failed (their sessions are never judged), and ``online_failures`` the
errors they failed with.

``--stages`` runs no server: it takes the same requests in one process and reports the process
CPU per span of each stage of the collector's path, with the writer's transactions as the load
groups them (one request of each sender per transaction) and as one request alone: decoding
(``decode_request``), the content policy of ``--content`` (``ContentPolicy.records``; serve's
``--content`` without ``--stages``), ingest (``Ingestor.build``), the Arrow conversion (``Store._tables``), the
write (``Store.write``: conversion, inserts, commit), and the online detectors over the ended
sessions, in runs of 150 sessions (about what one second brings at 4,000 spans/s) and of 1,200.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing as mp
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _workload import Agent, collecting_recorder, machine_header  # noqa: E402

from tracer._collector import tune_gc, wait_until_serving  # noqa: E402


def _prepare(k: int, sessions: int, turns: int, batch: int, tmp: str) -> list[bytes]:
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    rec, collect = collecting_recorder(str(Path(tmp) / f"unused{k}.duckdb"))
    agent = Agent(rec)
    for s in range(sessions):
        agent.run(turns, seed=k * 1_000_000 + s)
    spans = collect.spans
    return [encode_spans(spans[i:i + batch]).SerializeToString() for i in range(0, len(spans), batch)]


def _sender(k: int, args: argparse.Namespace, port: int, tmp: str, start: mp.Event, out: mp.Queue) -> None:
    bodies = _prepare(k, args.sessions, args.turns, args.batch, tmp)
    out.put(("ready", k))
    start.wait()
    send = _grpc_send(port) if args.transport == "grpc" else _http_send(port)
    latencies, first, busy = [], time.perf_counter(), 0
    for body in bodies:
        t0 = time.perf_counter()
        while True:
            failed = send(body)
            if not (args.retry and isinstance(failed, float)):
                break
            busy += 1
            time.sleep(failed)  # as an OTLP exporter does: the server said when to come back
        if failed:  # said on the queue: the parent stops at once instead of waiting for this sender's "done"
            out.put(("failed", k, f"HTTP 503, Retry-After {failed} s" if isinstance(failed, float) else failed))
            return
        latencies.append(time.perf_counter() - t0)
    out.put(("done", k, first, time.perf_counter(), latencies, busy))


def _http_send(port: int) -> Callable[[bytes], str | float | None]:
    """A request's failure, as text, or the seconds its 503 says to wait."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def send(body: bytes) -> str | float | None:
        conn.request("POST", "/v1/traces", body, {"Content-Type": "application/x-protobuf"})
        response = conn.getresponse()
        response.read()
        if response.status == 503:
            return float(response.getheader("Retry-After") or 1)
        return None if response.status == 200 else f"HTTP {response.status}"

    return send


def _grpc_send(port: int) -> Callable[[bytes], str | None]:
    import grpc

    from tracer._grpc import EXPORT_METHOD

    export = grpc.insecure_channel(f"127.0.0.1:{port}").unary_unary(EXPORT_METHOD)

    def send(body: bytes) -> str | None:
        try:
            export(body, timeout=60)
        except grpc.RpcError as error:
            return f"gRPC {error.code().name}: {error.details()}"
        return None

    return send


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cpu_s(pid: int) -> float:
    """User plus system CPU seconds of a process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _peak_rss_mb(pid: int) -> int:
    """A process's peak resident memory so far (VmHWM), from /proc (Linux)."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))) // 1024


def _process_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _stages(args: argparse.Namespace) -> None:
    """Process CPU per span of each stage, in this process (see the module docstring)."""
    from evals.detectors import Scope, detect
    from tracer._ingest import Batch, Ingestor
    from tracer._otlp import decode_request
    from tracer._redact import ContentPolicy
    from tracer._store import Store

    with tempfile.TemporaryDirectory() as tmp:
        sent = [_prepare(k, args.sessions, args.turns, args.batch, tmp) for k in range(args.senders)]
        # As the writer sees them: the senders' requests in turn.
        bodies = [b for i in range(max(map(len, sent))) for b in (s[i] for s in sent if i < len(s))]
        tune_gc()  # as `flightrec serve` does
        out: dict[str, Any] = {}
        for label, group in (("by_senders", args.senders), ("alone", 1)):
            cpu = dict.fromkeys(("decode", "policy", "build", "tables", "write"), 0.0)
            policy = ContentPolicy(args.content)
            store = Store(str(Path(tmp) / f"{label}.duckdb"))
            store.defer_checkpoints("128MB")  # as the collector
            store._tables(Batch())  # reads the column types (and imports pandas) once: not a span's cost
            ingestor, spans, commits, ended = Ingestor(), 0, 0, []
            for i in range(0, len(bodies), group):
                t0 = _process_cpu_s()
                records = [r for body in bodies[i:i + group] for r in decode_request(body, "application/x-protobuf")[0]]
                tp = _process_cpu_s()
                policy.records(records)
                t1 = _process_cpu_s()
                batch = ingestor.build(records, Batch())
                t2 = _process_cpu_s()
                store._tables(batch)  # timed apart; write converts again
                t3 = _process_cpu_s()
                store.write(batch)
                t4 = _process_cpu_s()
                for stage, took in zip(cpu, (tp - t0, t1 - tp, t2 - t1, t3 - t2, t4 - t3)):
                    cpu[stage] += took
                spans += len(records)
                commits += 1
                ended += [d.session_id for d in batch.sessions.values() if d.ended]
            row = {f"{stage}_us": round(v / spans * 1e6, 1) for stage, v in cpu.items()}
            row |= {"spans_per_commit": round(spans / commits),
                    "write_ms_per_commit": round(cpu["write"] / commits * 1e3, 1)}
            if label == "by_senders":
                for size in (150, 1200):
                    t0 = _process_cpu_s()
                    for i in range(0, len(ended), size):
                        detect(store, scope=Scope(session_ids=tuple(ended[i:i + size])))
                    row[f"detect_us_runs_of_{size}"] = round((_process_cpu_s() - t0) / spans * 1e6, 1)
            store.close()
            row["bytes_per_span"] = round(os.path.getsize(Path(tmp) / f"{label}.duckdb") / spans)
            out[label] = row
    print(machine_header("collector stages"))
    print(json.dumps({"spans": spans, "sessions": len(ended), **out}, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--senders", type=int, default=4)
    parser.add_argument("--sessions", type=int, default=300)
    parser.add_argument("--turns", type=int, default=8)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--transport", choices=("http", "grpc"), default="http")
    parser.add_argument("--no-dashboard", action="store_true",
                        help="serve --no-dashboard: the collector alone, with its memory bounds (DuckDB's 48 MB)")
    parser.add_argument("--stages", action="store_true", help="no server: the CPU of each stage, in process")
    parser.add_argument("--content", choices=("full", "redacted", "none"), default="full",
                        help="the collector's content policy (serve --content)")
    parser.add_argument("--score-sample", type=float, default=None, metavar="RATE",
                        help="online scoring on, with the default policy at this rate (serve --score-sample)")
    parser.add_argument("--retry", action="store_true",
                        help="a sender waits out a 503 as its Retry-After says and sends again, as OTLP exporters "
                             "do, instead of failing the run (OTLP/HTTP); an acknowledgement's latency then counts it")
    parser.add_argument("--store", metavar="PATH",
                        help="serve a copy of this store: a collector with a history (its online detectors read it)")
    args = parser.parse_args()
    if args.stages:
        _stages(args)
        return
    with tempfile.TemporaryDirectory() as tmp:
        db = str(Path(tmp) / "collector.duckdb")
        held = (0, 0)
        if args.store:
            shutil.copyfile(args.store, db)
            with duckdb.connect(db, read_only=True) as con:
                held = con.execute("SELECT (SELECT count(*) FROM spans), (SELECT count(*) FROM sessions)").fetchone()
        # Free ports, not 8501 and 4317: another serve may run on this machine.
        port, grpc_port, dashboard_port = _free_port(), _free_port(), _free_port()
        flightrec = Path(sys.executable).with_name("flightrec")
        grpc_args = ["--grpc-port", str(grpc_port)] if args.transport == "grpc" else ["--no-grpc"]
        dashboard_args = ["--no-dashboard"] if args.no_dashboard else ["--dashboard-port", str(dashboard_port)]
        # Serve's log says which online detection and scoring runs failed (evals/detectors/_online.py).
        log = open(Path(tmp) / "serve.log", "wb")  # noqa: SIM115 - closed once serve has exited
        server = subprocess.Popen([str(flightrec), "serve", "--db", db, "--port", str(port), *grpc_args,
                                   *dashboard_args, "--content", args.content,
                                   *(["--score-sample", str(args.score_sample)] if args.score_sample is not None
                                     else [])],
                                  stdout=subprocess.DEVNULL, stderr=log)
        try:
            wait_until_serving(f"http://127.0.0.1:{port}", 30)
            start, out = mp.Event(), mp.Queue()
            to = grpc_port if args.transport == "grpc" else port
            procs = [mp.Process(target=_sender, args=(k, args, to, tmp, start, out)) for k in range(args.senders)]
            for p in procs:
                p.start()
            for _ in procs:
                assert out.get(timeout=600)[0] == "ready"
            cpu = cpu_at_start = _cpu_s(server.pid)
            start.set()
            done = [out.get(timeout=600) for _ in procs]
            failures = [f"sender {d[1]}: {d[2]}" for d in done if d[0] == "failed"]
            if failures:
                raise SystemExit("; ".join(failures))
            cpu = _cpu_s(server.pid) - cpu
            peak_rss = _peak_rss_mb(server.pid)
            for p in procs:
                p.join(60)
        finally:
            server.send_signal(signal.SIGTERM)  # a background job ignores SIGINT; serve stops on either
            # The child's whole CPU, from its rusage: what it did after the load (the detectors'
            # last run, the final checkpoint) belongs to the load too.
            _, _, usage = os.wait4(server.pid, 0)
            server.returncode = 0
        cpu_to_exit = usage.ru_utime + usage.ru_stime - cpu_at_start
        log.close()
        logged = (Path(tmp) / "serve.log").read_text(errors="replace")
        size = os.path.getsize(db)  # serve checkpoints on exit: the log is in the file
        con = duckdb.connect(db, read_only=True)
        stored = con.execute("SELECT count(*) FROM spans").fetchone()[0] - held[0]
        sessions = con.execute("SELECT count(*) FROM sessions").fetchone()[0] - held[1]
        scored = con.execute("SELECT count(DISTINCT session_id) FROM session_scores").fetchone()[0]
        con.close()
    first = min(d[2] for d in done)
    last = max(d[3] for d in done)
    latencies = sorted(x for d in done for x in d[4])
    p = lambda q: latencies[min(int(q * len(latencies)), len(latencies) - 1)] * 1e3  # noqa: E731
    print(machine_header("collector throughput"))
    print(json.dumps({"transport": args.transport, "senders": args.senders, "spans_committed": stored,
                      "sessions": sessions, "sessions_scored": scored, "score_sample": args.score_sample,
                      "requests": len(latencies), "spans_per_request": args.batch,
                      "answered_503": sum(d[5] for d in done),
                      "online_runs_failed": len(re.findall(r"^flightrec: .* failed for \d+ sessions", logged, re.M)),
                      "online_failures": sorted({m[:160] for m in re.findall(
                          r"^[\w.]+(?:Error|Exception): .*", logged, re.M)}),
                      "seconds": round(last - first, 2),
                      "spans_per_s": round(stored / (last - first)), "ack_p50_ms": round(p(0.5), 1),
                      "ack_p99_ms": round(p(0.99), 1), "ack_mean_ms": round(statistics.mean(latencies) * 1e3, 1),
                      "server_cpu_us_per_span": round(cpu / stored * 1e6),
                      "server_cpu_us_per_span_to_exit": round(cpu_to_exit / stored * 1e6),
                      "server_peak_rss_mb": peak_rss,
                      "bytes_per_span": None if args.store else round(size / stored),
                      "store_held_spans": held[0]},
                     indent=2))


if __name__ == "__main__":
    main()
