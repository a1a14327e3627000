"""Eval throughput: the bundled suite × 5 trials, the simulated model answering in 200 ms a call,
8 trials at once, against the ideal parallel time.

    python benchmarks/bench_eval.py [--trials 5] [--concurrency 8] [--latency-ms 200] [--repeat 3]

The ideal parallel time is the model's own latency spread perfectly over the workers:
(LLM calls made × latency) / concurrency, or the longest trial's model time if that is longer.
Everything else (the agent, tools, tracing, scoring, storing the run) is overhead on top of it.
Target: wall time ≤ 1.5 × ideal. The process's CPU time is reported too: with ``--latency-ms 0``
it is what the run costs apart from the model.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _workload import machine_header  # noqa: E402

import evals  # noqa: E402
import tracer  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--latency-ms", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rows = []
    for i in range(args.repeat):
        with tempfile.TemporaryDirectory() as tmp:
            db = str(Path(tmp) / "bench.duckdb")
            started, cpu = time.perf_counter(), time.process_time()
            run = evals.run_eval("support", trials=args.trials, concurrency=args.concurrency, seed=i, db=db,
                                 settings={"sim_latency_ms": str(args.latency_ms)})
            wall, cpu = time.perf_counter() - started, time.process_time() - cpu
            with tracer.Store(db, read_only=True) as store:
                calls = [store.get_session(r.session_id).llm_calls for r in run.results if r.session_id]
        model_s = [n * args.latency_ms / 1000 for n in calls]
        ideal = max(sum(model_s) / args.concurrency, max(model_s))
        rows.append((wall, ideal, sum(calls), len(calls), cpu))
    print(machine_header("eval throughput"))
    print(f"suite: support, {run.run.cases} cases × {args.trials} trials, concurrency {args.concurrency}, "
          f"simulated latency {args.latency_ms} ms per call")
    print("| repeat | trials | LLM calls | ideal s | wall s | wall / ideal | CPU s | CPU ms a trial |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for i, (wall, ideal, n, trials, cpu) in enumerate(rows):
        ratio = f"{wall / ideal:.2f}" if ideal else "–"
        per_trial_ms = cpu / trials * 1000
        print(f"| {i + 1} | {trials} | {n} | {ideal:.1f} | {wall:.1f} | {ratio} | {cpu:.1f} | {per_trial_ms:.0f} |")
    if all(r[1] for r in rows):
        print(f"median wall / ideal: {statistics.median(w / i for w, i, *_ in rows):.2f}")
    print(f"median wall: {statistics.median(r[0] for r in rows):.1f} s; "
          f"median CPU: {statistics.median(r[4] for r in rows):.1f} s")


if __name__ == "__main__":
    main()
