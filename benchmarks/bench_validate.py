"""What validating a span costs (tracer/_validate.py), on the collector benchmark's realistic payload.

    python benchmarks/bench_validate.py [--sessions 100] [--turns 8] [--batch 512] [--rounds 7]

Records ``--sessions`` sessions of the reference workload (``_workload.Agent``, content included),
encodes them as OTLP/HTTP protobuf requests of ``--batch`` spans, as bench_collector.py does, then
in interleaved rounds: decodes every request with the check (``decode_request`` as the collector
runs it) and without it (the check replaced by a no-op), and runs the check alone over spans
already decoded, once as for OTLP and once as for the SDK (``from_sdk=True``: strings checked for
UTF-8 too). Reported: process CPU µs a span, median of the rounds, and the median of the per-round
differences (decode with the check minus decode without).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _workload import Agent, collecting_recorder, machine_header  # noqa: E402

from tracer import _otlp  # noqa: E402
from tracer._validate import check  # noqa: E402


def _cpu_us_per_span(fn, spans: int) -> float:
    start = time.process_time()
    fn()
    return (time.process_time() - start) / spans * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=100)
    parser.add_argument("--turns", type=int, default=8)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    with tempfile.TemporaryDirectory() as tmp:
        rec, collect = collecting_recorder(str(Path(tmp) / "unused.duckdb"))
        agent = Agent(rec)
        for s in range(args.sessions):
            agent.run(args.turns, seed=s)
    spans = collect.spans
    bodies = [encode_spans(spans[i:i + args.batch]).SerializeToString() for i in range(0, len(spans), args.batch)]
    records = [r for body in bodies for r in _otlp.decode_request(body, "application/x-protobuf")[0]]
    assert len(records) == len(spans)
    n = len(spans)

    def decode() -> None:
        for body in bodies:
            _otlp.decode_request(body, "application/x-protobuf")

    def check_all(from_sdk: bool) -> None:
        notes: Counter[str] = Counter()
        for r in records:
            check(r, notes, from_sdk=from_sdk)

    results: dict[str, list[float]] = {"decode_with_check": [], "decode_without_check": [], "check_otlp": [],
                                       "check_sdk": [], "difference": []}
    for _ in range(args.rounds):
        with_check = _cpu_us_per_span(decode, n)
        _otlp.check = lambda record, notes: None  # the call site, with nothing behind it
        try:
            without = _cpu_us_per_span(decode, n)
        finally:
            _otlp.check = check
        results["decode_with_check"].append(with_check)
        results["decode_without_check"].append(without)
        results["difference"].append(with_check - without)
        results["check_otlp"].append(_cpu_us_per_span(lambda: check_all(False), n))
        results["check_sdk"].append(_cpu_us_per_span(lambda: check_all(True), n))
    print(machine_header("span validation cost"))
    print(json.dumps({"spans": n, "requests": len(bodies), "rounds": args.rounds,
                      **{f"{k}_us_per_span": round(statistics.median(v), 2) for k, v in results.items()}}, indent=2))


if __name__ == "__main__":
    main()
