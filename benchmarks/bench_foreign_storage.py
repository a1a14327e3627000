"""Storage of sessions recorded by other instrumentation: does a 100-turn session cost about 10×
a 10-turn one, as ours does, or does it grow with the square of its length?

    python benchmarks/bench_foreign_storage.py [--sessions 10] [--turns 10 100]

Every LLM span of these conventions carries the whole conversation so far, so a store that kept
the spans' attributes whole would grow quadratically. For each convention (OpenInference's
flattened messages, OpenLLMetry's flattened prompts, the GenAI conventions' JSON messages) it
records sessions of each length as that instrumentation writes them (each turn: one LLM call
that asks for a tool, one tool span, a history growing by two messages of a few hundred
characters), ingests them into a fresh store as `flightrec serve` does, and reports the bytes
per session: the values stored (strings at their length, numbers at their width) and the size
of a compacted copy of the file, less that of an empty store. The target (issue 14) is a ratio
of at most 12× from 10 to 100 turns. "sent" is what the producer put in the spans' attributes, for scale.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace import SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import set_span_in_context

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from _workload import _WORDS, machine_header  # noqa: E402
from bench_store import compacted_size, logical_bytes  # noqa: E402

from tracer._ingest import Ingestor, from_readable  # noqa: E402
from tracer._store import Store  # noqa: E402

SYSTEM = "You plan trips. Check the weather before you book, and never book without the traveller's yes. " * 4
MODEL = "claude-haiku-4-5"


def words(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(n))


def conversation(rng: random.Random, turns: int) -> list[tuple[str, dict[str, Any], str]]:
    """Per turn: the tool call the model asked for (name, input) and the tool's result."""
    return [(rng.choice(("find_flights", "get_weather", "book_hotel")), {"city": words(rng, 2), "note": words(rng, 30)},
             words(rng, 80)) for _ in range(turns)]


def openinference(i: int, history: list[tuple[str, dict[str, Any], str]], call: tuple[str, dict[str, Any], str],
                  ask: str) -> dict[str, Any]:
    a: dict[str, Any] = {"openinference.span.kind": "LLM", "llm.model_name": MODEL, "session.id": f"oi-{i}",
                         "llm.token_count.prompt": 1000, "llm.token_count.completion": 50,
                         "llm.input_messages.0.message.role": "system", "llm.input_messages.0.message.content": SYSTEM,
                         "llm.input_messages.1.message.role": "user", "llm.input_messages.1.message.content": ask}
    n = 2
    for k, (name, args, result) in enumerate(history):
        a[f"llm.input_messages.{n}.message.role"] = "assistant"
        a[f"llm.input_messages.{n}.message.tool_calls.0.tool_call.id"] = f"t{k}"
        a[f"llm.input_messages.{n}.message.tool_calls.0.tool_call.function.name"] = name
        a[f"llm.input_messages.{n}.message.tool_calls.0.tool_call.function.arguments"] = json.dumps(args)
        a[f"llm.input_messages.{n + 1}.message.role"] = "tool"
        a[f"llm.input_messages.{n + 1}.message.tool_call_id"] = f"t{k}"
        a[f"llm.input_messages.{n + 1}.message.content"] = result
        n += 2
    name, args, _ = call
    out = "llm.output_messages.0.message."
    a.update({f"{out}role": "assistant", f"{out}tool_calls.0.tool_call.id": f"t{len(history)}",
              f"{out}tool_calls.0.tool_call.function.name": name,
              f"{out}tool_calls.0.tool_call.function.arguments": json.dumps(args),
              # OpenInference also keeps the whole request as one JSON value.
              "input.value": json.dumps({"system": SYSTEM, "messages": [ask, *history]}),
              "llm.invocation_parameters": json.dumps({"max_tokens": 1024})})
    return a


def openllmetry(i: int, history: list[tuple[str, dict[str, Any], str]], call: tuple[str, dict[str, Any], str],
                ask: str) -> dict[str, Any]:
    a: dict[str, Any] = {"llm.request.type": "chat", "gen_ai.request.model": MODEL, "gen_ai.system": "Anthropic",
                         "traceloop.association.properties.session_id": f"tl-{i}",
                         "gen_ai.usage.prompt_tokens": 1000, "gen_ai.usage.completion_tokens": 50,
                         "gen_ai.prompt.0.role": "system", "gen_ai.prompt.0.content": SYSTEM,
                         "gen_ai.prompt.1.role": "user", "gen_ai.prompt.1.content": ask}
    n = 2
    for k, (name, args, result) in enumerate(history):
        a[f"gen_ai.prompt.{n}.role"] = "assistant"
        a[f"gen_ai.prompt.{n}.content"] = json.dumps([{"type": "tool_use", "id": f"t{k}", "name": name,
                                                        "input": args}])
        a[f"gen_ai.prompt.{n + 1}.role"] = "user"
        a[f"gen_ai.prompt.{n + 1}.content"] = json.dumps([{"type": "tool_result", "tool_use_id": f"t{k}",
                                                            "content": result}])
        n += 2
    name, args, _ = call
    a.update({"gen_ai.completion.0.role": "assistant", "gen_ai.completion.0.finish_reason": "tool_use",
              "gen_ai.completion.0.tool_calls.0.id": f"t{len(history)}",
              "gen_ai.completion.0.tool_calls.0.name": name,
              "gen_ai.completion.0.tool_calls.0.arguments": json.dumps(args)})
    return a


def genai(i: int, history: list[tuple[str, dict[str, Any], str]], call: tuple[str, dict[str, Any], str],
          ask: str) -> dict[str, Any]:
    messages: list[dict[str, Any]] = [{"role": "user", "parts": [{"type": "text", "content": ask}]}]
    for k, (name, args, result) in enumerate(history):
        messages += [{"role": "assistant", "parts": [{"type": "tool_call", "id": f"t{k}", "name": name,
                                                      "arguments": args}]},
                     {"role": "tool", "parts": [{"type": "tool_call_response", "id": f"t{k}", "response": result}]}]
    name, args, _ = call
    return {"gen_ai.operation.name": "chat", "gen_ai.request.model": MODEL, "gen_ai.conversation.id": f"ge-{i}",
            "gen_ai.usage.input_tokens": 1000, "gen_ai.usage.output_tokens": 50,
            "gen_ai.system_instructions": json.dumps([{"type": "text", "content": SYSTEM}]),
            "gen_ai.input.messages": json.dumps(messages),
            "gen_ai.output.messages": json.dumps([{"role": "assistant", "finish_reason": "tool_call", "parts": [
                {"type": "tool_call", "id": f"t{len(history)}", "name": name, "arguments": args}]}])}


CONVENTIONS = {"openinference": openinference, "openllmetry": openllmetry, "genai": genai}


def record(convention: str, sessions: int, turns: int, seed: int) -> tuple[list[Any], int]:
    """The finished spans of ``sessions`` sessions, and the characters their attributes hold."""
    exporter = InMemorySpanExporter()
    # Flattened conventions need more than the SDK's default 128 attributes a span; their users raise it.
    provider = TracerProvider(span_limits=SpanLimits(max_span_attributes=100_000))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    llm_tracer = provider.get_tracer(f"{convention}.instrumentation")
    app = provider.get_tracer("app")
    make = CONVENTIONS[convention]
    for i in range(sessions):
        rng = random.Random(seed * 1_000_003 + i)
        ask = words(rng, 60)
        calls = conversation(rng, turns)
        root = app.start_span("agent", attributes={"session.id": f"{convention[:2]}-{i}"})
        ctx = set_span_in_context(root)
        for t, call in enumerate(calls):
            llm_tracer.start_span("chat", context=ctx, attributes=make(i, calls[:t], call, ask)).end()
            name, args, result = call
            tool_attrs = ({"openinference.span.kind": "TOOL", "tool.name": name, "input.value": json.dumps(args),
                           "output.value": result} if convention == "openinference" else
                          {"traceloop.span.kind": "tool", "traceloop.entity.name": name,
                           "traceloop.entity.input": json.dumps(args), "traceloop.entity.output": result}
                          if convention == "openllmetry" else
                          {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": name,
                           "gen_ai.tool.call.id": f"t{t}", "gen_ai.tool.call.arguments": json.dumps(args),
                           "gen_ai.tool.call.result": result})
            app.start_span(f"tool {name}", context=ctx, attributes=tool_attrs).end()
        root.end()
    spans = list(exporter.get_finished_spans())
    sent = sum(len(k) + len(str(v)) for s in spans for k, v in (s.attributes or {}).items())
    provider.shutdown()
    return spans, sent


def empty_size(tmp: str) -> int:
    """A compacted empty store: the fixed cost that is not any session's."""
    path = os.path.join(tmp, "empty.duckdb")
    Store(path).close()
    return compacted_size(path)


def measure(convention: str, sessions: int, turns: int, seed: int, tmp: str, empty: int) -> dict[str, float]:
    spans, sent = record(convention, sessions, turns, seed)
    path = os.path.join(tmp, f"{convention}-{turns}.duckdb")
    ingestor = Ingestor()
    with Store(path) as store:
        for k in range(0, len(spans), 512):  # as an exporter batches them
            store.write(ingestor.build([from_readable(s) for s in spans[k:k + 512]]))
        llm_calls = store.sql("SELECT count(*) FROM llm_calls")[0][0]
        assert llm_calls == sessions * turns, (convention, llm_calls)
        store.sql("CHECKPOINT")
    stored = sum(logical_bytes(path).values())
    return {"stored": stored / sessions, "file": (compacted_size(path) - empty) / sessions, "sent": sent / sessions}


def fmt(n: float) -> str:
    return f"{n / 1024:,.0f} KiB" if n < 10 * 1024 * 1024 else f"{n / 1024 / 1024:,.1f} MiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=10, help="sessions per convention and length")
    parser.add_argument("--turns", type=int, nargs=2, default=(10, 100), metavar=("SHORT", "LONG"))
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    short, long = args.turns
    print(machine_header("Storage of foreign sessions (benchmarks/bench_foreign_storage.py)"))
    print(f"{args.sessions} sessions per convention and length; bytes per session.\n")
    print(f"| convention | {short} turns: stored / file / sent | {long} turns: stored / file / sent "
          f"| ratio stored | ratio file | ratio sent |")
    print("|---|---|---|---:|---:|---:|")
    worst = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        empty = empty_size(tmp)
        for convention in CONVENTIONS:
            a = measure(convention, args.sessions, short, args.seed, tmp, empty)
            b = measure(convention, args.sessions, long, args.seed, tmp, empty)
            ratios = {k: b[k] / a[k] for k in a}
            worst = max(worst, ratios["stored"], ratios["file"])
            print(f"| {convention} | {fmt(a['stored'])} / {fmt(a['file'])} / {fmt(a['sent'])} "
                  f"| {fmt(b['stored'])} / {fmt(b['file'])} / {fmt(b['sent'])} "
                  f"| {ratios['stored']:.1f}× | {ratios['file']:.1f}× | {ratios['sent']:.1f}× |")
    target = long / short * 1.2
    verdict = "PASS" if worst <= target else "FAIL"
    print(f"\nworst ratio {worst:.1f}× against a target of at most {target:g}×: {verdict}")


if __name__ == "__main__":
    main()
