"""Spans of other instrumentation, sent to a real `flightrec serve` on loopback, land in the same
tables as flightrec's own, and replay reconstructs their requests from what they recorded."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode

import tracer
from replay import NoContentError, reconstruct
from tests.tracer.fakes import FakeAPI, run_agent
from tests.tracer.test_collector import post
from tracer import _ingest
from tracer._cli import main
from tracer._collector import Collector

QUESTION = "Where is A-1?"
ANSWER = "Order A-1 shipped."


@pytest.fixture
def db(tmp_path):
    return str(tmp_path / "served.duckdb")


def serve(db: str, spans) -> None:
    """Sends finished SDK spans to a real collector as an OTLP exporter would."""
    with Collector(db, port=0) as collector:
        status, body = post(collector.url, encode_spans(spans).SerializeToString())
    assert status == 200, body


def account(db: str, session_id: str) -> tracer.SessionAccount:
    with tracer.Store(db, read_only=True) as store:
        return store.session_account(session_id)


def calls(acc: tracer.SessionAccount) -> list[tracer.LlmCall]:
    return [c for t in acc.turns for c in t.llm_calls]


def tools(acc: tracer.SessionAccount) -> list[tracer.ToolCallRecord]:
    return [c for t in acc.turns for c in t.tool_calls]


# -- the anthropic SDK's own spans ------------------------------------------------------------------


def test_an_app_using_only_the_anthropic_sdks_spans_gets_sessions_decisions_and_costs(memory, db):
    provider, exporter = memory
    telemetry = {"tracer_provider": provider, "traces": {"content_mode": "content"}, "conversation_id": "conv-sdk"}
    run_agent(FakeAPI().client(open_telemetry=telemetry))
    serve(db, exporter.get_finished_spans())

    acc = account(db, "conv-sdk")
    first, last = calls(acc)
    assert [t.index for t in acc.turns] == [1, 2]
    assert (first.model, first.action, first.tools_chosen, first.stop_reason) == (
        "claude-haiku-4-5", "tool_use", ["get_order"], "tool_use")
    assert first.reasoning == "Let me check the order."
    assert first.tool_uses == [{"id": "toolu_1", "name": "get_order", "input": {"order_id": "A-1"}}]
    assert (last.action, last.output_text) == ("final", "Order A-1 shipped. Contact: help@shop.example")
    # 400 input + 40 output tokens at Haiku 4.5 prices ($1 / $5 per MTok), as for flightrec's own spans.
    assert (first.input_tokens, first.output_tokens) == (400, 40)
    assert acc.session.cost_usd == pytest.approx(2 * 600e-6)  # not None: every call was priced
    assert last.newest_messages[0] == {"role": "user", "content": [{"type": "text", "text": QUESTION}]}
    assert acc.session.status == "ok" and acc.session.llm_calls == 2

    rebuilt = reconstruct("conv-sdk", 1, db=db)  # from the recorded messages, not refused
    assert rebuilt.reconstructed_from == "the anthropic SDK's own spans" and rebuilt.recorded_sha256 is None


def test_the_sdks_metadata_only_spans_still_give_the_action_from_the_stop_reason(memory, db):
    provider, exporter = memory
    run_agent(FakeAPI().client(open_telemetry={"tracer_provider": provider, "conversation_id": "meta"}))
    serve(db, exporter.get_finished_spans())

    first, last = calls(account(db, "meta"))
    assert (first.action, first.tools_chosen, last.action) == ("tool_use", [], "final")
    with pytest.raises(NoContentError, match="no messages were recorded"):
        reconstruct("meta", 2, db=db)


def test_sdk_spans_from_a_process_flightrec_records_are_not_counted_twice(db):
    rec = tracer.Recorder(":memory:")
    exporter = InMemorySpanExporter()
    rec.provider.add_span_processor(SimpleSpanProcessor(exporter))
    with rec.session(agent="support") as s:
        run_agent(rec.instrument(FakeAPI().client(), native_spans=True))
    rec.shutdown()
    serve(db, exporter.get_finished_spans())
    with tracer.Store(db, read_only=True) as store:
        assert store.sql("SELECT count(*) FROM llm_calls")[0][0] == 2
        assert store.sql("SELECT count(*) FROM spans WHERE scope = 'com.anthropic.sdk.python'")[0][0] == 2
    assert account(db, s.id).session.llm_calls == 2


# -- OpenInference ------------------------------------------------------------------------------


def _openinference_session(provider: TracerProvider) -> None:
    t = provider.get_tracer("openinference.instrumentation.anthropic")
    tool_schema = json.dumps({"type": "function", "function": {"name": "get_order", "parameters": {}}})
    base = {"session.id": "oi-1", "llm.model_name": "claude-haiku-4-5", "llm.provider": "anthropic",
            "llm.invocation_parameters": json.dumps({"max_tokens": 512, "temperature": 0.2}),
            "llm.input_messages.0.message.role": "system", "llm.input_messages.0.message.content": "You help.",
            "llm.input_messages.1.message.role": "user", "llm.input_messages.1.message.content": QUESTION,
            "llm.tools.0.tool.json_schema": tool_schema,
            "llm.tools.1.tool.json_schema": json.dumps({"name": "escalate_to_human", "input_schema": {}})}
    with t.start_as_current_span("support", attributes={"openinference.span.kind": "AGENT", "agent.name": "oi-bot",
                                                        "session.id": "oi-1"}):
        with t.start_as_current_span("Messages", attributes={
                **base, "openinference.span.kind": "LLM",
                "llm.output_messages.0.message.role": "assistant",
                "llm.output_messages.0.message.content": "Let me look.",
                "llm.output_messages.0.message.tool_calls.0.tool_call.id": "call_1",
                "llm.output_messages.0.message.tool_calls.0.tool_call.function.name": "get_order",
                "llm.output_messages.0.message.tool_calls.0.tool_call.function.arguments": '{"order_id": "A-1"}',
                "llm.token_count.prompt": 1200, "llm.token_count.completion": 30,
                "llm.token_count.prompt_details.cache_read": 1000}):
            pass
        with t.start_as_current_span("get_order", attributes={
                "openinference.span.kind": "TOOL", "session.id": "oi-1", "tool.name": "get_order",
                "input.value": '{"order_id": "A-1"}', "output.value": '{"status": "shipped"}'}):
            pass
        with t.start_as_current_span("Messages", attributes={
                **base, "openinference.span.kind": "LLM",
                "llm.input_messages.2.message.role": "assistant",
                "llm.input_messages.2.message.tool_calls.0.tool_call.id": "call_1",
                "llm.input_messages.2.message.tool_calls.0.tool_call.function.name": "get_order",
                "llm.input_messages.2.message.tool_calls.0.tool_call.function.arguments": '{"order_id": "A-1"}',
                "llm.input_messages.3.message.role": "tool", "llm.input_messages.3.message.tool_call_id": "call_1",
                "llm.input_messages.3.message.content": '{"status": "shipped"}',
                "llm.output_messages.0.message.role": "assistant", "llm.output_messages.0.message.content": ANSWER,
                "llm.token_count.prompt": 1300, "llm.token_count.completion": 12}):
            pass


def test_openinference_spans_become_a_session_with_decisions_and_tool_calls(memory, db):
    provider, exporter = memory
    _openinference_session(provider)
    serve(db, exporter.get_finished_spans())

    acc = account(db, "oi-1")
    assert acc.session.agent == "oi-bot" and acc.session.turns == 2
    first, last = calls(acc)
    assert first.tools_available == ["get_order", "escalate_to_human"]
    assert (first.turn_index, first.action, first.tools_chosen) == (1, "tool_use", ["get_order"])
    # 1,200 prompt tokens of which 1,000 read from the cache: stored as the API counts them.
    assert (first.input_tokens, first.cache_read_tokens, first.output_tokens) == (200, 1000, 30)
    assert first.cost_usd == pytest.approx((200 * 1 + 1000 * 0.1 + 30 * 5) * 1e-6)
    assert (last.turn_index, last.action, last.output_text) == (2, "final", ANSWER)
    [tool] = tools(acc)
    assert (tool.turn_index, tool.tool_name, json.loads(tool.arguments), json.loads(tool.result)) == (
        1, "get_order", {"order_id": "A-1"}, {"status": "shipped"})
    rebuilt = reconstruct("oi-1", 2, db=db)
    assert rebuilt.reconstructed_from == "OpenInference"
    assert rebuilt.request["messages"][0] == {"role": "user", "content": [{"type": "text", "text": QUESTION}]}


# -- OpenLLMetry -------------------------------------------------------------------------------


def test_openllmetry_spans_become_a_session_with_decisions_and_tool_calls(memory, db):
    provider, exporter = memory
    t = provider.get_tracer("opentelemetry.instrumentation.anthropic")
    assoc = {"traceloop.association.properties.session_id": "tl-7"}
    prompt = {"gen_ai.system": "Anthropic", "llm.request.type": "chat", "gen_ai.request.model": "claude-sonnet-4-5",
              "gen_ai.prompt.0.role": "system", "gen_ai.prompt.0.content": "You help.",
              "gen_ai.prompt.1.role": "user", "gen_ai.prompt.1.content": QUESTION,
              "llm.request.functions.0.name": "get_order", "llm.request.functions.1.name": "search_kb", **assoc}
    with t.start_as_current_span("support.workflow", attributes={
            "traceloop.span.kind": "workflow", "traceloop.workflow.name": "support", **assoc}):
        with t.start_as_current_span("anthropic.chat", attributes={
                **prompt, "gen_ai.response.model": "claude-sonnet-4-5-20250929",
                "gen_ai.completion.0.role": "assistant", "gen_ai.completion.0.finish_reason": "tool_use",
                "gen_ai.completion.0.tool_calls.0.id": "toolu_9", "gen_ai.completion.0.tool_calls.0.name": "get_order",
                "gen_ai.completion.0.tool_calls.0.arguments": '{"order_id": "A-1"}',
                "gen_ai.usage.prompt_tokens": 500, "gen_ai.usage.completion_tokens": 20}):
            pass
        with t.start_as_current_span("get_order.tool", attributes={
                "traceloop.span.kind": "tool", "traceloop.entity.name": "get_order",
                "traceloop.entity.input": '{"args": [], "kwargs": {"order_id": "A-1"}}',
                "traceloop.entity.output": '{"status": "shipped"}', **assoc}) as span:
            span.set_status(Status(StatusCode.ERROR, "warehouse offline"))
        with t.start_as_current_span("anthropic.chat", attributes={
                **prompt, "gen_ai.prompt.2.role": "assistant", "gen_ai.prompt.2.content": "Checking.",
                "gen_ai.prompt.3.role": "user", "gen_ai.prompt.3.content": "Any news?",
                "gen_ai.completion.0.role": "assistant", "gen_ai.completion.0.content": ANSWER,
                "gen_ai.completion.0.finish_reason": "end_turn",
                "gen_ai.usage.prompt_tokens": 600, "gen_ai.usage.completion_tokens": 8}):
            pass
    serve(db, exporter.get_finished_spans())

    acc = account(db, "tl-7")
    assert acc.session.agent == "support" and acc.session.tool_errors == 1
    first, last = calls(acc)
    assert (first.model, first.tools_available, first.tools_chosen) == (
        "claude-sonnet-4-5", ["get_order", "search_kb"], ["get_order"])
    assert (first.input_tokens, first.output_tokens, last.input_tokens) == (500, 20, 600)
    assert first.cost_usd is not None and acc.session.cost_usd > 0
    assert [(c.turn_index, c.action) for c in (first, last)] == [(1, "tool_use"), (2, "final")]
    [tool] = tools(acc)
    assert (tool.tool_name, tool.status, tool.error_message) == ("get_order", "error", "warehouse offline")
    rebuilt = reconstruct("tl-7", 1, db=db)
    assert rebuilt.reconstructed_from == "OpenLLMetry" and rebuilt.missing == ["max_tokens"]


# -- plain GenAI conventions, from any language ----------------------------------------------------


def _kv(attrs: dict) -> list[dict]:
    def value(v):
        if isinstance(v, bool):
            return {"boolValue": v}
        if isinstance(v, int):
            return {"intValue": str(v)}
        if isinstance(v, list):
            return {"arrayValue": {"values": [value(x) for x in v]}}
        return {"stringValue": v}
    return [{"key": k, "value": value(v)} for k, v in attrs.items()]


def _json_span(span_id: str, parent: str | None, name: str, start: int, attrs: dict) -> dict:
    span = {"traceId": "5b8efff798038103d269b633813fc60c", "spanId": span_id, "name": name, "kind": 3,
            "startTimeUnixNano": str(start), "endTimeUnixNano": str(start + 1_000_000),
            "attributes": _kv({"gen_ai.conversation.id": "go-42", **attrs}), "status": {}}
    if parent:
        span["parentSpanId"] = parent
    return span


def test_plain_genai_spans_sent_as_otlp_json_from_another_language(db):
    t0 = 1_700_000_000_000_000_000
    tool_defs = json.dumps([{"type": "function", "name": "get_order", "parameters": {}},
                            {"type": "function", "name": "transfer_to_human", "parameters": {}}])
    chat = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "anthropic",
            "gen_ai.request.model": "claude-haiku-4-5", "gen_ai.tool.definitions": tool_defs,
            "gen_ai.system_instructions": json.dumps([{"type": "text", "content": "You help."}])}
    user = {"role": "user", "parts": [{"type": "text", "content": QUESTION}]}
    handoff = {"role": "assistant", "parts": [{"type": "tool_call", "id": "c1", "name": "transfer_to_human",
                                               "arguments": {"reason": "angry"}}], "finish_reason": "tool_call"}
    spans = [
        _json_span("aaaaaaaaaaaaaaa1", None, "invoke_agent go-support", t0,
                   {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "go-support"}),
        _json_span("aaaaaaaaaaaaaaa2", "aaaaaaaaaaaaaaa1", "chat claude-haiku-4-5", t0 + 1, {
            **chat, "gen_ai.input.messages": json.dumps([user]), "gen_ai.output.messages": json.dumps([handoff]),
            "gen_ai.response.finish_reasons": ["tool_calls"], "gen_ai.usage.input_tokens": 300,
            "gen_ai.usage.output_tokens": 15, "gen_ai.response.id": "resp-1"}),
        _json_span("aaaaaaaaaaaaaaa3", "aaaaaaaaaaaaaaa1", "execute_tool transfer_to_human", t0 + 2, {
            "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "transfer_to_human",
            "gen_ai.tool.call.id": "c1", "gen_ai.tool.call.arguments": '{"reason": "angry"}',
            "gen_ai.tool.call.result": "queued"}),
    ]
    body = {"resourceSpans": [{"resource": {"attributes": _kv({"service.name": "go-agent"})},
                               "scopeSpans": [{"scope": {"name": "example.com/agent"}, "spans": spans}]}]}
    with Collector(db, port=0) as collector:
        status, _ = post(collector.url, json.dumps(body).encode(), "application/json")
    assert status == 200

    acc = account(db, "go-42")
    assert (acc.session.agent, acc.session.status, acc.session.llm_calls, acc.session.tool_calls) == (
        "go-support", "ok", 1, 1)
    [call] = calls(acc)
    assert (call.action, call.tools_chosen, call.tools_available) == (
        "handoff", ["transfer_to_human"], ["get_order", "transfer_to_human"])
    assert (call.input_tokens, call.output_tokens, call.cost_usd) == (300, 15, pytest.approx(375e-6))
    [tool] = tools(acc)
    assert (tool.turn_index, tool.tool_call_id, tool.result) == (1, "c1", "queued")

    result = CliRunner().invoke(main, ["replay", "verify", "--db", db])
    assert result.exit_code == 0, result.output
    assert "0/1 calls rebuilt exactly" in result.output
    assert "have no hash to verify (not failures)" in result.output
    assert "OpenTelemetry GenAI conventions" in result.output
    shown = CliRunner().invoke(main, ["replay", "show", "go-42", "--turn", "1", "--db", db])
    assert shown.exit_code == 0 and "RECONSTRUCTED FROM SEMANTIC CONVENTIONS" in shown.output, shown.output


# -- what is not understood stays raw ----------------------------------------------------------------


def test_unknown_and_garbled_spans_are_kept_raw_and_do_not_break_the_batch(memory, db, monkeypatch):
    provider, exporter = memory
    t = provider.get_tracer("someone.else")
    with t.start_as_current_span("mystery", attributes={"foo.kind": "LLM", "session.id": "odd"}):
        with t.start_as_current_span("llm?", attributes={
                "openinference.span.kind": "LLM", "session.id": "odd", "llm.token_count.prompt": "lots",
                "llm.input_messages.x.message.role": "user", "llm.input_messages.0.message.contents.zz": 3,
                "llm.tools.0.tool.json_schema": "{not json", "llm.invocation_parameters": "[1, 2"}):
            pass
        with t.start_as_current_span("weird kind", attributes={"openinference.span.kind": "RERANKER",
                                                               "session.id": "odd"}):
            pass
    serve(db, exporter.get_finished_spans())
    with tracer.Store(db, read_only=True) as store:
        assert store.sql("SELECT count(*) FROM spans WHERE session_id = 'odd'")[0][0] == 3
    [call] = calls(account(db, "odd"))
    assert (call.input_tokens, call.tools_available, call.action) == (None, [], None)

    exporter.clear()

    def broken(*args, **kwargs):
        raise RuntimeError("a shape nobody foresaw")

    monkeypatch.setattr(_ingest._foreign, "llm_call", broken)
    _openinference_session(provider)
    serve(db, exporter.get_finished_spans())
    acc = account(db, "oi-1")
    assert acc.session.llm_calls == 0 and acc.session.tool_calls == 1  # the rest of the batch landed
