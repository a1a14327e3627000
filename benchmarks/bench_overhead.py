"""Overhead per LLM call: flightrec next to the SDK's own spans, OpenLLMetry and OpenInference.

Setup, once, from the repository root (``benchmarks/.venv*/`` is git-ignored)::

    python3 -m venv benchmarks/.venv-compare
    benchmarks/.venv-compare/bin/pip install -e . -r benchmarks/requirements-compare.txt

Run::

    benchmarks/.venv-compare/bin/python benchmarks/bench_overhead.py           # Markdown table
    benchmarks/.venv-compare/bin/python benchmarks/bench_overhead.py --json    # the same, as JSON
    benchmarks/.venv-compare/bin/python benchmarks/bench_overhead.py --calls 50 --rounds 200

What is measured
----------------
One non-streaming ``client.messages.create`` call, the same for every variant: model
``claude-sonnet-4-5``, ``max_tokens`` 1024, a system prompt of two text blocks, five tools with
JSON schemas, and a history of 20 messages (user and assistant in turn, with ``tool_use`` and
``tool_result`` blocks, a few hundred characters each) followed by the newest user message. The
client's ``httpx2.MockTransport`` answers at once with a fixed Messages API body (a text block, a
``tool_use`` block, ``stop_reason`` ``tool_use``, usage). So the time of a call is the SDK's own
work plus whatever the variant adds; there is no network to hide it.

Per LLM call, each against the bare client:

* **bare**: ``anthropic.Anthropic(..., open_telemetry=False)``.
* **flightrec**: ``Recorder(db=<temp file>, content="full").instrument(bare)``, its calls inside
  ``rec.session(...)``: the ``chat`` span with the full request and response bodies, the request
  hash and the decision attributes, plus the turn span that each call opens by itself. One session
  per block of calls, so its ``invoke_agent`` span costs 1/``--calls`` of one per call.
  ``rec.flush()`` ends the block inside the timed region, so the DuckDB writer's work is counted.
* **flightrec, hot path**: the same, with ``rec.flush()`` after the timer stops. This is what the
  agent's thread waits for, not the capture cost alone: the writer thread still runs during the
  block and competes for the GIL. For information; the row above is the one the targets use.
* **SDK spans**: the SDK's own spans, ``open_telemetry={"tracer_provider": p, "traces":
  {"content_mode": "content"}}`` (values ``metadata_only`` and ``content``, in
  ``anthropic/_types.py``).
* **OpenLLMetry**: ``opentelemetry-instrumentation-anthropic``, content on
  (``TRACELOOP_TRACE_CONTENT=true``). Its metrics go to the default no-op meter provider.
* **OpenInference**: ``openinference-instrumentation-anthropic``, with a ``TraceConfig`` that
  hides nothing.

The whole decision, flightrec against bare: ``s.turn()`` around one ``messages.create`` and the two
tool calls that its response asks for (this response has two ``tool_use`` blocks), each in
``s.tool_call(name, input)`` with ``set_result``; bare calls the same two tool functions directly.

Method
------
* Everything runs in one process, interleaved: each round runs one block of ``--calls`` calls of
  every variant, in an order rotated by one every round, so that drift and noise (CPU frequency,
  other processes) fall on all variants alike. ``--warmup`` rounds before them are not counted.
* A sample is one block's time divided by its calls. The table has each variant's median sample,
  and overhead = median(variant) - median(bare); for the decision, against the bare decision.
* The background work of every exporter is counted: a block ends, inside its timed region, with
  ``rec.flush()`` for flightrec and ``provider.force_flush()`` for the OpenTelemetry variants.
* ``gc.collect()`` runs before each block, untimed, so that a block pays for its own garbage and
  not for the previous variant's.
* OpenLLMetry and OpenInference patch the anthropic classes for the whole process (``wrapt``),
  which would put their wrappers into every other variant's calls. So each is instrumented just
  before its own block and uninstrumented just after, outside the timed region, and after each
  uninstrument the script checks that every attribute of the patched classes and modules is the
  original object again; it stops if one is not. This keeps all variants in one interleaved
  process: a subprocess per variant would meet other noise, at other times, than the bare client
  it is compared with.
* The SDK and third-party spans go to a ``BatchSpanProcessor`` whose exporter drops them (it only
  counts them, for the checks), while flightrec writes every span to its DuckDB file. The others'
  numbers leave out serialisation and export, and flightrec's include storage: the comparison
  favours them.
* The request is the same in every call, so flightrec's store keeps the history's messages once
  (content-addressed) after the first call. An agent's history grows by a message or two per call,
  which stores those few new ones; the hashing, which is per message per call, is the same either
  way.

After the run the script checks that every variant recorded what it should (span counts; every
flightrec request rebuilt from the store to its hash) and prints what one LLM call's span carried.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

# Before the instrumentations are imported: they read it per call, but make it explicit.
os.environ["TRACELOOP_TRACE_CONTENT"] = "true"

import anthropic
import httpx2
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import tracer

MODEL = "claude-sonnet-4-5"

# The SDK warns on every call with this model; the warning is not what is being measured.
warnings.filterwarnings("ignore", message="The model .* is deprecated", category=DeprecationWarning)

# -- the request and the canned responses ---------------------------------------------------------

_WORDS = (
    "order shipment customer refund warehouse parcel tracking invoice address delivery carrier "
    "delay policy return label payment status account replacement courier window receipt"
).split()


def _text(seed: int, chars: int) -> str:
    """Deterministic prose of about ``chars`` characters; ``seed`` varies it between messages."""
    words: list[str] = []
    i = seed
    while sum(len(w) + 1 for w in words) < chars:
        words.append(_WORDS[(i * 7 + len(words) * 3) % len(_WORDS)])
        i += 1
    return " ".join(words).capitalize() + "."


def _schema(properties: Mapping[str, Mapping[str, Any]], required: Sequence[str]) -> dict[str, Any]:
    return {"type": "object", "properties": dict(properties), "required": list(required)}


TOOLS: list[dict[str, Any]] = [
    {
        "name": "get_order",
        "description": "Look up an order by its id: items, totals, payment and fulfilment status.",
        "input_schema": _schema({"order_id": {"type": "string", "description": "The order id, e.g. A1."}},
                                ["order_id"]),
    },
    {
        "name": "get_shipping",
        "description": "The carrier, tracking number and delivery estimate of an order's shipment.",
        "input_schema": _schema({"order_id": {"type": "string"}}, ["order_id"]),
    },
    {
        "name": "search_kb",
        "description": "Search the help-centre articles; returns the best passages with their titles.",
        "input_schema": _schema({"query": {"type": "string"},
                                 "top_k": {"type": "integer", "minimum": 1, "maximum": 10, "default": 3}},
                                ["query"]),
    },
    {
        "name": "refund_order",
        "description": "Refund some or all items of an order to the original payment method.",
        "input_schema": _schema({
            "order_id": {"type": "string"},
            "items": {"type": "array", "items": {"type": "string"}},
            "reason": {"type": "string", "enum": ["damaged", "late", "wrong_item", "other"]},
            "idempotency_key": {"type": "string"},
        }, ["order_id", "reason", "idempotency_key"]),
    },
    {
        "name": "transfer_to_human",
        "description": "Hand the conversation to a human agent with a summary of the case so far.",
        "input_schema": _schema({"summary": {"type": "string"},
                                 "priority": {"type": "string", "enum": ["low", "normal", "high"]}},
                                ["summary"]),
    },
]

SYSTEM: list[dict[str, Any]] = [
    {"type": "text", "text": "You are the support agent of an online shop. " + _text(1, 500)},
    {"type": "text", "text": "Policies: " + _text(2, 400)},
]


def history(n: int) -> list[dict[str, Any]]:
    """``n`` earlier messages, user and assistant in turn; every third exchange calls a tool."""
    messages: list[dict[str, Any]] = []
    tool_id: str | None = None
    for i in range(n):
        if i % 2 == 0:  # user
            if tool_id is not None:
                content: Any = [{"type": "tool_result", "tool_use_id": tool_id,
                                 "content": json.dumps({"order_id": f"A{i}", "note": _text(i, 250)})}]
                tool_id = None
            else:
                content = _text(i, 300)
            messages.append({"role": "user", "content": content})
        else:  # assistant
            blocks: list[dict[str, Any]] = [{"type": "text", "text": _text(i, 250)}]
            if i % 6 == 1:
                tool_id = f"toolu_{i:04d}"
                blocks.append({"type": "tool_use", "id": tool_id, "name": "get_order",
                               "input": {"order_id": f"A{i}"}})
            messages.append({"role": "assistant", "content": blocks})
    return messages


def request(history_messages: int) -> dict[str, Any]:
    """The keyword arguments of every ``messages.create`` call."""
    messages = history(history_messages)
    last = messages[-1] if messages else None
    if last is not None and last["role"] == "user":  # keep the roles alternating
        messages.append({"role": "assistant", "content": [{"type": "text", "text": _text(99, 200)}]})
    messages.append({"role": "user", "content": "Where is my order A1, and when will it arrive? " + _text(100, 200)})
    return {"model": MODEL, "max_tokens": 1024, "system": SYSTEM, "tools": TOOLS, "messages": messages}


def response_body(tool_calls: Sequence[tuple[str, dict[str, Any]]]) -> bytes:
    """A Messages API response: a text block, then one ``tool_use`` block per tool call."""
    content: list[dict[str, Any]] = [{"type": "text", "text": "Let me check that order for you. " + _text(7, 150)}]
    for i, (name, arguments) in enumerate(tool_calls):
        content.append({"type": "tool_use", "id": f"toolu_01Bench{i:02d}", "name": name, "input": arguments})
    return json.dumps({
        "id": "msg_01BenchOverhead", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5-20250929",
        "content": content, "stop_reason": "tool_use", "stop_sequence": None,
        "usage": {"input_tokens": 2_310, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
                  "output_tokens": 96, "service_tier": "standard"},
    }).encode()


RESPONSE_HEADERS = {"content-type": "application/json", "request-id": "req_01BenchOverhead"}
ONE_TOOL = response_body([("get_order", {"order_id": "A1"})])
TWO_TOOLS = response_body([("get_order", {"order_id": "A1"}), ("get_shipping", {"order_id": "A1"})])


def bare_client(body: bytes, open_telemetry: Any = False) -> anthropic.Anthropic:
    """A client whose every request is answered at once with ``body``."""

    def handler(_: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, headers=RESPONSE_HEADERS, content=body)

    http = httpx2.Client(transport=httpx2.MockTransport(handler))
    return anthropic.Anthropic(api_key="x", http_client=http, open_telemetry=open_telemetry)


# The agent's tools in the decision benchmark: cheap, so that the numbers show the tracing.
def get_order(order_id: str) -> dict[str, Any]:
    return {"order_id": order_id, "status": "shipped", "items": [{"sku": "MUG-01", "qty": 2}], "total": "24.90"}


def get_shipping(order_id: str) -> dict[str, Any]:
    return {"order_id": order_id, "carrier": "DHL", "tracking": "JD0146000031", "eta": "2025-06-12"}


TOOL_FUNCTIONS: dict[str, Callable[..., Any]] = {"get_order": get_order, "get_shipping": get_shipping}

# -- OpenTelemetry plumbing ----------------------------------------------------------------------


class CountingExporter(SpanExporter):
    """Exports nowhere. Counts the spans and keeps the last one, for the checks after the run."""

    def __init__(self) -> None:
        self.count = 0
        self.last: ReadableSpan | None = None

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.count += len(spans)
        if spans:
            self.last = spans[-1]
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


def counting_provider() -> tuple[TracerProvider, CountingExporter]:
    exporter = CountingExporter()
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider, exporter


# Where OpenLLMetry and OpenInference put their wrappers (OpenInference also imports the Bedrock
# and Vertex modules and wraps their beta messages). Every attribute of these modules, and of the
# classes defined in them, must be the original object again after each uninstrument.
_PATCHABLE_MODULES = (
    "anthropic._base_client",
    "anthropic.resources.messages.messages",
    "anthropic.resources.beta.messages.messages",
    "anthropic.lib.bedrock._beta_messages",
    "anthropic.lib.vertex._beta_messages",
)


def patch_points() -> dict[str, object]:
    points: dict[str, object] = {}
    for name in _PATCHABLE_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        for attr, value in vars(module).items():
            points[f"{name}.{attr}"] = value
            if isinstance(value, type) and value.__module__ == name:
                for member, inner in vars(value).items():
                    points[f"{name}.{attr}.{member}"] = inner
    return points


def changed_points(before: Mapping[str, object]) -> list[str]:
    now = patch_points()
    return sorted(k for k in before.keys() | now.keys() if before.get(k) is not now.get(k))


# -- variants -----------------------------------------------------------------------------------


class Variant:
    """One way of making the call. ``block`` is timed; ``before`` and ``after`` are not."""

    key: str
    label: str
    baseline: str | None = "bare"  # the variant whose median its overhead is taken against

    def __init__(self) -> None:
        self.units = 0  # LLM calls (or decisions) made, warm-up included, for the checks

    def before(self) -> None:
        pass

    def block(self, n: int) -> None:
        raise NotImplementedError

    def after(self) -> None:
        pass

    def close(self) -> None:
        pass

    def check(self) -> dict[str, Any]:
        """What the variant recorded, after the run: raises if it is not what it should be."""
        return {}


class Bare(Variant):
    key, label, baseline = "bare", "bare client", None

    def __init__(self, kwargs: dict[str, Any]) -> None:
        super().__init__()
        self.client = bare_client(ONE_TOOL)
        self.kwargs = kwargs

    def block(self, n: int) -> None:
        create, kwargs = self.client.messages.create, self.kwargs
        for _ in range(n):
            create(**kwargs)
        self.units += n


class OtelVariant(Variant):
    """A variant whose spans go to a provider with a dropping exporter; the flush is timed."""

    spans_per_call = 1

    def __init__(self, kwargs: dict[str, Any]) -> None:
        super().__init__()
        self.provider, self.exporter = counting_provider()
        self.kwargs = kwargs
        self.client = bare_client(ONE_TOOL)

    def block(self, n: int) -> None:
        create, kwargs = self.client.messages.create, self.kwargs
        for _ in range(n):
            create(**kwargs)
        self.provider.force_flush()
        self.units += n

    def close(self) -> None:
        self.provider.shutdown()

    def check(self) -> dict[str, Any]:
        expected = self.units * self.spans_per_call
        if self.exporter.count != expected:
            raise SystemExit(f"{self.key}: {self.exporter.count} spans exported, expected {expected}")
        return span_summary(self.exporter.last, self.exporter.count / self.units)


class SdkSpans(OtelVariant):
    key, label = "sdk_spans", "anthropic SDK spans, content mode"

    def __init__(self, kwargs: dict[str, Any]) -> None:
        super().__init__(kwargs)
        self.client = bare_client(ONE_TOOL, open_telemetry={
            "tracer_provider": self.provider, "traces": {"content_mode": "content"},
        })


class Instrumented(OtelVariant):
    """A third-party instrumentation, on only around its own blocks."""

    def __init__(self, kwargs: dict[str, Any], originals: Mapping[str, object]) -> None:
        super().__init__(kwargs)
        self.originals = originals
        self.instrumentor = self.make_instrumentor()

    def make_instrumentor(self) -> Any:
        raise NotImplementedError

    def instrument(self) -> None:
        self.instrumentor.instrument(tracer_provider=self.provider)

    def before(self) -> None:
        self.instrument()
        if not changed_points(self.originals):
            raise SystemExit(f"{self.key}: instrument() patched nothing (a dependency conflict?)")

    def after(self) -> None:
        self.instrumentor.uninstrument()
        if left := changed_points(self.originals):
            raise SystemExit(f"{self.key}: uninstrument() left these patched: {', '.join(left)}")


class OpenLLMetry(Instrumented):
    key, label = "openllmetry", "OpenLLMetry (opentelemetry-instrumentation-anthropic)"

    def make_instrumentor(self) -> Any:
        from opentelemetry.instrumentation.anthropic import AnthropicInstrumentor

        return AnthropicInstrumentor()


class OpenInference(Instrumented):
    key, label = "openinference", "OpenInference (openinference-instrumentation-anthropic)"

    def make_instrumentor(self) -> Any:
        from openinference.instrumentation.anthropic import AnthropicInstrumentor

        return AnthropicInstrumentor()

    def instrument(self) -> None:
        from openinference.instrumentation import TraceConfig

        # Explicit, so that no OPENINFERENCE_HIDE_* variable in the environment turns capture off.
        config = TraceConfig(hide_inputs=False, hide_outputs=False, hide_input_messages=False,
                             hide_output_messages=False, hide_llm_invocation_parameters=False,
                             hide_llm_tools=False)
        self.instrumentor.instrument(tracer_provider=self.provider, config=config)


@dataclass
class FlightrecShared:
    """One recorder for all flightrec variants: one store file, one writer thread."""

    recorder: tracer.Recorder
    db_path: Path
    llm_calls: int = 0
    tool_calls: int = 0


class Flightrec(Variant):
    key, label = "flightrec", "flightrec, full capture (incl. DuckDB writer)"
    flush_timed = True

    def __init__(self, kwargs: dict[str, Any], shared: FlightrecShared) -> None:
        super().__init__()
        self.shared = shared
        self.kwargs = kwargs
        self.client = shared.recorder.instrument(bare_client(ONE_TOOL))

    def block(self, n: int) -> None:
        rec = self.shared.recorder
        create, kwargs = self.client.messages.create, self.kwargs
        with rec.session(agent="bench"):
            for _ in range(n):
                create(**kwargs)
        if self.flush_timed:
            rec.flush()
        self.units += n
        self.shared.llm_calls += n

    def after(self) -> None:
        self.shared.recorder.flush()  # a no-op when the block flushed already

    def check(self) -> dict[str, Any]:
        # One more call, untimed, with a second processor that keeps its spans.
        rec = self.shared.recorder
        memory = InMemorySpanExporter()
        rec.provider.add_span_processor(SimpleSpanProcessor(memory))
        with rec.session(agent="bench-check"):
            self.client.messages.create(**self.kwargs)
        self.shared.llm_calls += 1
        chat = [s for s in memory.get_finished_spans() if (s.attributes or {}).get("gen_ai.operation.name") == "chat"]
        spans = len(memory.get_finished_spans()) - 1  # without the check's own session span
        return span_summary(chat[-1] if chat else None, spans)


class FlightrecHot(Flightrec):
    key, label = "flightrec_hot", "flightrec, hot path only (flush untimed)"
    flush_timed = False

    def check(self) -> dict[str, Any]:
        return {}


class BareDecision(Variant):
    key, label, baseline = "decision_bare", "decision, bare: LLM call + 2 tool functions", None

    def __init__(self, kwargs: dict[str, Any]) -> None:
        super().__init__()
        self.client = bare_client(TWO_TOOLS)
        self.kwargs = kwargs

    def block(self, n: int) -> None:
        create, kwargs = self.client.messages.create, self.kwargs
        for _ in range(n):
            message = create(**kwargs)
            for b in message.content:
                if b.type == "tool_use":
                    TOOL_FUNCTIONS[b.name](**b.input)
        self.units += n


class FlightrecDecision(Variant):
    key, label, baseline = "decision_flightrec", "decision, flightrec: turn + LLM call + 2 tool calls", "decision_bare"

    def __init__(self, kwargs: dict[str, Any], shared: FlightrecShared) -> None:
        super().__init__()
        self.shared = shared
        self.kwargs = kwargs
        self.client = shared.recorder.instrument(bare_client(TWO_TOOLS))

    def block(self, n: int) -> None:
        rec = self.shared.recorder
        create, kwargs = self.client.messages.create, self.kwargs
        with rec.session(agent="bench") as s:
            for _ in range(n):
                with s.turn():
                    message = create(**kwargs)
                    for b in message.content:
                        if b.type == "tool_use":
                            with s.tool_call(b.name, b.input) as call:
                                call.set_result(TOOL_FUNCTIONS[b.name](**b.input))
        rec.flush()
        self.units += n
        self.shared.llm_calls += n
        self.shared.tool_calls += 2 * n


def span_summary(span: ReadableSpan | None, spans_per_call: float) -> dict[str, Any]:
    """How much one LLM call's span carried."""
    if span is None:
        raise SystemExit("no LLM span was recorded")
    attributes = dict(span.attributes or {})
    return {
        "spans_per_call": round(spans_per_call, 2),
        "llm_span": span.name,
        "llm_span_attributes": len(attributes),
        "llm_span_attribute_chars": sum(len(k) + len(str(v)) for k, v in attributes.items()),
    }


def check_store(shared: FlightrecShared) -> dict[str, Any]:
    """After shutdown: every call is in the store, and every request rebuilds to its hash."""
    stats = shared.recorder.stats
    if stats.dropped or stats.capture_errors:
        raise SystemExit(f"flightrec dropped {stats.dropped} spans ({dict(stats.drop_reasons)}) "
                         f"and had {stats.capture_errors} capture errors")
    with tracer.Store(shared.db_path, read_only=True) as store:
        sessions = store.list_sessions(limit=1_000_000)
        llm_calls = sum(s.llm_calls for s in sessions)
        tool_calls = sum(s.tool_calls for s in sessions)
        verified = store.verify_requests()
    if llm_calls != shared.llm_calls or tool_calls != shared.tool_calls:
        raise SystemExit(f"flightrec stored {llm_calls} LLM calls and {tool_calls} tool calls, "
                         f"expected {shared.llm_calls} and {shared.tool_calls}")
    if verified.exact != verified.total:
        raise SystemExit(f"flightrec: {verified.total - verified.exact} stored requests do not match their hash")
    return {"spans_written": stats.written, "llm_calls": llm_calls, "tool_calls": tool_calls,
            "requests_rebuilt_exactly": verified.exact}


# -- running ------------------------------------------------------------------------------------


@dataclass
class Samples:
    variant: Variant
    per_unit_ns: list[float] = field(default_factory=list)


def run(variants: list[Variant], calls: int, rounds: int, warmup: int, progress: bool) -> dict[str, Samples]:
    samples = {v.key: Samples(v) for v in variants}
    started = time.monotonic()
    for r in range(warmup + rounds):
        shift = r % len(variants)
        for v in variants[shift:] + variants[:shift]:
            v.before()
            gc.collect()
            t0 = time.perf_counter_ns()
            v.block(calls)
            elapsed = time.perf_counter_ns() - t0
            v.after()
            if r >= warmup:
                samples[v.key].per_unit_ns.append(elapsed / calls)
        if progress and (r + 1) % 10 == 0:
            print(f"  round {r + 1}/{warmup + rounds}, {time.monotonic() - started:.0f} s", file=sys.stderr)
    return samples


def package_version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def source_revision() -> str | None:
    """The commit of the flightrec tree that ran, and whether it had uncommitted changes."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "tracer"], cwd=root, capture_output=True,
                               text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return f"{head}{' + uncommitted tracer changes' if dirty else ''}"


def summarise(samples: dict[str, Samples], args: argparse.Namespace) -> dict[str, Any]:
    medians = {k: statistics.median(s.per_unit_ns) / 1000 for k, s in samples.items()}
    rows: list[dict[str, Any]] = []
    for key, s in samples.items():
        v = s.variant
        us = [x / 1000 for x in s.per_unit_ns]
        q1, _, q3 = statistics.quantiles(us, n=4)
        row: dict[str, Any] = {"key": key, "label": v.label, "median_us": medians[key], "p25_us": q1, "p75_us": q3,
                               "samples": len(us), "overhead_us": None, "overhead_paired_us": None}
        if v.baseline is not None and v.baseline in samples:
            base = samples[v.baseline].per_unit_ns
            row["overhead_us"] = medians[key] - medians[v.baseline]
            # The same, from each round's own pair of blocks: a check on the unpaired number.
            row["overhead_paired_us"] = statistics.median(a - b for a, b in zip(s.per_unit_ns, base)) / 1000
        rows.append(row)
    by_key = {r["key"]: r for r in rows}
    for row in rows:
        for ref, name in (("sdk_spans", "vs_sdk_spans"), ("openllmetry", "vs_openllmetry")):
            ref_overhead = by_key.get(ref, {}).get("overhead_us")
            ok = row["overhead_us"] is not None and ref_overhead and not row["key"].startswith("decision")
            row[name] = row["overhead_us"] / ref_overhead if ok else None
    targets: dict[str, Any] = {}
    fr = by_key.get("flightrec", {}).get("overhead_us")
    if fr is not None and "sdk_spans" in by_key:
        targets["flightrec_le_sdk_spans"] = fr <= by_key["sdk_spans"]["overhead_us"]
    if fr is not None and "openllmetry" in by_key:
        targets["flightrec_le_half_openllmetry"] = fr <= by_key["openllmetry"]["overhead_us"] / 2
    return {
        "parameters": {"calls_per_block": args.calls, "rounds": args.rounds, "warmup_rounds": args.warmup,
                       "history_messages": args.history},
        "environment": {
            "flightrec_source": source_revision(),
            "python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
            **{p: package_version(p) for p in (
                "flightrec", "anthropic", "httpx2", "opentelemetry-sdk", "duckdb", "wrapt",
                "opentelemetry-instrumentation-anthropic", "openinference-instrumentation-anthropic")},
        },
        "results": rows,
        "targets": targets,
    }


def _fmt(x: float | None, suffix: str = "") -> str:
    return "—" if x is None else f"{x:,.1f}{suffix}"


def _ratio(x: float | None) -> str:
    return "—" if x is None else f"{x:.2f}×"


def markdown(summary: dict[str, Any], checks: dict[str, Any]) -> str:
    p, env = summary["parameters"], summary["environment"]
    lines = [
        "| Variant | Median µs/call | Overhead µs | Overhead vs SDK spans | Overhead vs OpenLLMetry |",
        "|---|---:|---:|---:|---:|",
    ]
    decision_header = False
    for r in summary["results"]:
        if r["key"].startswith("decision") and not decision_header:
            lines.append("| *Whole decision (µs per decision)* | | | | |")
            decision_header = True
        lines.append(f"| {r['label']} | {_fmt(r['median_us'])} | {_fmt(r['overhead_us'])} | "
                     f"{_ratio(r['vs_sdk_spans'])} | {_ratio(r['vs_openllmetry'])} |")
    out = "\n".join(lines)
    out += (f"\n\n{p['calls_per_block']} calls per block × {p['rounds']} rounds (after {p['warmup_rounds']} "
            f"warm-up rounds), variants interleaved; medians of per-call time per block. "
            f"Python {env['python']}, {env['platform']}, {env['cpus']} CPUs; anthropic {env['anthropic']}, "
            f"opentelemetry-sdk {env['opentelemetry-sdk']}, duckdb {env['duckdb']}, "
            f"opentelemetry-instrumentation-anthropic {env['opentelemetry-instrumentation-anthropic']}, "
            f"openinference-instrumentation-anthropic {env['openinference-instrumentation-anthropic']}.\n")
    results = {r["key"]: r for r in summary["results"]}
    t = summary["targets"]
    if "flightrec_le_sdk_spans" in t:
        out += (f"\n- flightrec's overhead no more than the SDK spans': "
                f"{'met' if t['flightrec_le_sdk_spans'] else 'NOT met'} "
                f"({_fmt(results['flightrec']['overhead_us'])} vs {_fmt(results['sdk_spans']['overhead_us'])} µs)")
    if "flightrec_le_half_openllmetry" in t:
        out += (f"\n- flightrec's overhead at most half of OpenLLMetry's: "
                f"{'met' if t['flightrec_le_half_openllmetry'] else 'NOT met'} "
                f"({_fmt(results['flightrec']['overhead_us'])} vs ½ × "
                f"{_fmt(results['openllmetry']['overhead_us'])} µs)")
    recorded = [(k, c) for k, c in checks.items() if "llm_span" in c]
    if recorded:
        out += "\n\nWhat one LLM call recorded:\n\n| Variant | Spans per call | LLM span | Attributes | Attribute chars |"
        out += "\n|---|---:|---|---:|---:|"
        for k, c in recorded:
            out += (f"\n| {results[k]['label']} | {c['spans_per_call']:g} | `{c['llm_span']}` | "
                    f"{c['llm_span_attributes']} | {c['llm_span_attribute_chars']:,} |")
    if "flightrec_store" in checks:
        s = checks["flightrec_store"]
        out += (f"\n\nflightrec's store after the run: {s['llm_calls']} LLM calls and {s['tool_calls']} tool calls, "
                f"{s['spans_written']} spans, none dropped; {s['requests_rebuilt_exactly']} requests rebuilt "
                f"from the store to their recorded hash.")
    return out + "\n"


ALL_VARIANTS = ("bare", "flightrec", "flightrec_hot", "sdk_spans", "openllmetry", "openinference",
                "decision_bare", "decision_flightrec")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=40, help="calls per block (default 40)")
    parser.add_argument("--rounds", type=int, default=60, help="measured rounds of blocks (default 60)")
    parser.add_argument("--warmup", type=int, default=3, help="rounds run first and not counted (default 3)")
    parser.add_argument("--history", type=int, default=20, help="earlier messages in each request (default 20)")
    parser.add_argument("--variants", default=",".join(ALL_VARIANTS),
                        help=f"comma-separated subset of: {', '.join(ALL_VARIANTS)}")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the Markdown table")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    args = parser.parse_args(argv)
    if args.calls < 1 or args.rounds < 2 or args.warmup < 0:
        parser.error("--calls must be at least 1, --rounds at least 2, --warmup at least 0")
    chosen = [k.strip() for k in args.variants.split(",") if k.strip()]
    if unknown := set(chosen) - set(ALL_VARIANTS):
        parser.error(f"unknown variants: {', '.join(sorted(unknown))}")
    wanted = [k for k in ALL_VARIANTS if k in chosen or k == "bare"]
    if "decision_flightrec" in wanted and "decision_bare" not in wanted:
        wanted.insert(wanted.index("decision_flightrec"), "decision_bare")

    kwargs = request(args.history)
    originals = patch_points()  # before anything is instrumented
    with tempfile.TemporaryDirectory(prefix="flightrec-bench-") as tmp:
        db = Path(tmp) / "bench.duckdb"
        shared = FlightrecShared(tracer.Recorder(db=db, content="full"), db)
        factories: dict[str, Callable[[], Variant]] = {
            "bare": lambda: Bare(kwargs),
            "flightrec": lambda: Flightrec(kwargs, shared),
            "flightrec_hot": lambda: FlightrecHot(kwargs, shared),
            "sdk_spans": lambda: SdkSpans(kwargs),
            "openllmetry": lambda: OpenLLMetry(kwargs, originals),
            "openinference": lambda: OpenInference(kwargs, originals),
            "decision_bare": lambda: BareDecision(kwargs),
            "decision_flightrec": lambda: FlightrecDecision(kwargs, shared),
        }
        variants = [factories[k]() for k in wanted]
        try:
            if not args.quiet:
                print(f"{len(variants)} variants × {args.calls} calls × {args.warmup}+{args.rounds} rounds",
                      file=sys.stderr)
            samples = run(variants, args.calls, args.rounds, args.warmup, progress=not args.quiet)
            checks = {v.key: c for v in variants if (c := v.check())}
        finally:
            for v in variants:
                v.close()
            shared.recorder.shutdown()  # writes what is left and closes the store
        if shared.llm_calls:
            checks["flightrec_store"] = check_store(shared)

    summary = summarise(samples, args)
    summary["checks"] = checks
    if args.json:
        json.dump(summary, sys.stdout, indent=2, ensure_ascii=False)
        print()
    else:
        print(markdown(summary, checks), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
