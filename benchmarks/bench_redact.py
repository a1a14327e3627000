"""What the content modes cost per LLM call, and what the redactors cost per request body.

Run from the repository root (``PYTHONPATH`` picks the ``tracer`` to measure, so that a base
commit's tree, unpacked with ``git archive``, runs the same script)::

    .venv/bin/python benchmarks/bench_redact.py                      # this tree
    PYTHONPATH=/tmp/base .venv/bin/python benchmarks/bench_redact.py # another tree's tracer
    .venv/bin/python benchmarks/bench_redact.py --json

What is measured, in process CPU time (user + sys, all threads), median of ``--rounds``:

* **call, MODE**: one non-streaming ``messages.create`` through ``Recorder(":memory:",
  content=MODE).instrument(client)`` inside a session, the request of ``bench_overhead.py`` (system
  prompt, five tools, a 20-message history, about 10 kB), answered at once by a mock transport.
  Each call's newest user message is new (a counter in it), the 20 before it repeat, as in an
  agent's loop. ``--calls`` calls and a ``flush()`` per round: capture, the content policy, the
  exporter and the in-memory store's writes, divided by the calls. The mock client's own cost is in
  every mode.
* **redact one body**: ``redact_value`` of that request with ``BUILTIN_REDACTORS``, the work that
  ``redacted`` adds to a call's request (its response is smaller).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from bench_overhead import ONE_TOOL, bare_client, request  # noqa: E402

import tracer  # noqa: E402
from tracer._redact import BUILTIN_REDACTORS, redact_value  # noqa: E402

MODES = ("full", "redacted", "none")


def cpu() -> float:
    return time.process_time()


def calls_ms(mode: str, calls: int, rounds: int) -> float:
    """Median CPU milliseconds per call in ``mode``."""
    rec = tracer.Recorder(":memory:", content=mode)
    client = rec.instrument(bare_client(ONE_TOOL))
    params = request(20)
    history, newest = params["messages"][:-1], params["messages"][-1]
    n = 0

    def call() -> None:
        nonlocal n
        n += 1
        text = f"Call {n}: write to jane.doe@example.com or +44 20 7946 0958. {newest['content']}"
        client.messages.create(**{**params, "messages": [*history, {"role": "user", "content": text}]})

    per_call = []
    with rec.session(agent="bench"):
        call()  # warm: imports, the store's first open
        rec.flush()
        for _ in range(rounds):
            start = cpu()
            for _ in range(calls):
                call()
            rec.flush()
            per_call.append((cpu() - start) * 1000 / calls)
    rec.shutdown()
    return statistics.median(per_call)


def redact_ms(rounds: int) -> float:
    body = request(20)
    times = []
    for _ in range(rounds):
        start = cpu()
        for _ in range(20):
            redact_value(body, BUILTIN_REDACTORS)
        times.append((cpu() - start) * 1000 / 20)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = {f"call, {m}": calls_ms(m, args.calls, args.rounds) for m in MODES}
    result["redact one body"] = redact_ms(args.rounds)
    result["request bytes"] = len(json.dumps(request(20)))
    result["tracer"] = str(Path(tracer.__file__).parent)
    if args.json:
        print(json.dumps(result))
        return
    for k, v in result.items():
        print(f"{k:20} {v:.3f} ms" if isinstance(v, float) else f"{k:20} {v}")


if __name__ == "__main__":
    main()
