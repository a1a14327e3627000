"""Capture through the real anthropic client: every attempt, streaming or not, sync or async."""

from __future__ import annotations

import asyncio
import json

import anthropic
import pytest

import tracer
from tests.tracer.fakes import TOOLS, FakeAPI, message, run_agent, run_agent_async


@pytest.fixture
def recorder():
    rec = tracer.Recorder()
    yield rec
    rec.shutdown()


def _account(rec: tracer.Recorder, session: tracer.Session) -> tracer.SessionAccount:
    rec.flush()
    with tracer.Store(rec.db_path, read_only=False) as store:
        return store.session_account(session.id)


def test_decision_attributes_are_recorded(recorder):
    api = FakeAPI()
    with recorder.session(agent="support") as s:
        run_agent(recorder.instrument(api.client()))
    acc = _account(recorder, s)
    assert acc.session.turns == 2 and acc.session.llm_calls == 2 and acc.session.tool_calls == 1
    first = acc.turns[0].llm_calls[0]
    assert first.action == "tool_use"
    assert first.tools_available == ["get_order", "search_kb", "escalate_to_human"]
    assert first.tools_chosen == ["get_order"]
    assert first.reasoning == "Let me check the order."
    assert first.tool_uses == [{"id": "toolu_1", "name": "get_order", "input": {"order_id": "A-1"}}]
    # 400 input + 40 output tokens at Haiku 4.5 prices ($1 / $5 per MTok).
    assert first.cost_usd == pytest.approx(400e-6 + 200e-6)
    assert sum(first.context_tokens.values()) == 400
    assert first.context_utilisation == pytest.approx(400 / 200_000)
    tool = acc.turns[0].tool_calls[0]
    assert tool.tool_call_id == "toolu_1" and tool.status == "ok"
    assert json.loads(tool.result) == {"order_id": "A-1", "status": "shipped"}
    last = acc.turns[1].llm_calls[0]
    assert last.action == "final" and last.reasoning is None
    assert last.context_tokens["tool_results"] > 0
    assert acc.session.cost_usd == pytest.approx(2 * 600e-6)


def test_every_retry_attempt_is_its_own_call(recorder):
    api = FakeAPI(errors=[529, 429])
    with recorder.session(agent="support") as s:
        run_agent(recorder.instrument(api.client(max_retries=3)))
    acc = _account(recorder, s)
    attempts = acc.turns[0].llm_calls
    assert [(c.attempt, c.status, c.error_type, c.http_status) for c in attempts] == [
        (0, "error", "overloaded_error", 529), (1, "error", "rate_limit_error", 429), (2, "ok", None, 200)]
    assert acc.session.llm_errors == 2 and acc.session.turns == 2


def test_connection_failure_is_recorded_and_raised(recorder):
    def broken(request):
        raise anthropic.APIConnectionError(request=request)

    import httpx2

    client = anthropic.Anthropic(api_key="t", max_retries=0,
                                 http_client=httpx2.Client(transport=httpx2.MockTransport(broken)))
    with pytest.raises(anthropic.APIConnectionError), recorder.session(agent="support") as s:
        recorder.instrument(client).messages.create(model="claude-haiku-4-5", max_tokens=10,
                                                    messages=[{"role": "user", "content": "hi"}])
    acc = _account(recorder, s)
    call = acc.turns[0].llm_calls[0]
    assert call.status == "error" and call.error_type == "APIConnectionError"
    assert acc.session.status == "error"


@pytest.mark.parametrize("chunked", [True, False], ids=["live-stream", "pre-read"])
def test_streamed_calls_are_captured_whole(recorder, chunked):
    api = FakeAPI(chunked=chunked)
    with recorder.session(agent="support") as s:
        messages = run_agent(recorder.instrument(api.client()), stream=True)
    # The application still got the whole stream.
    assert messages[1]["content"][1]["input"] == {"order_id": "A-1"}
    acc = _account(recorder, s)
    first = acc.turns[0].llm_calls[0]
    assert first.tool_uses == [{"id": "toolu_1", "name": "get_order", "input": {"order_id": "A-1"}}]
    assert first.stop_reason == "tool_use" and first.output_tokens == 40
    assert acc.turns[1].llm_calls[0].output_text == "Order A-1 shipped. Contact: help@shop.example"
    if chunked:
        assert first.ttft_ms is not None


def test_raw_stream_iteration_is_captured(recorder):
    api = FakeAPI()
    client = recorder.instrument(api.client())
    with recorder.session(agent="support") as s:
        events = list(client.messages.create(model="claude-haiku-4-5", max_tokens=50, stream=True,
                                             messages=[{"role": "user", "content": "hi"}], tools=TOOLS))
    assert events[-1].type == "message_stop"
    call = _account(recorder, s).turns[0].llm_calls[0]
    assert call.tools_chosen == ["get_order"] and call.action == "tool_use"


@pytest.mark.parametrize("stream", [False, True])
def test_async_client(recorder, stream):
    api = FakeAPI()

    async def main() -> str:
        with recorder.session(agent="async-support") as s:
            await run_agent_async(recorder.instrument(api.async_client()), stream=stream)
        return s.id

    sid = asyncio.run(main())
    recorder.flush()
    with tracer.Store(recorder.db_path) as store:
        acc = store.session_account(sid)
    assert [t.llm_calls[0].action for t in acc.turns] == ["tool_use", "final"]
    assert acc.turns[0].tool_calls[0].tool_call_id == "toolu_1"


def test_sdk_native_spans_are_off_unless_asked(recorder):
    api = FakeAPI()
    with recorder.session(agent="a"):
        run_agent(recorder.instrument(api.client()))
    with recorder.session(agent="b"):
        run_agent(recorder.instrument(api.client(), native_spans=True))
    recorder.flush()
    with tracer.Store(recorder.db_path) as store:
        scopes = dict(store._query("SELECT scope, count(*) FROM spans GROUP BY scope"))
        calls = store._query("SELECT count(*) FROM llm_calls")[0][0]
    assert scopes["com.anthropic.sdk.python"] == 2  # only from session b
    assert calls == 4  # native spans are kept raw, never counted as extra LLM calls


def test_calls_outside_a_session_are_still_recorded(recorder):
    api = FakeAPI(lambda body: message([{"type": "text", "text": "hi"}], "end_turn"))
    recorder.instrument(api.client()).messages.create(
        model="claude-haiku-4-5", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    recorder.flush()
    with tracer.Store(recorder.db_path) as store:
        assert store._query("SELECT count(*), min(action) FROM llm_calls")[0] == (1, "final")


def test_explicit_turn_groups_several_calls(recorder):
    api = FakeAPI(lambda body: message([{"type": "text", "text": "ok"}], "end_turn"))
    client = recorder.instrument(api.client())
    with recorder.session(agent="support") as s:
        with s.turn() as index:
            for _ in range(2):
                client.messages.create(model="claude-haiku-4-5", max_tokens=10,
                                       messages=[{"role": "user", "content": "hi"}])
            s.event("guard_fired", guard="max_tool_calls", limit=25)
        s.set_status("guard:max_tool_calls", "25 tool calls reached")
    assert index == 1
    acc = _account(recorder, s)
    assert len(acc.turns) == 1 and len(acc.turns[0].llm_calls) == 2
    assert acc.turns[0].events[0]["name"] == "guard_fired"
    assert acc.turns[0].events[0]["attributes"] == {"guard": "max_tool_calls", "limit": 25}
    assert (acc.session.status, acc.session.status_reason) == ("guard:max_tool_calls", "25 tool calls reached")


def test_failing_tool_is_recorded_and_raises(recorder):
    @tracer.tool
    def refund(order_id: str) -> None:
        raise RuntimeError("payment provider down")

    with recorder.session(agent="support") as s:
        with pytest.raises(RuntimeError):
            refund("A-1")
        with s.tool_call("send_email", {"to": "x"}, call_id="toolu_9") as call:
            call.set(idempotency_key="email-A-1", retries=2, circuit_state="half_open")
            call.set_error("smtp timeout", error_type="timeout", result={"error": "retry later"})
    tools = _account(recorder, s).turns[0].tool_calls
    assert (tools[0].tool_name, tools[0].status, tools[0].error_type) == ("refund", "error", "RuntimeError")
    assert tools[0].error_message == "payment provider down"
    assert (tools[1].idempotency_key, tools[1].retries, tools[1].circuit_state) == ("email-A-1", 2, "half_open")
    assert tools[1].tool_call_id == "toolu_9" and tools[1].status == "error"


@pytest.mark.parametrize(("content", "kept"), [("full", True), ("none", False)])
def test_a_tool_calls_extra_attributes_follow_the_content_policy(tmp_path, content, kept):
    rec = tracer.Recorder(tmp_path / "t.duckdb", content=content)
    with rec.session(agent="support") as s:
        with s.tool_call("escalate_to_human", {"reason": "x"}, call_id="toolu_1") as call:
            call.annotate({"flightrec.escalation.summary": "The customer asked: where is A-1002?",
                           "flightrec.escalation.tried": ["get_order A-1002: ok"]})
            call.annotate({"flightrec.tool.timeout_s": 5.0}, content=False)
    span_id = _account(rec, s).turns[0].tool_calls[0].span_id
    with tracer.Store(rec.db_path) as store:
        ((text,),) = store.sql("SELECT attributes FROM spans WHERE span_id = ?", [span_id])
    rec.shutdown()
    attrs = json.loads(text)
    assert attrs["flightrec.tool.timeout_s"] == 5.0  # metadata is always kept
    assert ("flightrec.escalation.summary" in attrs) is kept
    if kept:
        assert json.loads(attrs["flightrec.escalation.tried"]) == ["get_order A-1002: ok"]


def test_handoff_and_retrieval_are_classified(recorder):
    def policy(body):
        if len(body["messages"]) == 1:
            return message([{"type": "tool_use", "id": "t1", "name": "search_kb", "input": {"query": "refunds"}}],
                           "tool_use")
        return message([{"type": "tool_use", "id": "t2", "name": "escalate_to_human", "input": {}}], "tool_use")

    api = FakeAPI(policy)
    client = recorder.instrument(api.client())
    with recorder.session(agent="support") as s:
        msgs = [{"role": "user", "content": "refund policy?"}]
        r = client.messages.create(model="claude-haiku-4-5", max_tokens=50, messages=msgs, tools=TOOLS)
        msgs += [{"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in r.content]},
                 {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1",
                                               "content": "Refunds within 30 days. " * 20}]}]
        client.messages.create(model="claude-haiku-4-5", max_tokens=50, messages=msgs, tools=TOOLS)
    acc = _account(recorder, s)
    second = acc.turns[1].llm_calls[0]
    assert second.action == "handoff"
    assert second.context_tokens["retrieved"] > second.context_tokens["history"]
    assert second.context_tokens["tool_results"] == 0
