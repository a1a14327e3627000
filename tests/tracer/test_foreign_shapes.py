"""The shapes other instrumentation sends in practice, through a real `flightrec serve`: one
session per conversation, each tool in its turn, content in any OTLP form, finish reasons of every
convention, and sessions that nobody ends.

Each test writes the spans a producer writes (the conversation id on the root only, LLM and tool
spans from different instrumentation scopes, OTLP arrays and kvlists …) with explicit times, so
that the order they arrive in is the test's, not the clock's.
"""

from __future__ import annotations

import json

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import set_span_in_context

import tracer
from tests.tracer.test_collector import post
from tracer._collector import Collector
from tracer._foreign import ANTHROPIC_SCOPE, RECORDER_MARKER

T0 = 1_700_000_000_000_000_000
MS = 1_000_000


class Producer:
    """Spans with explicit times, from any number of instrumentation scopes of one process."""

    def __init__(self, resource: dict | None = None) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider(resource=Resource.create(resource or {}))
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))

    def span(self, scope: str, name: str, start_ms: int, end_ms: int, attrs: dict, parent=None):
        span = self.provider.get_tracer(scope).start_span(
            name, context=set_span_in_context(parent) if parent is not None else None, attributes=attrs,
            start_time=T0 + start_ms * MS)
        span.end(end_time=T0 + end_ms * MS)
        return span

    def open(self, scope: str, name: str, start_ms: int, attrs: dict):
        return self.provider.get_tracer(scope).start_span(name, attributes=attrs, start_time=T0 + start_ms * MS)

    def take(self) -> list:
        spans = list(self.exporter.get_finished_spans())
        self.exporter.clear()
        return spans


def send(collector: Collector, spans) -> None:
    status, body = post(collector.url, encode_spans(spans).SerializeToString())
    assert status == 200, body


_SESSIONS = "SELECT session_id, status, turns, llm_calls, tool_calls FROM sessions ORDER BY session_id"


def sessions(db: str | Collector) -> list[tuple]:
    """The sessions stored, read from the file, or through a collector that holds it."""
    if isinstance(db, Collector):
        return db.store.sql(_SESSIONS)
    with tracer.Store(db, read_only=True) as store:
        return store.sql(_SESSIONS)


def account(db: str, session_id: str) -> tracer.SessionAccount:
    with tracer.Store(db, read_only=True) as store:
        return store.session_account(session_id)


def tool_turns(acc: tracer.SessionAccount) -> dict[str, int]:
    return {t.tool_name: turn.index for turn in acc.turns for t in turn.tool_calls}


def genai_chat(call: str | None, finish: str, *, tools: list[str] = (), history: int = 0) -> dict:
    """A GenAI-conventions chat span's attributes: ``history`` earlier assistant turns, and the
    output asking for ``tools`` (call ids ``<call>-<tool>``)."""
    inputs = [{"role": "user", "parts": [{"type": "text", "content": "Book me a trip to Rome"}]}]
    for i in range(history):
        inputs += [{"role": "assistant", "parts": [{"type": "tool_call", "id": f"h{i}", "name": "x", "arguments": {}}]},
                   {"role": "tool", "parts": [{"type": "tool_call_response", "id": f"h{i}", "response": "ok"}]}]
    parts = [{"type": "tool_call", "id": f"{call}-{t}", "name": t, "arguments": {"city": "Rome"}} for t in tools]
    return {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "anthropic",
            "gen_ai.request.model": "claude-haiku-4-5", "gen_ai.usage.input_tokens": 100,
            "gen_ai.usage.output_tokens": 10, "gen_ai.response.finish_reasons": [finish],
            "gen_ai.input.messages": json.dumps(inputs),
            "gen_ai.output.messages": json.dumps([{"role": "assistant", "parts": parts or [
                {"type": "text", "content": "Done."}], "finish_reason": finish}])}


def genai_tool(name: str, call_id: str | None = None) -> dict:
    attrs = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": name, "gen_ai.tool.call.result": "ok"}
    return {**attrs, "gen_ai.tool.call.id": call_id} if call_id else attrs


# -- one session per conversation ------------------------------------------------------------------


def test_an_id_on_the_root_span_only_names_every_span_of_the_trace(tmp_path):
    db = str(tmp_path / "t.duckdb")
    p = Producer()
    root = p.open("app", "invoke_agent trips", 0, {"gen_ai.operation.name": "invoke_agent",
                                                   "gen_ai.agent.name": "trips", "gen_ai.conversation.id": "conv-1"})
    p.span("sdk", "chat", 1, 10, genai_chat("c1", "tool_call", tools=["find_flights"]), root)
    p.span("app", "execute_tool find_flights", 11, 20, genai_tool("find_flights", "c1-find_flights"), root)
    p.span("sdk", "chat", 21, 30, genai_chat("c2", "stop", history=1), root)
    root.end(end_time=T0 + 31 * MS)
    with Collector(db, port=0) as collector:
        send(collector, p.take())

    assert sessions(db) == [("conv-1", "ok", 2, 2, 1)]
    acc = account(db, "conv-1")
    assert acc.session.agent == "trips" and acc.session.cost_usd > 0


def test_spans_sent_before_the_trace_named_its_conversation_join_it_when_it_does(tmp_path):
    # The usual order: children end, and are exported, before their root, often in an earlier request.
    db = str(tmp_path / "t.duckdb")
    p = Producer()
    root = p.open("app", "invoke_agent trips", 0, {"gen_ai.operation.name": "invoke_agent",
                                                   "gen_ai.agent.name": "trips", "gen_ai.conversation.id": "conv-2"})
    p.span("sdk", "chat", 1, 10, genai_chat("c1", "tool_call", tools=["find_flights"]), root)
    p.span("app", "execute_tool find_flights", 11, 20, genai_tool("find_flights"), root)
    with Collector(db, port=0) as collector:
        send(collector, p.take())
        assert [s[0] for s in sessions(collector)] == [f"{root.get_span_context().trace_id:032x}"]  # not named yet
        p.span("sdk", "chat", 21, 30, genai_chat("c2", "stop", history=1), root)
        root.end(end_time=T0 + 31 * MS)
        send(collector, p.take())
        p.span("app", "late.audit", 40, 41, {}, root)  # a span of the trace that comes after its end
        send(collector, p.take())

    assert sessions(db) == [("conv-2", "ok", 2, 2, 1)]
    with tracer.Store(db, read_only=True) as store:
        assert store.sql("SELECT DISTINCT session_id FROM spans") == [("conv-2",)]
        assert store.sql("SELECT count(*) FROM message_chain WHERE session_id <> 'conv-2'") == [(0,)]
    assert tool_turns(account(db, "conv-2")) == {"find_flights": 1}


def test_openinference_without_using_session_is_one_session_not_two(tmp_path):
    # The app's tool spans carry session.id; the instrumented LLM calls do not.
    db = str(tmp_path / "t.duckdb")
    p = Producer()
    agent = p.open("app", "agent", 0, {"openinference.span.kind": "AGENT", "session.id": "oi-9"})
    llm = {"openinference.span.kind": "LLM", "llm.model_name": "claude-haiku-4-5", "llm.token_count.prompt": 100,
           "llm.token_count.completion": 10, "llm.input_messages.0.message.role": "user",
           "llm.input_messages.0.message.content": "Where is A-1?"}
    p.span("openinference.instrumentation.anthropic", "Messages", 1, 10, {
        **llm, "llm.output_messages.0.message.role": "assistant",
        "llm.output_messages.0.message.tool_calls.0.tool_call.function.name": "get_order",
        "llm.output_messages.0.message.tool_calls.0.tool_call.function.arguments": '{"id": "A-1"}'}, agent)
    p.span("app", "get_order", 11, 12, {"openinference.span.kind": "TOOL", "tool.name": "get_order",
                                        "session.id": "oi-9"}, agent)
    p.span("openinference.instrumentation.anthropic", "Messages", 13, 20, {
        **llm, "llm.input_messages.1.message.role": "assistant", "llm.input_messages.1.message.content": "…",
        "llm.output_messages.0.message.role": "assistant", "llm.output_messages.0.message.content": "Shipped."},
        agent)
    agent.end(end_time=T0 + 21 * MS)
    with Collector(db, port=0) as collector:
        send(collector, p.take())

    assert sessions(db) == [("oi-9", "ok", 2, 2, 1)]
    assert account(db, "oi-9").session.cost_usd > 0


def test_a_conversation_over_several_traces_is_one_session(tmp_path):
    db = str(tmp_path / "t.duckdb")
    p = Producer()
    for i in range(3):  # one trace per user message, as a web app makes them
        root = p.open("app", "POST /chat", i * 100, {"session.id": "web-5"})
        p.span("sdk", "chat", i * 100 + 1, i * 100 + 9, genai_chat(f"c{i}", "stop", history=i), root)
        root.end(end_time=T0 + (i * 100 + 10) * MS)
    with Collector(db, port=0) as collector:
        send(collector, p.take())
    assert sessions(db) == [("web-5", "ok", 3, 3, 0)]


def test_the_sdks_own_spans_in_a_recorded_process_add_nothing_to_its_session(tmp_path):
    # With native_spans=True the SDK's spans (its tool runner's too) sit in our session's trace: our
    # spans already hold what they say, so they must neither count twice nor rename the session.
    db = str(tmp_path / "t.duckdb")
    p = Producer({RECORDER_MARKER: "0.1.0"})
    root = p.open("flightrec", "invoke_agent trips", 0, {
        "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "trips", "gen_ai.conversation.id": "native",
        "flightrec.content.mode": "full"})
    runner = p.span(ANTHROPIC_SCOPE, "anthropic.messages.tool_runner", 1, 30,
                    {"gen_ai.operation.name": "invoke_agent"}, root)
    p.span(ANTHROPIC_SCOPE, "chat", 2, 10, genai_chat("c1", "tool_use", tools=["find_flights"]), runner)
    p.span(ANTHROPIC_SCOPE, "anthropic.custom_tool_use", 11, 12, genai_tool("find_flights", "c1-find_flights"),
           runner)
    p.span("flightrec", "execute_tool find_flights", 11, 12, {
        **genai_tool("find_flights", "c1-find_flights"), "gen_ai.conversation.id": "native",
        "flightrec.turn.index": 1}, root)
    root.end(end_time=T0 + 31 * MS)
    with Collector(db, port=0) as collector:
        send(collector, p.take())
    assert sessions(db) == [("native", "ok", 0, 0, 1)]
    with tracer.Store(db, read_only=True) as store:
        assert store.get_session("native").agent == "trips"
        assert store.get_session("native").content_mode == "full"


# -- tools in their turn ---------------------------------------------------------------------------


def test_tools_from_another_scope_land_in_the_turn_that_asked_for_them(tmp_path):
    # The SDK's scope emits the LLM spans, the app's tracer the tools; one request lists the scopes
    # one after the other, so every LLM call comes before every tool.
    db = str(tmp_path / "t.duckdb")
    p = Producer()
    root = p.open("app", "invoke_agent trips", 0, {"gen_ai.operation.name": "invoke_agent",
                                                   "gen_ai.conversation.id": "turns"})
    first = p.span("sdk", "chat", 1, 10, genai_chat("c1", "tool_calls", tools=["find_flights", "get_weather"]), root)
    p.span("app", "execute_tool find_flights", 11, 15, genai_tool("find_flights", "c1-find_flights"), root)
    p.span("app", "execute_tool get_weather", 12, 16, genai_tool("get_weather", "c1-get_weather"), root)
    p.span("sdk", "chat", 20, 30, genai_chat("c2", "tool_calls", tools=["book_hotel"], history=1), root)
    p.span("app", "execute_tool book_hotel", 31, 35, genai_tool("book_hotel"), root)  # no call id: by time
    p.span("sdk", "chat", 40, 50, genai_chat("c3", "tool_calls", tools=["pay"], history=2), root)
    p.span("app", "execute_tool pay", 51, 55, genai_tool("pay"), first)  # under the first call's span
    p.span("sdk", "chat", 60, 70, genai_chat("c4", "stop", history=3), root)
    root.end(end_time=T0 + 71 * MS)
    spans = p.take()
    by_scope = sorted(spans, key=lambda s: s.instrumentation_scope.name != "sdk")
    with Collector(db, port=0) as collector:
        send(collector, by_scope)

    acc = account(db, "turns")
    assert [t.index for t in acc.turns] == [1, 2, 3, 4]
    assert tool_turns(acc) == {"find_flights": 1, "get_weather": 1, "book_hotel": 2, "pay": 1}


def test_a_tool_sent_in_a_later_request_finds_its_turn_by_call_id(tmp_path):
    db = str(tmp_path / "t.duckdb")
    p = Producer()
    root = p.open("app", "invoke_agent", 0, {"gen_ai.operation.name": "invoke_agent",
                                             "gen_ai.conversation.id": "later"})
    p.span("sdk", "chat", 1, 10, genai_chat("c1", "tool_call", tools=["search"]), root)
    p.span("sdk", "chat", 20, 30, genai_chat("c2", "tool_call", tools=["fetch"], history=1), root)
    with Collector(db, port=0) as collector:
        send(collector, p.take())
        # A slow tool of turn 1 that started after turn 2 began: only its call id places it.
        p.span("app", "execute_tool search", 25, 40, genai_tool("search", "c1-search"), root)
        root.end(end_time=T0 + 41 * MS)
        send(collector, p.take())
    assert tool_turns(account(db, "later")) == {"search": 1}


# -- content in any OTLP form ----------------------------------------------------------------------


def _otlp_json(attrs: dict) -> list[dict]:
    """Attributes as OTLP/JSON, with lists and dicts as arrayValue / kvlistValue (the structured form)."""
    def value(v):
        if isinstance(v, dict):
            return {"kvlistValue": {"values": [{"key": k, "value": value(x)} for k, x in v.items()]}}
        if isinstance(v, list):
            return {"arrayValue": {"values": [value(x) for x in v]}}
        if isinstance(v, bool):
            return {"boolValue": v}
        if isinstance(v, int):
            return {"intValue": str(v)}
        return {"stringValue": v}
    return [{"key": k, "value": value(v)} for k, v in attrs.items()]


def test_structured_content_sent_as_otlp_arrays_and_kvlists_is_stored(tmp_path):
    db = str(tmp_path / "t.duckdb")
    messages = [
        {"role": "user", "parts": [{"type": "text", "content": "Weather in Rome?"}]},
        {"role": "assistant", "parts": [{"type": "tool_call", "id": "w1", "name": "get_weather",
                                         "arguments": {"city": "Rome"}}]},
        {"role": "tool", "parts": [{"type": "tool_call_response", "id": "w1", "result": {"sky": "sunny"}}]},
    ]
    attrs = {"gen_ai.conversation.id": "kv", "gen_ai.operation.name": "chat",
             "gen_ai.request.model": "claude-haiku-4-5",
             "gen_ai.usage.input_tokens": 50, "gen_ai.usage.output_tokens": 5,
             "gen_ai.system_instructions": [{"type": "text", "content": "You plan trips."}],
             "gen_ai.tool.definitions": [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}],
             "gen_ai.input.messages": messages,
             "gen_ai.output.messages": [{"role": "assistant", "parts": [{"type": "text", "content": "Sunny."}],
                                         "finish_reason": "stop"}]}
    span = {"traceId": "5b8efff798038103d269b633813fc60d", "spanId": "bbbbbbbbbbbbbbb1", "name": "chat",
            "startTimeUnixNano": str(T0), "endTimeUnixNano": str(T0 + MS), "attributes": _otlp_json(attrs)}
    body = {"resourceSpans": [{"scopeSpans": [{"scope": {"name": "rust-genai"}, "spans": [span]}]}]}
    with Collector(db, port=0) as collector:
        status, _ = post(collector.url, json.dumps(body).encode(), "application/json")
    assert status == 200

    [call] = [c for t in account(db, "kv").turns for c in t.llm_calls]
    assert (call.stop_reason, call.action, call.output_text) == ("end_turn", "final", "Sunny.")
    assert call.tools_available == ["get_weather"] and call.message_count == 3
    assert call.newest_messages[-1] == {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "w1", "content": '{"sky": "sunny"}'}]}
    with tracer.Store(db, read_only=True) as store:
        [(system,)] = store.sql("SELECT c.body FROM llm_calls l JOIN content c ON c.hash = l.system_ref")
        assert json.loads(system) == [{"type": "text", "text": "You plan trips."}]
        [(raw,)] = store.sql("SELECT attributes FROM spans")
        assert "gen_ai.input.messages" not in json.loads(raw)  # stored once, in the content tables


# -- finish reasons ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("finish", "stop", "action"), [
    ("tool_call", "tool_use", "tool_use"), ("tool_calls", "tool_use", "tool_use"),
    ("function_call", "tool_use", "tool_use"), ("stop", "end_turn", "final"), ("end_turn", "end_turn", "final"),
    ("STOP", "end_turn", "final"), ("length", "max_tokens", "max_tokens"), ("MAX_TOKENS", "max_tokens", "max_tokens"),
    ("content_filter", "refusal", "refusal"), ("SAFETY", "refusal", "refusal"),
])
def test_finish_reasons_of_every_convention_are_stored_in_one_vocabulary(tmp_path, finish, stop, action):
    # Metadata only: no output messages, so the finish reason alone says what the model did.
    db = str(tmp_path / "t.duckdb")
    p = Producer()
    p.span("sdk", "chat", 0, 5, {"gen_ai.operation.name": "chat", "gen_ai.request.model": "claude-haiku-4-5",
                                 "gen_ai.conversation.id": "fin", "gen_ai.response.finish_reasons": [finish]})
    with Collector(db, port=0) as collector:
        send(collector, p.take())
    [call] = [c for t in account(db, "fin").turns for c in t.llm_calls]
    assert (call.stop_reason, call.action) == (stop, action)


# -- OpenInference's double tool_use blocks ---------------------------------------------------------


def test_a_tool_use_written_twice_is_one_tool_choice(tmp_path):
    # OpenInference's anthropic instrumentation writes each tool_use block as a content part and as a
    # tool call, in input and output messages alike; and a tool result as a user message with its id.
    db = str(tmp_path / "t.duckdb")
    p = Producer()

    def tool_use(prefix: str) -> dict:
        return {f"{prefix}contents.0.message_content.type": "tool_use",
                f"{prefix}contents.0.tool_call.id": "toolu_1",
                f"{prefix}contents.0.tool_call.function.name": "get_order",
                f"{prefix}contents.0.tool_call.function.arguments": '{"id": "A-1"}',
                f"{prefix}tool_calls.0.tool_call.id": "toolu_1",
                f"{prefix}tool_calls.0.tool_call.function.name": "get_order",
                f"{prefix}tool_calls.0.tool_call.function.arguments": '{"id": "A-1"}'}

    base = {"openinference.span.kind": "LLM", "session.id": "twice", "llm.model_name": "claude-haiku-4-5",
            "llm.input_messages.0.message.role": "user", "llm.input_messages.0.message.content": "Where is A-1?"}
    p.span("openinference.instrumentation.anthropic", "Messages", 0, 5, {
        **base, "llm.output_messages.0.message.role": "assistant", **tool_use("llm.output_messages.0.message."),
        "llm.output_messages.0.message.tool_calls.1.tool_call.function.name": "get_order",  # again, with no id
        "llm.output_messages.0.message.tool_calls.1.tool_call.function.arguments": '{"id": "A-1"}'})
    p.span("openinference.instrumentation.anthropic", "Messages", 10, 15, {
        **base, "llm.input_messages.1.message.role": "assistant", **tool_use("llm.input_messages.1.message."),
        "llm.input_messages.2.message.role": "user", "llm.input_messages.2.message.tool_call_id": "toolu_1",
        "llm.input_messages.2.message.content": "shipped",
        "llm.output_messages.0.message.role": "assistant", "llm.output_messages.0.message.content": "Shipped."})
    with Collector(db, port=0) as collector:
        send(collector, p.take())
    first, second = [c for t in account(db, "twice").turns for c in t.llm_calls]
    assert first.tools_chosen == ["get_order"]
    assert first.tool_uses == [{"id": "toolu_1", "name": "get_order", "input": {"id": "A-1"}}]
    assert second.newest_messages[1:] == [
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_order",
                                           "input": {"id": "A-1"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "shipped"}]}]


def test_openinference_anthropic_requests_are_read_from_input_value_whole(tmp_path):
    # The flattened messages keep one text per message; input.value keeps the request as it was sent.
    db = str(tmp_path / "t.duckdb")
    request = {"model": "claude-haiku-4-5", "max_tokens": 512, "system": "You help.",
               "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi."},
                                                         {"type": "text", "text": "Where is A-1?"}]}],
               "tools": [{"name": "get_order", "input_schema": {"type": "object"}}]}
    response = {"id": "msg_1", "type": "message", "role": "assistant", "stop_reason": "end_turn",
                "content": [{"type": "text", "text": "Shipped."}]}
    p = Producer()
    p.span("openinference.instrumentation.anthropic", "Messages", 0, 5, {
        "openinference.span.kind": "LLM", "session.id": "whole", "llm.provider": "anthropic",
        "llm.model_name": "claude-haiku-4-5-20251001", "input.value": json.dumps(request),
        "input.mime_type": "application/json", "output.value": json.dumps(response),
        "llm.input_messages.0.message.role": "user", "llm.input_messages.0.message.content": "Where is A-1?",
        "llm.output_messages.0.message.role": "assistant", "llm.output_messages.0.message.content": "Shipped."})
    with Collector(db, port=0) as collector:
        send(collector, p.take())
    [call] = [c for t in account(db, "whole").turns for c in t.llm_calls]
    assert call.newest_messages == request["messages"] and call.tools_available == ["get_order"]
    assert (call.stop_reason, call.output_text) == ("end_turn", "Shipped.")
    with tracer.Store(db, read_only=True) as store:
        [(params, raw)] = store.sql(
            "SELECT l.request_params, s.attributes FROM llm_calls l JOIN spans s USING (span_id)")
    assert json.loads(params)["max_tokens"] == 512
    assert "input.value" not in json.loads(raw)  # stored once, in the content tables


def test_openllmetry_0_62_spans_read_as_the_genai_conventions(tmp_path):
    # 0.62 emits the GenAI conventions (no gen_ai.prompt.N), its own streaming flag, and tool spans
    # from the traceloop SDK's @tool with the arguments wrapped as {"args", "kwargs"}.
    db = str(tmp_path / "t.duckdb")
    p = Producer()
    assoc = {"traceloop.association.properties.session_id": "tl-62"}
    root = p.open("traceloop.sdk", "trips.workflow", 0, {"traceloop.span.kind": "workflow", **assoc})
    p.span("opentelemetry.instrumentation.anthropic", "anthropic.chat", 1, 10, {
        **genai_chat("c1", "tool_call", tools=["get_weather"]), "gen_ai.is_streaming": True, **assoc}, root)
    p.span("traceloop.sdk", "get_weather.tool", 11, 12, {
        "traceloop.span.kind": "tool", "traceloop.entity.name": "get_weather", "gen_ai.tool.name": "get_weather",
        "traceloop.entity.input": json.dumps({"args": [], "kwargs": {"city": "Rome"}}),
        "traceloop.entity.output": '"sunny"', **assoc}, root)
    p.span("opentelemetry.instrumentation.anthropic", "anthropic.chat", 13, 20, {
        **genai_chat("c2", "stop", history=1), **assoc}, root)
    root.end(end_time=T0 + 21 * MS)
    with Collector(db, port=0) as collector:
        send(collector, p.take())
    acc = account(db, "tl-62")
    first, last = [c for t in acc.turns for c in t.llm_calls]
    assert (first.action, first.stop_reason, last.action) == ("tool_use", "tool_use", "final")
    [tool] = [t for turn in acc.turns for t in turn.tool_calls]
    assert (tool.turn_index, json.loads(tool.arguments)) == (1, {"city": "Rome"})
    with tracer.Store(db, read_only=True) as store:
        assert store.sql("SELECT stream FROM llm_calls ORDER BY start_ns") == [(True,), (False,)]


# -- sessions nobody ends ---------------------------------------------------------------------------


def test_a_session_with_no_end_is_closed_after_the_inactivity_timeout(tmp_path):
    db = str(tmp_path / "t.duckdb")
    p = Producer()
    # The root is another service's (a remote parent): no span of this trace ever ends the session.
    remote = p.open("gateway", "POST /chat", 0, {})
    p.span("sdk", "chat", 1, 10, genai_chat("c1", "tool_call", tools=["search"]), remote)
    p.span("sdk", "chat", 20, 30, genai_chat("c2", "stop", history=1), remote)
    other = p.open("gateway", "POST /chat", 0, {})
    p.span("sdk", "chat", 1, 10, {**genai_chat("d1", "tool_call", tools=["search"]), "session.id": "stalled"},
           other)
    spans = p.take()
    now = [T0 + 60 * MS]
    ended: list[list[str]] = []
    with Collector(db, port=0, session_timeout_s=600, clock=lambda: now[0], on_sessions_ended=ended.append) as c:
        send(c, spans)
        assert {s[1] for s in sessions(c)} == {"running"}
        assert c.close_inactive_sessions() == []  # a minute later: not yet
        now[0] = T0 + 601 * 1_000 * MS
        closed = c.close_inactive_sessions()
    trace = f"{remote.get_span_context().trace_id:032x}"
    assert sorted(closed) == sorted([trace, "stalled"]) and ended[-1] == closed
    status = {s[0]: s[1] for s in sessions(db)}
    assert status == {trace: "ok", "stalled": "incomplete"}  # its last decision was a final answer, or was not
    with tracer.Store(db, read_only=True) as store:
        assert store.get_session("stalled").status_reason.startswith("no span for 10 min and none ended the session")


def test_the_session_timeout_must_be_positive(tmp_path):
    with pytest.raises(tracer.ConfigError, match="session timeout must be above 0"):
        Collector(str(tmp_path / "t.duckdb"), port=0, session_timeout_s=0)


def test_a_join_whose_write_failed_is_made_again_when_the_spans_are_resent():
    from tracer._ingest import Ingestor, from_readable

    p = Producer()
    root = p.open("app", "invoke_agent", 0, {"gen_ai.operation.name": "invoke_agent",
                                             "gen_ai.conversation.id": "retry"})
    p.span("sdk", "chat", 1, 10, genai_chat("c1", "stop"), root)
    ingestor = Ingestor()
    ingestor.build([from_readable(s) for s in p.take()])
    root.end(end_time=T0 + 11 * MS)
    spans = [from_readable(s) for s in p.take()]
    lost = ingestor.build(spans)
    assert lost.merges == {f"{root.get_span_context().trace_id:032x}": "retry"}
    ingestor.rollback(lost)  # as the collector does when the write fails
    assert ingestor.build(spans).merges == lost.merges

