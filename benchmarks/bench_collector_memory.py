"""Collector memory under any mix of request sizes: the peak RSS of ``flightrec serve
--no-dashboard`` while senders POST at once, each retrying a 503 after its ``Retry-After``
as the OTLP exporters do (issue 15, item 3; target: under 500 MB whatever the mix).

    python benchmarks/bench_collector_memory.py [--mixes big,tiny-attrs] [--repeat 3] [--dashboard]

Mixes, each against a fresh serve: ``big`` (``--concurrent`` requests of about ``--big-mb`` MB of
realistic agent spans with content, all at once), ``big-gzip`` (the same, gzipped), ``small``
(many requests of 64 spans from 32 senders), ``tiny-attrs`` (``--concurrent`` requests of about
``--big-mb`` MB of one-byte attributes, the shape that costs most memory per byte once decoded)
and ``mixed`` (big, gzip and small at once). Span ids are made unique per request, so every
span is stored. Peak RSS is the server's VmHWM from /proc (Linux), its baseline the VmRSS once
serving, its end the VmRSS once every sender is answered (what it keeps); all are printed, with
the 503s the senders got and the time to land everything.
``--dashboard`` runs serve with its dashboard (Streamlit started, no browser on it) to show what
the dashboard adds; ``--repeat`` runs each mix again against a fresh serve.
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import json
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _workload import Agent, collecting_recorder, machine_header  # noqa: E402

from tracer._collector import wait_until_serving  # noqa: E402

PROTOBUF = "application/x-protobuf"


def _status(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def _realistic(tmp: str) -> object:
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    rec, collect = collecting_recorder(str(Path(tmp) / "unused.duckdb"))
    agent = Agent(rec)
    for s in range(60):
        agent.run(8, seed=s)
    return encode_spans(collect.spans)


def _requests(template: object, target: int, count: int, first: int) -> list[bytes]:
    """``count`` bodies of about ``target`` bytes: the template's spans repeated, ids made unique."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    spans = [s for rs in template.resource_spans for ss in rs.scope_spans for s in ss.spans]
    per_span = template.ByteSize() / len(spans)
    n = max(1, int(target / per_span))
    bodies = []
    for k in range(first, first + count):
        request = ExportTraceServiceRequest()
        request.resource_spans.add().CopyFrom(template.resource_spans[0])
        scope = request.resource_spans[0].scope_spans[0]
        del scope.spans[:]
        for i in range(n):
            span = scope.spans.add()
            span.CopyFrom(spans[i % len(spans)])
            span.trace_id = (k * 1_000_003 + i // 64 + 1).to_bytes(16, "big")
            span.span_id = (k * 10_000_019 + i + 1).to_bytes(8, "big")
            span.parent_span_id = b""
        bodies.append(request.SerializeToString())
    return bodies


def _tiny_attrs(target: int, count: int, first: int) -> list[bytes]:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    bodies = []
    for k in range(first, first + count):
        request = ExportTraceServiceRequest()
        scope = request.resource_spans.add().scope_spans.add()
        size = i = 0
        while size < target:
            span = scope.spans.add(name="tiny", start_time_unix_nano=1, end_time_unix_nano=2)
            span.trace_id = (k * 1_000_003 + i + 1).to_bytes(16, "big")
            span.span_id = (k * 10_000_019 + i + 1).to_bytes(8, "big")
            for j in range(100):  # the SDK's default limit is 128 attributes a span
                span.attributes.add(key=f"k{j}").value.string_value = "v"
            size += span.ByteSize() + 4
            i += 1
        bodies.append(request.SerializeToString())
    return bodies


def _send(port: int, bodies: list[tuple[bytes, bool]], out: dict[str, int], lock: threading.Lock) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    for body, gzipped in bodies:
        headers = {"Content-Type": PROTOBUF, **({"Content-Encoding": "gzip"} if gzipped else {})}
        while True:
            try:
                conn.request("POST", "/v1/traces", body, headers)
                response = conn.getresponse()
                response.read()
            except (ConnectionError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
                with lock:
                    out["reconnects"] += 1
                continue
            if response.status == 200:
                break
            if response.status != 503:
                raise SystemExit(f"HTTP {response.status}")
            with lock:
                out["503"] += 1
            time.sleep(float(response.headers.get("Retry-After", "1")))
    conn.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(mix: str, senders: list[list[tuple[bytes, bool]]], tmp: str, dashboard: bool) -> dict[str, object]:
    db = Path(tmp) / f"{mix}.duckdb"
    for stale in (db, Path(f"{db}.wal")):  # a repeated mix starts from an empty store, as the first did
        stale.unlink(missing_ok=True)
    port = _free_port()
    flightrec = Path(sys.executable).with_name("flightrec")
    ui = ["--dashboard-port", str(_free_port())] if dashboard else ["--no-dashboard"]
    server = subprocess.Popen([str(flightrec), "serve", "--db", str(db), "--port", str(port), "--grpc-port", "0",
                               *ui],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until_serving(f"http://127.0.0.1:{port}", 120)  # a loaded machine starts serve slowly
        baseline = _status(server.pid, "VmRSS")
        out, lock = {"503": 0, "reconnects": 0}, threading.Lock()
        threads = [threading.Thread(target=_send, args=(port, bodies, out, lock)) for bodies in senders]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        seconds = time.perf_counter() - t0
        peak, end = _status(server.pid, "VmHWM"), _status(server.pid, "VmRSS")
    finally:
        server.send_signal(signal.SIGTERM)  # as Ctrl-C; SIGINT is ignored by a job a shell started in the background
        server.wait(120)
    requests = sum(len(b) for b in senders)
    mb = sum(len(body) for bodies in senders for body, _ in bodies) / 1e6
    return {"mix": mix, "dashboard": dashboard, "requests": requests, "payload_mb": round(mb, 1),
            "baseline_rss_mb": round(baseline / 1e6), "peak_rss_mb": round(peak / 1e6),
            "end_rss_mb": round(end / 1e6), "answered_503": out["503"],
            "reconnects": out["reconnects"], "seconds": round(seconds, 1)}


def _mixes(names: list[str], big: int, n: int, tmp: str) -> dict[str, list[list[tuple[bytes, bool]]]]:
    """The senders of each mix in ``names`` (each sender a list of bodies, each gzipped or not); only
    what they need is built, since the realistic spans take a while."""
    mixes: dict[str, list[list[tuple[bytes, bool]]]] = {}
    if "tiny-attrs" in names:
        mixes["tiny-attrs"] = [[(b, False)] for b in _tiny_attrs(big, n, 10 * n)]
    if set(names) - {"tiny-attrs"}:
        template = _realistic(tmp)
        realistic = _requests(template, big, n, 0)
        zipped = [gzip.compress(b, 6) for b in _requests(template, big, n, n)]
        small = _requests(template, 64 * template.ByteSize() // sum(
            len(ss.spans) for rs in template.resource_spans for ss in rs.scope_spans), 320, 2 * n)
        mixes |= {
            "big": [[(b, False)] for b in realistic],
            "big-gzip": [[(b, True)] for b in zipped],
            "small": [[(b, False) for b in small[k::32]] for k in range(32)],
            "mixed": ([[(b, False)] for b in realistic[: n // 2]] + [[(b, True)] for b in zipped[: n // 2]]
                      + [[(b, False) for b in small[k::16]] for k in range(16)]),
        }
    return mixes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--big-mb", type=float, default=14)
    parser.add_argument("--concurrent", type=int, default=12)
    parser.add_argument("--mixes", default="big,big-gzip,small,tiny-attrs,mixed")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each mix, each against a fresh serve")
    parser.add_argument("--dashboard", action="store_true",
                        help="serve with its dashboard (not loaded in a browser) instead of --no-dashboard")
    args = parser.parse_args()
    names = args.mixes.split(",")
    unknown = set(names) - {"big", "big-gzip", "small", "tiny-attrs", "mixed"}
    if unknown:
        parser.error(f"unknown mix {', '.join(sorted(unknown))}: choose among big, big-gzip, small, tiny-attrs, mixed")
    with tempfile.TemporaryDirectory() as tmp:
        mixes = _mixes(names, int(args.big_mb * 1e6), args.concurrent, tmp)
        print(machine_header("collector memory"))
        for _ in range(args.repeat):
            for mix in names:
                print(json.dumps(_run(mix, mixes[mix], tmp, args.dashboard)), flush=True)


if __name__ == "__main__":
    main()
