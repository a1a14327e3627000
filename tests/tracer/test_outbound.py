"""flightrec's own spans as another OpenTelemetry backend sees them: the conventions' content
attributes, standard names, span kinds, the SDK's native spans inside the session, where the
exact bodies travel, and which endpoint the spans are posted to."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from anthropic import beta_tool
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import tracer
from tests.tracer.fakes import FakeAPI, OtlpBackend, message, run_agent, run_agent_async
from tracer import _attributes as A
from tracer._collector import Collector
from tracer._export import traces_url
from tracer.testing import FakeModel, reply, thinking, tool_use

SDK_SCOPE = "com.anthropic.sdk.python"


@contextmanager
def recording(**options) -> Iterator[tuple[tracer.Recorder, InMemorySpanExporter]]:
    """A recorder whose spans also go to an in-memory exporter, as to any other backend."""
    rec = tracer.Recorder(":memory:", **options)
    memory = InMemorySpanExporter()
    rec.provider.add_span_processor(SimpleSpanProcessor(memory))
    try:
        yield rec, memory
    finally:
        rec.shutdown()


def named(memory: InMemorySpanExporter, prefix: str) -> list:
    return [s for s in memory.get_finished_spans() if s.name.startswith(prefix)]


def content(span, key: str):
    return json.loads(span.attributes[key])


# -- the conventions' content attributes -----------------------------------------------------------


def test_chat_spans_carry_the_conversation_in_the_conventions_parts():
    with recording() as (rec, memory), rec.session(agent="support"):
        run_agent(rec.instrument(FakeAPI().client()))
    first, last = named(memory, "chat")
    assert content(first, A.SYSTEM_INSTRUCTIONS) == [{"type": "text", "content": "You help customers."}]
    assert content(first, A.INPUT_MESSAGES) == [
        {"role": "user", "parts": [{"type": "text", "content": "Where is A-1?"}]}]
    assert content(first, A.OUTPUT_MESSAGES) == [{"role": "assistant", "finish_reason": "tool_call", "parts": [
        {"type": "text", "content": "Let me check the order."},
        {"type": "tool_call", "id": "toolu_1", "name": "get_order", "arguments": {"order_id": "A-1"}}]}]
    tools = content(first, A.TOOL_DEFINITIONS)
    assert [(t["type"], t["name"]) for t in tools] == [
        ("function", "get_order"), ("function", "search_kb"), ("function", "escalate_to_human")]
    assert tools[0]["parameters"]["required"] == ["order_id"] and tools[0]["description"] == "Look up an order by id."
    history = content(last, A.INPUT_MESSAGES)
    assert [m["role"] for m in history] == ["user", "assistant", "user"]
    response = history[2]["parts"][0]
    assert response["type"] == "tool_call_response" and response["id"] == "toolu_1"
    assert json.loads(response["response"]) == {"order_id": "A-1", "status": "shipped"}
    assert content(last, A.OUTPUT_MESSAGES)[0]["finish_reason"] == "stop"
    # The exact bodies are still there for flightrec's own store.
    assert json.loads(first.attributes[A.REQUEST_BODY])["messages"][0]["content"] == "Where is A-1?"


def test_thinking_is_a_reasoning_part():
    fake = FakeModel([reply(thinking("The user wants A-1."), "It shipped.")])
    with recording() as (rec, memory), rec.session(agent="support"):
        rec.instrument(fake.client()).messages.create(model="claude-haiku-4-5", max_tokens=100,
                                                      messages=[{"role": "user", "content": "A-1?"}])
    (chat,) = named(memory, "chat")
    assert content(chat, A.OUTPUT_MESSAGES)[0]["parts"] == [
        {"type": "reasoning", "content": "The user wants A-1."}, {"type": "text", "content": "It shipped."}]


def test_redacted_mode_redacts_the_content_attributes_and_none_sets_none():
    with recording(content="redacted") as (rec, memory), rec.session(agent="support"):
        run_agent(rec.instrument(FakeAPI().client()), question="Where is A-1? Mail me at ann@example.com")
    first, last = named(memory, "chat")
    assert "[REDACTED:email]" in first.attributes[A.INPUT_MESSAGES]
    assert "ann@example.com" not in first.attributes[A.INPUT_MESSAGES]
    assert "help@shop.example" not in last.attributes[A.OUTPUT_MESSAGES]
    assert "[REDACTED:email]" in last.attributes[A.OUTPUT_MESSAGES]

    with recording(content="none") as (rec, memory), rec.session(agent="support"):
        run_agent(rec.instrument(FakeAPI().client()))
    for chat in named(memory, "chat"):
        assert not set(chat.attributes) & A.CONTENT_ATTRIBUTES


def test_a_recorder_that_only_writes_its_store_does_not_build_them():
    rec = tracer.Recorder(":memory:")
    try:
        assert not rec.standard_content  # the store keeps the exact bodies; nothing else would read them
        rec.provider.add_span_processor(SimpleSpanProcessor(InMemorySpanExporter()))
        assert rec.standard_content
    finally:
        rec.shutdown()


# -- standard names and kinds -------------------------------------------------------------------------


def test_server_address_and_port_come_from_the_clients_url():
    with recording() as (rec, memory), rec.session(agent="support"):
        run_agent(rec.instrument(FakeAPI().client()))
        run_agent(rec.instrument(FakeAPI().client(base_url="http://127.0.0.1:8765")))
    spans = named(memory, "chat")
    assert {(s.attributes[A.SERVER_ADDRESS], s.attributes[A.SERVER_PORT]) for s in spans} == {
        ("api.anthropic.com", 443), ("127.0.0.1", 8765)}


def test_the_beta_header_is_recorded_as_a_list():
    fake = FakeModel(["one", "two"])
    with recording() as (rec, memory), rec.session(agent="support"):
        client = rec.instrument(fake.client())
        client.beta.messages.create(model="claude-haiku-4-5", max_tokens=10,
                                    messages=[{"role": "user", "content": "hi"}],
                                    betas=["context-management-2025-06-27", "interleaved-thinking-2025-05-14"])
        default = rec.instrument(fake.client(default_headers={"anthropic-beta": "token-efficient-tools-2025-02-19"}))
        default.messages.create(model="claude-haiku-4-5", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    by_call = [s.attributes.get(A.REQUEST_BETAS) for s in named(memory, "chat")]
    assert [list(b) for b in by_call] == [["context-management-2025-06-27", "interleaved-thinking-2025-05-14"],
                                          ["token-efficient-tools-2025-02-19"]]


def test_the_turn_is_a_chain_for_openinference_readers():
    with recording() as (rec, memory), rec.session(agent="support"):
        run_agent(rec.instrument(FakeAPI().client()))
    turns = named(memory, "flightrec.turn")
    assert len(turns) == 2 and all(t.attributes[A.OPENINFERENCE_SPAN_KIND] == "CHAIN" for t in turns)


# -- the session is the current OpenTelemetry context ---------------------------------------------


def test_spans_of_other_instrumentation_land_inside_the_session_and_its_explicit_turn():
    other = TracerProvider()
    memory = InMemorySpanExporter()
    other.add_span_processor(SimpleSpanProcessor(memory))
    app = other.get_tracer("app")
    with recording() as (rec, ours), rec.session(agent="support") as s:
        with app.start_as_current_span("in the session"):
            pass
        with s.turn(), app.start_as_current_span("in the turn"):
            pass
    assert trace.get_current_span() is trace.INVALID_SPAN  # detached again
    session = named(ours, "invoke_agent")[0]
    turn = named(ours, "flightrec.turn")[0]
    spans = {sp.name: sp for sp in memory.get_finished_spans()}
    assert spans["in the session"].parent.span_id == session.context.span_id
    assert spans["in the turn"].parent.span_id == turn.context.span_id
    assert {sp.context.trace_id for sp in spans.values()} == {session.context.trace_id}


def test_each_asyncio_task_keeps_its_own_session_context():
    other = TracerProvider()
    memory = InMemorySpanExporter()
    other.add_span_processor(SimpleSpanProcessor(memory))
    app = other.get_tracer("app")

    async def one(rec: tracer.Recorder, name: str) -> str:
        with rec.session(agent=name) as s:
            await asyncio.sleep(0)  # let the other task run inside its own session
            with app.start_as_current_span(name):
                await run_agent_async(rec.instrument(FakeAPI().async_client()))
        return s.id

    with recording() as (rec, ours):
        async def main() -> None:
            await asyncio.gather(one(rec, "a"), one(rec, "b"))
        asyncio.run(main())
    sessions = {sp.attributes[A.AGENT_NAME]: sp for sp in named(ours, "invoke_agent")}
    for sp in memory.get_finished_spans():
        assert sp.parent.span_id == sessions[sp.name].context.span_id


def test_native_spans_sit_in_the_turn_of_their_call():
    with recording() as (rec, memory), rec.session(agent="support") as s:
        run_agent(rec.instrument(FakeAPI(errors=[529]).client(max_retries=2), native_spans=True))
    turns = {t.attributes[A.TURN_INDEX]: t.context.span_id for t in named(memory, "flightrec.turn")}
    native = named(memory, "anthropic.messages.create")
    ours = named(memory, "chat")
    assert len(native) == 2 and len(ours) == 3  # one SDK span per call; ours per attempt (one retried)
    assert {sp.parent.span_id for sp in native} == set(turns.values())
    assert [sp.parent.span_id for sp in ours] == [turns[1], turns[1], turns[2]]
    session = named(memory, "invoke_agent")[0]
    assert {sp.context.trace_id for sp in memory.get_finished_spans()} == {session.context.trace_id}
    assert session.attributes[A.CONVERSATION_ID] == s.id


def test_native_spans_stay_under_a_span_the_application_opened():
    app = TracerProvider().get_tracer("app")
    with recording() as (rec, memory), rec.session(agent="support"):
        with app.start_as_current_span("retrieval step") as mine:
            rec.instrument(FakeAPI().client(), native_spans=True).messages.create(
                model="claude-haiku-4-5", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    (native,) = named(memory, "anthropic.messages.create")
    assert native.parent.span_id == mine.get_span_context().span_id


# -- tools run by the SDK's tool runner -----------------------------------------------------------


@beta_tool
@tracer.tool
def get_order(order_id: str) -> str:
    """Look up an order by id."""
    return json.dumps({"order_id": order_id, "status": "shipped"})


def test_a_tool_under_beta_tool_is_recorded_when_the_sdks_runner_calls_it(tmp_path):
    fake = FakeModel([reply(tool_use("get_order", {"order_id": "A-1"}, id="toolu_9"), stop_reason="tool_use"),
                      reply("It shipped.")])
    rec = tracer.Recorder(tmp_path / "t.duckdb")
    with rec.session(agent="runner") as s:
        final = rec.instrument(fake.client()).beta.messages.tool_runner(
            model="claude-haiku-4-5", max_tokens=100, tools=[get_order],
            messages=[{"role": "user", "content": "Where is A-1?"}]).until_done()
    rec.shutdown()
    assert final.content[0].text == "It shipped."
    with tracer.Store(rec.db_path, read_only=True) as store:
        acc = store.session_account(s.id)
    (tool,) = acc.turns[0].tool_calls
    assert (tool.tool_name, tool.tool_call_id, tool.status) == ("get_order", "toolu_9", "ok")
    assert json.loads(tool.result) == {"order_id": "A-1", "status": "shipped"}
    assert acc.session.llm_calls == 2


# -- where the spans go, and what travels -----------------------------------------------------------


def test_the_traces_url_follows_the_specification(monkeypatch):
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    assert traces_url("http://h:4318") == "http://h:4318/v1/traces"
    assert traces_url("http://h:4318/") == "http://h:4318/v1/traces"
    assert traces_url("http://h:6006/v1/traces") == "http://h:6006/v1/traces"
    assert traces_url() is None
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://base:4318/")
    assert traces_url() == "http://base:4318/v1/traces"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://signal:9/custom/path")
    assert traces_url() == "http://signal:9/custom/path"  # used as it is
    assert traces_url("http://mine:1") == "http://mine:1/v1/traces"  # code wins over the environment
    assert traces_url(use_environment=False) is None
    with pytest.raises(tracer.ConfigError, match="not an http"):
        traces_url("127.0.0.1:4318")


def test_an_explicit_store_wins_over_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://127.0.0.1:9/v1/traces")
    rec = tracer.Recorder(tmp_path / "t.duckdb")
    rec.shutdown()
    assert rec.endpoint is None
    rec = tracer.Recorder()
    rec.shutdown()
    assert rec.endpoint == "http://127.0.0.1:9/v1/traces"


@pytest.fixture
def backend():
    b = OtlpBackend()
    yield b
    b.close()


def _send(endpoint: str, **options) -> tracer.Recorder:
    rec = tracer.Recorder(endpoint=endpoint, **options)
    with rec.session(agent="support"):
        run_agent(rec.instrument(FakeAPI().client(), native_spans=True))
    rec.shutdown()
    return rec


def test_another_backend_gets_the_conventions_content_not_the_exact_bodies(backend):
    rec = _send(backend.url + "/v1/traces")
    assert set(backend.paths) == {"/v1/traces"}  # not /v1/traces/v1/traces
    assert rec.stats.written == len(backend.spans) and rec.stats.dropped == 0
    ours = [s for s in backend.spans if s.scope == "flightrec" and s.name.startswith("chat")]
    assert len(ours) == 2
    for chat in ours:
        assert A.REQUEST_BODY not in chat.attributes and A.RESPONSE_BODY not in chat.attributes
        assert chat.attributes[A.INPUT_MESSAGES] and chat.attributes[A.OUTPUT_MESSAGES]
        assert chat.attributes[A.USAGE_INPUT] == 400 and chat.attributes[A.COST_USD] > 0
    # The SDK's span of the same call keeps its place but not the tokens: they are counted once.
    native = [s for s in backend.spans if s.scope == SDK_SCOPE]
    assert len(native) == 2
    for span in native:
        assert span.attributes[A.OPENINFERENCE_SPAN_KIND] == "CHAIN"
        assert not [k for k in span.attributes if k.startswith("gen_ai.usage.")]


def test_bodies_go_to_another_backend_when_asked(backend):
    _send(backend.url, otlp_bodies=True)
    chat = next(s for s in backend.spans if s.name.startswith("chat"))
    assert A.REQUEST_BODY in chat.attributes and A.INPUT_MESSAGES in chat.attributes


def test_flightrec_serve_gets_the_exact_bodies_and_replay_still_verifies(tmp_path):
    db = str(tmp_path / "served.duckdb")
    with Collector(db, port=0) as collector:
        rec = tracer.Recorder(endpoint=collector.url + "/v1/traces")
        with rec.session(agent="support") as s:
            run_agent(rec.instrument(FakeAPI().client()))
        rec.shutdown()
    assert rec.processor.outbound.flightrec is True
    with tracer.Store(db, read_only=True) as store:
        assert store.get_session(s.id).llm_calls == 2
        report = store.verify_requests()
        assert report.exact == report.total == 2
        raw = store.sql("SELECT attributes FROM spans WHERE name LIKE 'chat%'")
    for (attributes,) in raw:
        assert A.INPUT_MESSAGES not in attributes  # not sent: the bodies say the same


def test_bodies_stay_home_when_told_even_for_flightrec_serve(tmp_path):
    db = str(tmp_path / "served.duckdb")
    with Collector(db, port=0) as collector:
        rec = tracer.Recorder(endpoint=collector.url, otlp_bodies=False)
        with rec.session(agent="support") as s:
            run_agent(rec.instrument(FakeAPI(lambda body: message([{"type": "text", "text": "hi"}], "end_turn"))
                                     .client()))
        rec.shutdown()
    with tracer.Store(db, read_only=True) as store:
        assert store.get_session(s.id).llm_calls == 1
        assert store.verify_requests().exact == 0


def test_a_session_run_inside_an_application_span_is_the_root_of_its_own_trace():
    # Its runs are its root spans, and an application span (a web request) must not end or judge it.
    rec = tracer.Recorder(":memory:")
    memory = InMemorySpanExporter()
    rec.provider.add_span_processor(SimpleSpanProcessor(memory))
    app = rec.provider.get_tracer("my.app")
    with app.start_as_current_span("POST /chat") as request, rec.session(agent="support"):
        pass
    rec.shutdown()
    [session] = [sp for sp in memory.get_finished_spans() if sp.name == "invoke_agent support"]
    assert session.parent is None
    assert [link.context.span_id for link in session.links] == [request.get_span_context().span_id]
