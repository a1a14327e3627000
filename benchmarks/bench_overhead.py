"""Overhead per LLM call: flightrec next to the SDK's own spans, OpenLLMetry and OpenInference.

Setup, once, from the repository root (``benchmarks/.venv*/`` is git-ignored)::

    python3 -m venv benchmarks/.venv-compare
    benchmarks/.venv-compare/bin/pip install -e . -r benchmarks/requirements-compare.txt
    benchmarks/.venv-compare/bin/pip install opentelemetry-exporter-otlp-proto-http   # for --otlp

Run::

    benchmarks/.venv-compare/bin/python benchmarks/bench_overhead.py           # Markdown table
    benchmarks/.venv-compare/bin/python benchmarks/bench_overhead.py --json    # the same, as JSON
    benchmarks/.venv-compare/bin/python benchmarks/bench_overhead.py --otlp    # the others export OTLP/HTTP
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
  That flush also forces one DuckDB transaction per block (a fixed cost of milliseconds, shared
  by only ``--calls`` calls), which an agent that does not flush never pays: an upper bound.
* **flightrec, hot path**: the same, with ``rec.flush()`` after the timer stops. This is what the
  agent's thread waits for, not the capture cost alone: the writer thread still runs during the
  block and competes for the GIL. For information.
* **flightrec, capture only (writer paused)**: the same calls, through a fresh ``Recorder`` per
  block whose store is a file in a directory that does not exist. The writer cannot open it, so
  the spans wait in the queue and the writer thread sleeps (it retries once a second) while the
  block runs. The recorder is made before the block and shut down after it, untimed; its spans are
  then dropped, as intended, and checked to be dropped for that reason only (none written, none
  lost to a full queue). This is the cost on the agent's thread of capture, the request hash and
  the decision attributes, with no storage: the figure comparable to the other variants, whose
  exporters are no-ops (without ``--otlp``).
* **flightrec, steady state (incl. writer)**: the writer's cost amortised as in a long-running
  agent, measured in a phase of its own after the interleaved rounds (see Method): one recorder,
  one session, ``--calls`` × ``--rounds`` calls, and a single ``rec.flush()`` at the very end.
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
  The exceptions are the hot-path row (flush untimed) and the capture-only row (no writer), which
  are about the agent's thread alone, and the steady-state row, which has a method of its own.
* flightrec's numbers depend on ``--calls``. A DuckDB transaction costs milliseconds however
  small it is; the writer's transactions take whatever is queued, so the first of a block is
  small; and the flush waits for the last one. Bigger blocks share these fixed costs among more
  calls, and both flightrec rows fall as ``--calls`` grows. The default, 40, is a long session.
* ``gc.collect()`` runs before each block, untimed, so that a block pays for its own garbage and
  not for the previous variant's.
* OpenLLMetry and OpenInference patch the anthropic classes for the whole process (``wrapt``),
  which would put their wrappers into every other variant's calls. So each is instrumented just
  before its own block and uninstrumented just after, outside the timed region, and after each
  uninstrument the script checks that every attribute of the patched classes and modules is the
  original object again; it stops if one is not. This keeps all variants in one interleaved
  process: a subprocess per variant would meet other noise, at other times, than the bare client
  it is compared with.
* By default the SDK and third-party spans go to a ``BatchSpanProcessor`` whose exporter drops
  them (it only counts them, for the checks), so their numbers leave out serialisation and export.
  With ``--otlp`` that processor's exporter is the real OTLP/HTTP protobuf exporter
  (``opentelemetry-exporter-otlp-proto-http``, no compression), sending to a sink on 127.0.0.1
  that the script starts in a separate process (a ``ThreadingHTTPServer`` that reads each body,
  counts its spans and answers 200 with an empty ``ExportTraceServiceResponse``); its CPU is not
  this process's. The flush at the end of each block then encodes and posts the block's spans, so
  the rows show what the others cost when they really export. After the run the script checks
  that every span each exporter was given arrived at the sink.
* The steady-state phase runs after the interleaved rounds, because a long-lived recorder's
  writer would otherwise run during the other variants' blocks. It is ``--calls`` × ``--rounds``
  calls in chunks of ``--steady-chunk`` (500): a chunk of bare calls, then a chunk of flightrec
  calls, in turn, each chunk timed and preceded by ``gc.collect()``. The flightrec calls all run
  in one session of one recorder with its own store, after an untimed warm-up session that opens
  the store and stores the history's content once. Nothing is flushed between chunks; the last
  flightrec chunk's time includes closing the session and the single ``rec.flush()``. The writer's
  work on a chunk's last batch (which waits up to 250 ms for more spans, then commits) would run
  during the next bare chunk and be counted against bare; so after each chunk but the last the
  script waits, untimed, until the writer has written every span so far, and adds the CPU time
  of the process's other threads during that wait (the writer's and DuckDB's, ``process_time``
  minus this thread's ``thread_time``) to flightrec's time. That counts the tail as all CPU,
  even the part DuckDB would do on another core in parallel with the agent: it errs against
  flightrec. Overhead per call = (flightrec chunks + tails - bare chunks) / calls; the paired
  figure is the median of the per-chunk differences. The table shows the phase's mean per call.
* The request is the same in every call, so flightrec's store keeps the history's messages once
  (content-addressed) after the first call. An agent's history grows by a message or two per call,
  which stores those few new ones; the hashing, which is per message per call, is the same either
  way.

After the run the script checks that every variant recorded what it should (span counts; every
flightrec request rebuilt from the store to its hash) and prints what one LLM call's span carried.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import json
import logging
import multiprocessing
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.metadata import PackageNotFoundError, version
from multiprocessing.connection import Connection
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
    "order", "shipment", "customer", "refund", "warehouse", "parcel", "tracking", "invoice", "address",
    "delivery", "carrier", "delay", "policy", "return", "label", "payment", "status", "account",
    "replacement", "courier", "window", "receipt",
)


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
            if i % 6 == 3:
                tool_id = f"toolu_{i:04d}"
                blocks.append({"type": "tool_use", "id": tool_id, "name": "get_order",
                               "input": {"order_id": f"A{i}"}})
            messages.append({"role": "assistant", "content": blocks})
    return messages


def request(history_messages: int) -> dict[str, Any]:
    """The keyword arguments of every ``messages.create`` call."""
    messages = history(history_messages)
    if messages and messages[-1]["role"] == "user":  # keep the roles alternating
        messages.append({"role": "assistant", "content": [{"type": "text", "text": _text(99, 200)}]})
    question: list[dict[str, Any]] = [
        {"type": "text", "text": "Where is my order A1, and when will it arrive? " + _text(100, 200)}
    ]
    # A tool_use in the last assistant message needs its result before anything else (--history 4).
    pending = [b["id"] for b in (messages[-1]["content"] if messages else []) if b.get("type") == "tool_use"]
    results = [{"type": "tool_result", "tool_use_id": i, "content": "done"} for i in pending]
    messages.append({"role": "user", "content": [*results, *question] if results else question[0]["text"]})
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
    """A client whose every request is answered at once with ``body``.

    Deliberately not ``tracer.testing.FakeModel``: parsing each request and building its answer
    costs it 0.15-0.45 ms a call here, which every variant would count as the SDK's own time.
    """

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
    """Counts the spans and keeps the last one, for the checks after the run, then hands them to
    ``inner`` (the OTLP/HTTP exporter, with ``--otlp``) or drops them."""

    def __init__(self, inner: SpanExporter | None = None) -> None:
        self.inner = inner
        self.count = 0
        self.failed = 0  # spans that ``inner`` did not export
        self.last: ReadableSpan | None = None

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.count += len(spans)
        if spans:
            self.last = spans[-1]
        if self.inner is None:
            return SpanExportResult.SUCCESS
        result = self.inner.export(spans)
        if result is not SpanExportResult.SUCCESS:
            self.failed += len(spans)
        return result

    def shutdown(self) -> None:
        if self.inner is not None:
            self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


def otlp_exporter(endpoint: str) -> SpanExporter:
    """The real OTLP/HTTP protobuf exporter, uncompressed, to ``endpoint`` on the loopback."""
    try:
        import requests
        from opentelemetry.exporter.otlp.proto.http import Compression
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError as exc:
        raise SystemExit(f"--otlp needs opentelemetry-exporter-otlp-proto-http ({exc})") from None
    session = requests.Session()
    session.trust_env = False  # no proxy from the environment: straight to 127.0.0.1
    return OTLPSpanExporter(endpoint=endpoint, timeout=10, compression=Compression.NoCompression, session=session)


def counting_provider(otlp_endpoint: str | None = None) -> tuple[TracerProvider, CountingExporter]:
    exporter = CountingExporter(otlp_exporter(otlp_endpoint) if otlp_endpoint else None)
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider, exporter


# -- the OTLP sink (--otlp): a loopback collector in a process of its own -------------------------

_OTLP_PATH = "/v1/traces"
_OTLP_MAX_BODY = 64 * 1024 * 1024
_OTLP_SINK_LIFETIME_S = 6 * 3600.0  # the sink stops by itself after this, whatever happens here


class _OtlpServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _OtlpHandler)
        self.spans = 0
        self.lock = threading.Lock()


class _OtlpHandler(BaseHTTPRequestHandler):
    """Reads an ``ExportTraceServiceRequest``, counts its spans, answers with an empty response."""

    protocol_version = "HTTP/1.1"  # keep-alive, as a collector would
    server: _OtlpServer

    def do_POST(self) -> None:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
            ExportTraceServiceResponse,
        )

        length = int(self.headers.get("content-length") or -1)
        if self.path != _OTLP_PATH or self.headers.get("content-encoding", "identity") != "identity":
            self._answer(404 if self.path != _OTLP_PATH else 415, b"", "text/plain")
            return
        if not 0 <= length <= _OTLP_MAX_BODY:
            self.close_connection = True
            self._answer(413, b"", "text/plain")
            return
        request = ExportTraceServiceRequest.FromString(self.rfile.read(length))
        spans = sum(len(scope.spans) for resource in request.resource_spans for scope in resource.scope_spans)
        with self.server.lock:
            self.server.spans += spans
        self._answer(200, ExportTraceServiceResponse().SerializeToString(), "application/x-protobuf")

    def _answer(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
        pass


def serve_otlp(conn: Connection, lifetime_s: float) -> None:
    """The sink process: serves on 127.0.0.1 in a background thread; answers ``count`` and ``stop``
    on ``conn``; stops when told, when the parent goes away, or after ``lifetime_s``."""
    server = _OtlpServer()
    thread = threading.Thread(target=server.serve_forever, name="otlp-sink", daemon=True)
    thread.start()
    try:
        conn.send(server.server_address[1])
        deadline = time.monotonic() + lifetime_s
        while time.monotonic() < deadline:
            if not conn.poll(1.0):
                continue
            command = conn.recv()
            if command == "count":
                with server.lock:
                    conn.send(server.spans)
            elif command == "stop":
                break
    except (EOFError, OSError):
        pass  # the parent is gone
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


class OtlpSink:
    """Starts ``serve_otlp`` in a new process (spawned, so that it shares nothing with this one)."""

    def __init__(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._process = ctx.Process(target=serve_otlp, args=(child, _OTLP_SINK_LIFETIME_S), name="otlp-sink",
                                    daemon=True)
        self._process.start()
        child.close()
        if not self._conn.poll(60):
            self.close()
            raise SystemExit("the OTLP sink did not start within 60 s")
        self.endpoint = f"http://127.0.0.1:{self._conn.recv()}{_OTLP_PATH}"

    def spans_received(self) -> int:
        self._conn.send("count")
        if not self._conn.poll(30):
            raise SystemExit("the OTLP sink did not answer")
        count: int = self._conn.recv()
        return count

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._conn.send("stop")
        self._process.join(10)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(5)
        self._conn.close()


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
    """A variant whose spans go to a provider with a dropping exporter, or with ``otlp_endpoint``
    the OTLP/HTTP one; the flush is timed."""

    spans_per_call = 1

    def __init__(self, kwargs: dict[str, Any], otlp_endpoint: str | None = None) -> None:
        super().__init__()
        self.provider, self.exporter = counting_provider(otlp_endpoint)
        self.kwargs = kwargs
        self.client = bare_client(ONE_TOOL)
        if otlp_endpoint:
            self.label = f"{self.label}, OTLP/HTTP export"

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
        if self.exporter.failed:
            raise SystemExit(f"{self.key}: the OTLP exporter failed to send {self.exporter.failed} spans")
        return span_summary(self.exporter.last, self.exporter.count / self.units)


class SdkSpans(OtelVariant):
    key, label = "sdk_spans", "anthropic SDK spans, content mode"

    def __init__(self, kwargs: dict[str, Any], otlp_endpoint: str | None = None) -> None:
        super().__init__(kwargs, otlp_endpoint)
        self.client = bare_client(ONE_TOOL, open_telemetry={
            "tracer_provider": self.provider, "traces": {"content_mode": "content"},
        })


class Instrumented(OtelVariant):
    """A third-party instrumentation, on only around its own blocks."""

    def __init__(self, kwargs: dict[str, Any], originals: Mapping[str, object],
                 otlp_endpoint: str | None = None) -> None:
        super().__init__(kwargs, otlp_endpoint)
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


class _DropMessages(logging.Filter):
    """Drops log records that mention ``text``: the paused recorders' expected warnings."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


class FlightrecCaptureOnly(Variant):
    """flightrec with its writer paused: a fresh recorder per block whose store cannot be opened.

    The store is a file in a directory that does not exist, so the writer thread fails to open it
    and sleeps (it retries once a second) while the spans wait in the queue. The recorder is made
    in ``before`` and shut down in ``after``, both untimed; its spans are dropped then, and checked
    to have been dropped for that reason only.
    """

    key, label = "flightrec_capture", "flightrec, capture only (writer paused)"

    def __init__(self, kwargs: dict[str, Any], db: Path, calls: int) -> None:
        super().__init__()
        if db.parent.exists():
            raise ValueError(f"{db.parent} exists: the paused recorder's store must not be openable")
        self.kwargs = kwargs
        self.db = db
        self.max_queue = max(50_000, 8 * calls)  # a block's spans always fit: none lost to a full queue
        self.recorder: tracer.Recorder | None = None
        self.client: anthropic.Anthropic | None = None
        self.blocks = 0
        self.last_block = 0
        self.dropped = 0
        self._quiet = _DropMessages(str(db))
        logging.getLogger("flightrec").addFilter(self._quiet)

    def before(self) -> None:
        rec = tracer.Recorder(db=self.db, content="full", max_queue=self.max_queue)
        # One span, then a flush: it returns false as soon as the writer has found the store
        # unavailable, so the block starts with the writer asleep.
        with rec.session(agent="bench-probe"):
            pass
        if rec.flush(timeout_s=10):
            raise SystemExit(f"{self.key}: the paused recorder wrote to {self.db}")
        self.recorder, self.client = rec, rec.instrument(bare_client(ONE_TOOL))

    def block(self, n: int) -> None:
        assert self.recorder is not None and self.client is not None
        create, kwargs = self.client.messages.create, self.kwargs
        with self.recorder.session(agent="bench"):
            for _ in range(n):
                create(**kwargs)
        self.units += n
        self.last_block = n

    def after(self) -> None:
        assert self.recorder is not None
        rec, self.recorder, self.client = self.recorder, None, None
        rec.shutdown()  # up to a second: the sleeping writer sees it at its next retry
        stats = rec.stats
        reasons = dict(stats.drop_reasons)
        # At least a chat span per call and the probe's span, all dropped because of the store.
        if (stats.written or stats.capture_errors or stats.dropped <= self.last_block
                or any(not why.startswith("store unavailable") for why in reasons)):
            raise SystemExit(f"{self.key}: expected every span dropped for the missing store, got "
                             f"{stats.written} written, {stats.capture_errors} capture errors, dropped {reasons}")
        self.blocks += 1
        self.dropped += stats.dropped

    def close(self) -> None:
        if self.recorder is not None:
            self.recorder.shutdown()
        logging.getLogger("flightrec").removeFilter(self._quiet)

    def check(self) -> dict[str, Any]:
        return {"blocks": self.blocks, "llm_calls": self.units, "spans_dropped": self.dropped}


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


@dataclass
class SteadyState:
    """The steady-state phase: per chunk its calls and times, in ns."""

    calls: list[int]
    bare_ns: list[int] = field(default_factory=list)
    flightrec_ns: list[int] = field(default_factory=list)  # the last chunk's includes the session's end and the flush
    tail_cpu_ns: list[int] = field(default_factory=list)  # the writer's work after each chunk (0 after the last)
    spans_per_call: int = 0


def wait_for_writer(rec: tracer.Recorder, spans: int, timeout_s: float = 60.0) -> int:
    """Waits until ``spans`` spans are written, without hurrying the writer; returns the CPU time
    that the process's other threads used meanwhile, in ns."""
    cpu0, own0 = time.process_time_ns(), time.thread_time_ns()
    deadline = time.monotonic() + timeout_s
    while rec.stats.written + rec.stats.dropped < spans:
        if time.monotonic() > deadline:
            raise SystemExit(f"steady state: the writer did not write {spans} spans within {timeout_s:.0f} s")
        time.sleep(0.002)
    return (time.process_time_ns() - cpu0) - (time.thread_time_ns() - own0)


def steady_state(bare: Bare, shared: FlightrecShared, kwargs: dict[str, Any], total: int, chunk: int,
                 warmup: int) -> SteadyState:
    """``total`` calls through one long-lived recorder and session, flushed once at the end, in
    chunks that alternate with as many bare calls (see the module's docstring)."""
    rec = shared.recorder
    create, bare_create = rec.instrument(bare_client(ONE_TOOL)).messages.create, bare.client.messages.create
    # Untimed: opens the store and stores the history's content; and shows how many spans a call
    # makes, and how many are still open (the last turn) while the session goes on.
    with rec.session(agent="bench-steady-warmup"):
        for _ in range(warmup):
            create(**kwargs)
        flushed = rec.flush()
        ended_in_session = rec.stats.written
    if not (flushed and rec.flush()):
        raise SystemExit("steady state: the warm-up was not written")
    shared.llm_calls += warmup
    spans_per_call, rest = divmod(rec.stats.written - 1, warmup)  # - 1: the session's own span
    still_open = spans_per_call * warmup - ended_in_session
    if rest or spans_per_call < 1 or still_open < 0:
        raise SystemExit(f"steady state: {rec.stats.written} spans for {warmup} calls and one session, "
                         f"{ended_in_session} of them before its end")
    result = SteadyState([min(chunk, total - i) for i in range(0, total, chunk)], spans_per_call=spans_per_call)
    written, done = rec.stats.written, 0
    with contextlib.ExitStack() as session:
        for i, n in enumerate(result.calls):
            last = i == len(result.calls) - 1
            gc.collect()
            t0 = time.perf_counter_ns()
            for _ in range(n):
                bare_create(**kwargs)
            result.bare_ns.append(time.perf_counter_ns() - t0)
            gc.collect()
            t0 = time.perf_counter_ns()
            if i == 0:
                session.enter_context(rec.session(agent="bench-steady"))
            for _ in range(n):
                create(**kwargs)
            if last:
                session.close()
                flushed = rec.flush()
            result.flightrec_ns.append(time.perf_counter_ns() - t0)
            done += n
            if last:
                if not flushed:
                    raise SystemExit("steady state: the final flush timed out")
                result.tail_cpu_ns.append(0)
            else:
                ended = written + spans_per_call * done - still_open
                result.tail_cpu_ns.append(wait_for_writer(rec, ended))
    shared.llm_calls += total
    return result


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


STEADY_LABEL = "flightrec, steady state (incl. writer)"
STEADY_BARE_LABEL = "bare client, steady-state phase"

# The flightrec rows held to the targets: overhead no more than the SDK spans', and at most half
# of OpenLLMetry's.
TARGET_ROWS = ("flightrec", "flightrec_capture", "flightrec_steady")


def steady_rows(steady: SteadyState) -> list[dict[str, Any]]:
    """The steady-state phase's two rows: phase means per call, and per-chunk samples."""
    total = sum(steady.calls)
    flightrec_ns = [f + t for f, t in zip(steady.flightrec_ns, steady.tail_cpu_ns, strict=True)]
    rows: list[dict[str, Any]] = []
    for key, label, times in (("steady_bare", STEADY_BARE_LABEL, steady.bare_ns),
                              ("flightrec_steady", STEADY_LABEL, flightrec_ns)):
        us = [t / n / 1000 for t, n in zip(times, steady.calls, strict=True)]
        quartiles = statistics.quantiles(us, n=4) if len(us) > 1 else [us[0]] * 3
        rows.append({"key": key, "label": label, "statistic": "mean over the phase",
                     "median_us": sum(times) / total / 1000, "p25_us": quartiles[0], "p75_us": quartiles[2],
                     "overhead_us": None, "overhead_paired_us": None, "samples_us": [round(x, 1) for x in us]})
    rows[1]["overhead_us"] = (sum(flightrec_ns) - sum(steady.bare_ns)) / total / 1000
    rows[1]["overhead_paired_us"] = statistics.median(
        (f - b) / n / 1000 for f, b, n in zip(flightrec_ns, steady.bare_ns, steady.calls, strict=True))
    rows[1]["phase"] = {
        "calls": total, "chunks": steady.calls, "spans_per_call": steady.spans_per_call,
        "bare_ms": sum(steady.bare_ns) / 1e6, "flightrec_ms": sum(steady.flightrec_ns) / 1e6,
        "final_chunk_incl_flush_ms": steady.flightrec_ns[-1] / 1e6,
        "writer_tail_cpu_ms": sum(steady.tail_cpu_ns) / 1e6,
    }
    return rows


def summarise(samples: dict[str, Samples], steady: SteadyState | None, args: argparse.Namespace,
              load: tuple[float, float]) -> dict[str, Any]:
    medians = {k: statistics.median(s.per_unit_ns) / 1000 for k, s in samples.items()}
    rows: list[dict[str, Any]] = []
    for key, s in samples.items():
        v = s.variant
        us = [x / 1000 for x in s.per_unit_ns]
        q1, _, q3 = statistics.quantiles(us, n=4)
        row: dict[str, Any] = {"key": key, "label": v.label, "median_us": medians[key], "p25_us": q1, "p75_us": q3,
                               "overhead_us": None, "overhead_paired_us": None,
                               "samples_us": [round(x, 1) for x in us]}
        if v.baseline is not None and v.baseline in samples:
            base = samples[v.baseline].per_unit_ns
            row["overhead_us"] = medians[key] - medians[v.baseline]
            # The same, from each round's own pair of blocks: a check on the unpaired number.
            pairs = zip(s.per_unit_ns, base, strict=True)
            row["overhead_paired_us"] = statistics.median(a - b for a, b in pairs) / 1000
        rows.append(row)
    if steady is not None:  # after the per-call rows, before the decision's
        at = next((i for i, r in enumerate(rows) if r["key"].startswith("decision")), len(rows))
        rows[at:at] = steady_rows(steady)
    by_key = {r["key"]: r for r in rows}
    for row in rows:
        for ref, name in (("sdk_spans", "vs_sdk_spans"), ("openllmetry", "vs_openllmetry")):
            ref_overhead = by_key.get(ref, {}).get("overhead_us")
            ok = row["overhead_us"] is not None and ref_overhead is not None and ref_overhead > 0
            row[name] = row["overhead_us"] / ref_overhead if ok and not row["key"].startswith("decision") else None
    targets: dict[str, Any] = {}
    for key in TARGET_ROWS:
        fr = by_key.get(key, {}).get("overhead_us")
        if fr is not None and "sdk_spans" in by_key:
            targets[f"{key}_le_sdk_spans"] = fr <= by_key["sdk_spans"]["overhead_us"]
        if fr is not None and "openllmetry" in by_key:
            targets[f"{key}_le_half_openllmetry"] = fr <= by_key["openllmetry"]["overhead_us"] / 2
    return {
        "parameters": {"calls_per_block": args.calls, "rounds": args.rounds, "warmup_rounds": args.warmup,
                       "history_messages": args.history, "otlp": args.otlp,
                       "steady_chunk": args.steady_chunk if steady is not None else None},
        "environment": {
            "date": time.strftime("%Y-%m-%d %H:%M %Z"),
            "command": " ".join(["python", Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
            "flightrec_source": source_revision(),
            "python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
            # Other processes' load skews flightrec most: only its variants keep a second thread busy.
            "load_average_before": round(load[0], 2),
            "load_average_after": round(load[1], 2),
            **{p: package_version(p) for p in (
                "flightrec", "anthropic", "httpx2", "opentelemetry-sdk", "duckdb", "wrapt",
                "opentelemetry-instrumentation-anthropic", "openinference-instrumentation-anthropic",
                "opentelemetry-exporter-otlp-proto-http")},
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
        mark = "†" if "statistic" in r else ""
        lines.append(f"| {r['label']}{mark} | {_fmt(r['median_us'])} | {_fmt(r['overhead_us'])} | "
                     f"{_ratio(r['vs_sdk_spans'])} | {_ratio(r['vs_openllmetry'])} |")
    out = "\n".join(lines)
    exporters = ("OpenTelemetry variants export OTLP/HTTP protobuf to a loopback sink in another process"
                 if p["otlp"] else "OpenTelemetry variants' exporter drops the spans")
    out += (f"\n\n{p['calls_per_block']} calls per block × {p['rounds']} rounds (after {p['warmup_rounds']} "
            f"warm-up rounds), variants interleaved; medians of per-call time per block; {exporters}. "
            f"`{env['command']}` on {env['date']}, flightrec {env['flightrec_source']}; "
            f"Python {env['python']}, {env['platform']}, {env['cpus']} CPUs "
            f"(load average {env['load_average_before']} before the run, {env['load_average_after']} after); "
            f"anthropic {env['anthropic']}, "
            f"opentelemetry-sdk {env['opentelemetry-sdk']}, duckdb {env['duckdb']}, "
            f"opentelemetry-instrumentation-anthropic {env['opentelemetry-instrumentation-anthropic']}, "
            f"openinference-instrumentation-anthropic {env['openinference-instrumentation-anthropic']}"
            + (f", opentelemetry-exporter-otlp-proto-http {env['opentelemetry-exporter-otlp-proto-http']}"
               if p["otlp"] else "") + ".\n")
    results = {r["key"]: r for r in summary["results"]}
    if "flightrec_steady" in results:
        phase = results["flightrec_steady"]["phase"]
        out += (f"\n† A separate phase after the rounds: {phase['calls']:,} calls through one recorder and one "
                f"session, in {len(phase['chunks'])} chunks of up to {p['steady_chunk']} alternating with as many "
                f"bare calls; mean per call. "
                f"flightrec's time includes the one final flush ({phase['final_chunk_incl_flush_ms']:,.1f} ms "
                f"for the last chunk with it) and {phase['writer_tail_cpu_ms']:,.1f} ms of the writer's CPU "
                f"after the other chunks; its overhead is against the phase's bare calls "
                f"(paired per chunk: {_fmt(results['flightrec_steady']['overhead_paired_us'])} µs).\n")
    t = summary["targets"]
    ref_sdk, ref_oll = results.get("sdk_spans", {}), results.get("openllmetry", {})
    for key in TARGET_ROWS:
        if key not in results:
            continue
        label, overhead = results[key]["label"], results[key]["overhead_us"]
        if f"{key}_le_sdk_spans" in t:
            out += (f"\n- {label}: overhead no more than the SDK spans': "
                    f"{'met' if t[f'{key}_le_sdk_spans'] else 'NOT met'} "
                    f"({_fmt(overhead)} vs {_fmt(ref_sdk['overhead_us'])} µs)")
        if f"{key}_le_half_openllmetry" in t:
            out += (f"\n- {label}: overhead at most half of OpenLLMetry's: "
                    f"{'met' if t[f'{key}_le_half_openllmetry'] else 'NOT met'} "
                    f"({_fmt(overhead)} vs ½ × {_fmt(ref_oll['overhead_us'])} µs)")
    recorded = [(k, c) for k, c in checks.items() if "llm_span" in c]
    if recorded:
        out += "\n\nWhat one LLM call recorded:\n\n"
        out += "| Variant | Spans per call | LLM span | Attributes | Attribute chars |\n|---|---:|---|---:|---:|"
        for k, c in recorded:
            out += (f"\n| {results[k]['label']} | {c['spans_per_call']:g} | `{c['llm_span']}` | "
                    f"{c['llm_span_attributes']} | {c['llm_span_attribute_chars']:,} |")
    for key, what in (("flightrec_store", "flightrec's store"), ("flightrec_steady_store", "The steady-state store")):
        if key in checks:
            s = checks[key]
            out += (f"\n\n{what} after the run: {s['llm_calls']} LLM calls and {s['tool_calls']} tool calls, "
                    f"{s['spans_written']} spans, none dropped; {s['requests_rebuilt_exactly']} requests rebuilt "
                    f"from the store to their recorded hash.")
    if "flightrec_capture" in checks:
        c = checks["flightrec_capture"]
        out += (f"\n\nCapture only: {c['llm_calls']} LLM calls in {c['blocks']} blocks, their {c['spans_dropped']:,} "
                f"spans dropped unwritten as intended (store unavailable; none for a full queue).")
    if "otlp_sink" in checks:
        c = checks["otlp_sink"]
        out += f"\n\nOTLP sink: received all {c['spans_received']:,} spans that the exporters were given."
    return out + "\n"


ALL_VARIANTS = ("bare", "flightrec", "flightrec_hot", "flightrec_capture", "flightrec_steady", "sdk_spans",
                "openllmetry", "openinference", "decision_bare", "decision_flightrec")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=40, help="calls per block (default 40)")
    parser.add_argument("--rounds", type=int, default=60, help="measured rounds of blocks (default 60)")
    parser.add_argument("--warmup", type=int, default=3, help="rounds run first and not counted (default 3)")
    parser.add_argument("--history", type=int, default=20, help="earlier messages in each request (default 20)")
    parser.add_argument("--variants", default=",".join(ALL_VARIANTS),
                        help=f"comma-separated subset of: {', '.join(ALL_VARIANTS)}")
    parser.add_argument("--steady-chunk", type=int, default=500,
                        help="calls per chunk of the steady-state phase (default 500)")
    parser.add_argument("--otlp", action="store_true",
                        help="the OpenTelemetry variants export OTLP/HTTP to a loopback sink in another process")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the Markdown table")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    args = parser.parse_args(argv)
    if args.calls < 1 or args.rounds < 2 or args.warmup < 0 or args.steady_chunk < 1:
        parser.error("--calls and --steady-chunk must be at least 1, --rounds at least 2, --warmup at least 0")
    chosen = [k.strip() for k in args.variants.split(",") if k.strip()]
    if unknown := set(chosen) - set(ALL_VARIANTS):
        parser.error(f"unknown variants: {', '.join(sorted(unknown))}")
    wanted = [k for k in ALL_VARIANTS if k in chosen or k == "bare"]
    if "decision_flightrec" in wanted and "decision_bare" not in wanted:
        wanted.insert(wanted.index("decision_flightrec"), "decision_bare")
    run_steady = "flightrec_steady" in wanted
    wanted = [k for k in wanted if k != "flightrec_steady"]  # a phase of its own, not a variant of the rounds

    load_before = os.getloadavg()[0]
    kwargs = request(args.history)
    originals = patch_points()  # before anything is instrumented
    sink = OtlpSink() if args.otlp else None
    endpoint = sink.endpoint if sink is not None else None
    steady: SteadyState | None = None
    try:
        with tempfile.TemporaryDirectory(prefix="flightrec-bench-") as tmp:
            db = Path(tmp) / "bench.duckdb"
            shared = FlightrecShared(tracer.Recorder(db=db, content="full"), db)
            factories: dict[str, Callable[[], Variant]] = {
                "bare": lambda: Bare(kwargs),
                "flightrec": lambda: Flightrec(kwargs, shared),
                "flightrec_hot": lambda: FlightrecHot(kwargs, shared),
                "flightrec_capture": lambda: FlightrecCaptureOnly(kwargs, Path(tmp) / "missing" / "bench.duckdb",
                                                                  args.calls),
                "sdk_spans": lambda: SdkSpans(kwargs, endpoint),
                "openllmetry": lambda: OpenLLMetry(kwargs, originals, endpoint),
                "openinference": lambda: OpenInference(kwargs, originals, endpoint),
                "decision_bare": lambda: BareDecision(kwargs),
                "decision_flightrec": lambda: FlightrecDecision(kwargs, shared),
            }
            variants = [factories[k]() for k in wanted]
            steady_db = Path(tmp) / "steady.duckdb"
            steady_shared: FlightrecShared | None = None
            try:
                if not args.quiet:
                    print(f"{len(variants)} variants × {args.calls} calls × {args.warmup}+{args.rounds} rounds",
                          file=sys.stderr)
                samples = run(variants, args.calls, args.rounds, args.warmup, progress=not args.quiet)
                if run_steady:
                    if not args.quiet:
                        print(f"steady-state phase: {args.calls * args.rounds} calls", file=sys.stderr)
                    # Made now, so that its writer thread is not around during the rounds.
                    steady_shared = FlightrecShared(tracer.Recorder(db=steady_db, content="full"), steady_db)
                    bare = next(v for v in variants if isinstance(v, Bare))
                    steady = steady_state(bare, steady_shared, kwargs, args.calls * args.rounds, args.steady_chunk,
                                          warmup=args.calls)
                checks = {v.key: c for v in variants if (c := v.check())}
            finally:
                for v in variants:
                    v.close()
                shared.recorder.shutdown()  # writes what is left and closes the store
                if steady_shared is not None:
                    steady_shared.recorder.shutdown()
            if shared.llm_calls:
                checks["flightrec_store"] = check_store(shared)
            if steady_shared is not None:
                checks["flightrec_steady_store"] = check_store(steady_shared)
        if sink is not None:
            given = sum(v.exporter.count for v in variants if isinstance(v, OtelVariant))
            received = sink.spans_received()
            if received != given:
                raise SystemExit(f"the OTLP sink received {received} spans, the exporters were given {given}")
            checks["otlp_sink"] = {"spans_received": received}
    finally:
        if sink is not None:
            sink.close()

    summary = summarise(samples, steady, args, (load_before, os.getloadavg()[0]))
    summary["checks"] = checks
    if args.json:
        json.dump(summary, sys.stdout, indent=2, ensure_ascii=False)
        print()
    else:
        print(markdown(summary, checks), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
