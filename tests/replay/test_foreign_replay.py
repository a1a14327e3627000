"""Calls recorded by other OpenTelemetry instrumentation are replayed from what their spans kept:
the request is reconstructed from the semantic conventions, marked so, edited and re-sent, and
what cannot be reconstructed is named in one line with what to do."""

from __future__ import annotations

import json
import os
from typing import Any

import anthropic
import httpx2
import pytest
from click.testing import CliRunner
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import TracerProvider

import replay
import tracer
from tests.tracer.fakes import FakeAPI, run_agent
from tests.tracer.test_collector import post
from tracer._cli import main
from tracer._collector import Collector
from tracer.testing import FakeModel, reply, tool_use

QUESTION = "Where is A-1?"
MARK = "RECONSTRUCTED FROM SEMANTIC CONVENTIONS"
GET_ORDER = {"name": "get_order", "description": "Look an order up.",
             "input_schema": {"type": "object", "properties": {"order_id": {"type": "string"}}}}
ESCALATE = {"name": "escalate_to_human", "description": "Hand over.", "input_schema": {"type": "object"}}


@pytest.fixture
def db(tmp_path) -> str:
    return str(tmp_path / "foreign.duckdb")


def collect(db: str, spans) -> None:
    """Sends finished spans to a real collector, as an OTLP exporter would."""
    with Collector(db, port=0) as collector:
        status, body = post(collector.url, encode_spans(spans).SerializeToString())
    assert status == 200, body


def cli(*args: str) -> Any:
    return CliRunner().invoke(main, ["replay", *args])


def one_line(output: str) -> str:
    lines = output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in output, output
    return lines[0]


# -- the instrumentations' spans, as they write them -------------------------------------------------


def openinference(provider: TracerProvider, *, hide_inputs: bool = False, betas: list[str] | None = None) -> None:
    """Two calls of an anthropic agent traced by openinference-instrumentation-anthropic (1.1): the system
    prompt as message 0, tools as their Anthropic JSON, each tool_use block written twice (as a content
    and as a tool call), the tool result as a user message's ``message.tool_call_id``."""
    t = provider.get_tracer("openinference.instrumentation.anthropic")
    params = {"max_tokens": 512, "temperature": 0.2, "tool_choice": {"type": "auto"}, "stream": False,
              **({"betas": betas} if betas else {})}
    base = {"openinference.span.kind": "LLM", "session.id": "oi-1", "llm.provider": "anthropic",
            "llm.system": "anthropic", "llm.model_name": "claude-haiku-4-5",
            "llm.invocation_parameters": json.dumps(params)}
    if not hide_inputs:
        base |= {"llm.input_messages.0.message.role": "system", "llm.input_messages.0.message.content": "You help.",
                 "llm.input_messages.1.message.role": "user", "llm.input_messages.1.message.content": QUESTION,
                 "llm.tools.0.tool.json_schema": json.dumps(GET_ORDER),
                 "llm.tools.1.tool.json_schema": json.dumps(ESCALATE)}
    call = {"tool_call.id": "toolu_1", "tool_call.function.name": "get_order",
            "tool_call.function.arguments": '{"order_id": "A-1"}'}
    with t.start_as_current_span("Messages", attributes={
            **base, "llm.output_messages.0.message.role": "assistant",
            "llm.output_messages.0.message.contents.0.message_content.type": "text",
            "llm.output_messages.0.message.contents.0.message_content.text": "Let me look.",
            **{f"llm.output_messages.0.message.contents.1.{k}": v for k, v in call.items()},
            "llm.output_messages.0.message.contents.1.message_content.type": "tool_use",
            **{f"llm.output_messages.0.message.tool_calls.0.{k}": v for k, v in call.items()},
            "llm.finish_reason": "tool_use", "llm.token_count.prompt": 300, "llm.token_count.completion": 20}):
        pass
    history = {} if hide_inputs else {
        "llm.input_messages.2.message.role": "assistant",
        "llm.input_messages.2.message.contents.0.message_content.type": "text",
        "llm.input_messages.2.message.contents.0.message_content.text": "Let me look.",
        "llm.input_messages.2.message.contents.1.message_content.type": "tool_use",
        **{f"llm.input_messages.2.message.contents.1.{k}": v for k, v in call.items()},
        **{f"llm.input_messages.2.message.tool_calls.0.{k}": v for k, v in call.items()},
        "llm.input_messages.3.message.role": "tool", "llm.input_messages.3.message.tool_call_id": "toolu_1",
        "llm.input_messages.3.message.content": '{"status": "shipped"}'}
    with t.start_as_current_span("Messages", attributes={
            **base, **history, "llm.output_messages.0.message.role": "assistant",
            "llm.output_messages.0.message.content": "Order A-1 shipped.", "llm.finish_reason": "end_turn",
            "llm.token_count.prompt": 400, "llm.token_count.completion": 8}):
        pass


def openllmetry(provider: TracerProvider, *, content: bool = True) -> None:
    """One call traced by OpenLLMetry 0.62's anthropic instrumentation, which writes the GenAI
    conventions' JSON attributes; the session id comes from traceloop's association properties. Its
    history holds one assistant message, so it is turn 2."""
    t = provider.get_tracer("opentelemetry.instrumentation.anthropic", "0.62.1")
    attrs: dict[str, Any] = {
        "gen_ai.provider.name": "anthropic", "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "claude-sonnet-4-5", "gen_ai.request.max_tokens": 1024,
        "gen_ai.request.temperature": 0.5, "traceloop.association.properties.session_id": "tl-62",
        "gen_ai.response.model": "claude-sonnet-4-5-20250929", "gen_ai.response.id": "msg_1",
        "gen_ai.response.finish_reasons": ["stop"], "gen_ai.usage.input_tokens": 700,
        "gen_ai.usage.output_tokens": 9}
    if content:
        attrs |= {
            "gen_ai.system_instructions": json.dumps([{"type": "text", "content": "You help customers."}]),
            "gen_ai.input.messages": json.dumps([
                {"role": "user", "parts": [{"type": "text", "content": QUESTION}]},
                {"role": "assistant", "parts": [
                    {"type": "reasoning", "content": "The order tool knows."},
                    {"type": "tool_call", "id": "toolu_7", "name": "get_order", "arguments": {"order_id": "A-1"}}]},
                {"role": "user", "parts": [
                    {"type": "tool_call_response", "id": "toolu_7", "response": '{"status": "shipped"}'}]}]),
            "gen_ai.tool.definitions": json.dumps([GET_ORDER, ESCALATE]),
            "gen_ai.output.messages": json.dumps([{"role": "assistant", "finish_reason": "stop",
                                                   "parts": [{"type": "text", "content": "Shipped."}]}])}
    with t.start_as_current_span("anthropic.chat", attributes=attrs):
        pass


def genai_otlp_json(db: str, *, max_tokens: bool, history: list[dict[str, Any]] | None = None) -> None:
    """A chat span of the plain GenAI conventions from another language (OTLP/JSON), whose tool
    definitions are in OpenAI function shape and which recorded no max_tokens."""
    chat = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "anthropic",
            "gen_ai.conversation.id": "go-1", "gen_ai.request.model": "claude-haiku-4-5",
            "gen_ai.request.stop_sequences": ["END"], "gen_ai.request.frequency_penalty": 0.1,
            "gen_ai.system_instructions": json.dumps([{"type": "text", "content": "Be brief."}]),
            "gen_ai.input.messages": json.dumps(history or [{"role": "user", "parts": [
                {"type": "text", "content": QUESTION},
                {"type": "uri", "modality": "image", "uri": "https://example.com/receipt.png"},
                {"type": "file", "modality": "image", "file_id": "file_1"}]}]),
            "gen_ai.tool.definitions": json.dumps([
                {"type": "function", "function": {"name": "get_order", "description": "Look an order up.",
                                                  "parameters": {"type": "object", "properties": {}}}},
                {"type": "function", "name": "escalate_to_human", "parameters": None}]),
            "gen_ai.output.messages": json.dumps([{"role": "assistant", "finish_reason": "stop",
                                                   "parts": [{"type": "text", "content": "Shipped."}]}])}
    if max_tokens:
        chat["gen_ai.request.max_tokens"] = 300

    def value(v: Any) -> dict[str, Any]:
        if isinstance(v, list):
            return {"arrayValue": {"values": [value(x) for x in v]}}
        if isinstance(v, int):
            return {"intValue": str(v)}
        if isinstance(v, float):
            return {"doubleValue": v}
        return {"stringValue": v}

    span = {"traceId": "5b8efff798038103d269b633813fc60c", "spanId": "aaaaaaaaaaaaaaa2", "name": "chat", "kind": 3,
            "startTimeUnixNano": "1700000000000000000", "endTimeUnixNano": "1700000000001000000",
            "attributes": [{"key": k, "value": value(v)} for k, v in chat.items()], "status": {}}
    body = {"resourceSpans": [{"resource": {"attributes": []},
                               "scopeSpans": [{"scope": {"name": "example.com/agent"}, "spans": [span]}]}]}
    with Collector(db, port=0) as collector:
        status, _ = post(collector.url, json.dumps(body).encode(), "application/json")
    assert status == 200


# -- show -----------------------------------------------------------------------------------------


def test_show_reconstructs_an_openinference_call_marked_as_such(memory, db):
    provider, exporter = memory
    openinference(provider)
    collect(db, exporter.get_finished_spans())

    shown = cli("show", "oi-1", "--turn", "2", "--db", db)
    assert shown.exit_code == 0, shown.output
    assert f"{MARK} (OpenInference)" in shown.output and "no recorded hash to verify" in shown.output
    assert "matches the recorded hash" not in shown.output and "DIFFERS" not in shown.output

    rec = replay.reconstruct("oi-1", 2, db=db)
    assert (rec.reconstructed_from, rec.exact, rec.recorded_sha256, rec.missing) == ("OpenInference", False, None, [])
    assert rec.request == {
        "model": "claude-haiku-4-5", "max_tokens": 512, "system": "You help.",
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": QUESTION}]},
            # one tool_use, though OpenInference wrote it twice
            {"role": "assistant", "content": [
                {"type": "text", "text": "Let me look."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_order", "input": {"order_id": "A-1"}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": '{"status": "shipped"}'}]}],
        "tools": [GET_ORDER, ESCALATE], "temperature": 0.2, "tool_choice": {"type": "auto"}}


def test_show_names_what_a_genai_call_lacks_and_what_was_rewritten(db):
    genai_otlp_json(db, max_tokens=False)

    shown = cli("show", "go-1", "--turn", "1", "--db", db)
    assert shown.exit_code == 0, shown.output
    assert f"{MARK} (the OpenTelemetry GenAI conventions)" in shown.output
    assert "missing   max_tokens: not recorded, and the Messages API requires it; a re-run needs --max-tokens N" \
        in shown.output
    rec = replay.reconstruct("go-1", 1, db=db)
    assert rec.missing == ["max_tokens"]
    # OpenAI function shape and the GenAI conventions' own become Messages API tools.
    assert rec.request["tools"] == [
        {"name": "get_order", "description": "Look an order up.",
         "input_schema": {"type": "object", "properties": {}}},
        {"name": "escalate_to_human", "input_schema": {"type": "object", "properties": {}}}]
    assert rec.request["messages"] == [{"role": "user", "content": [
        {"type": "text", "text": QUESTION},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/receipt.png"}}]}]
    assert rec.request["stop_sequences"] == ["END"] and "frequency_penalty" not in rec.request
    notes = "\n".join(rec.notes)
    for said in ("left out a file part (image) in recorded message 0",
                 "tool escalate_to_human was recorded without an input schema", "OpenAI function shape"):
        assert said in notes and said in shown.output


def test_calls_recorded_without_content_name_the_setting_that_records_it(memory, db):
    provider, exporter = memory
    run_agent(FakeAPI().client(open_telemetry={"tracer_provider": provider, "conversation_id": "meta"}))
    openllmetry(provider, content=False)
    openinference(provider, hide_inputs=True)
    collect(db, exporter.get_finished_spans())

    for session, setting in (("meta", "open_telemetry={'traces': {'content_mode': 'content'}}"),
                             ("tl-62", "TRACELOOP_TRACE_CONTENT=true"), ("oi-1", "OPENINFERENCE_HIDE_INPUTS")):
        shown = cli("show", session, "--turn", "1", "--db", db)
        assert shown.exit_code == 2
        line = one_line(shown.output)
        assert "no messages were recorded for it by" in line and "(content capture was off)" in line, line
        assert setting in line, line
        with pytest.raises(replay.NoContentError, match="content capture was off"):
            replay.run(session, 1, db=db, model_url="http://127.0.0.1:9")


def test_a_tool_call_whose_result_was_not_recorded_is_named(db):
    genai_otlp_json(db, max_tokens=True, history=[
        {"role": "user", "parts": [{"type": "text", "content": QUESTION}]},
        {"role": "assistant", "parts": [{"type": "tool_call", "id": "c1", "name": "get_order", "arguments": {}}]},
        {"role": "user", "parts": [{"type": "text", "content": "And?"}]}])
    rec = replay.reconstruct("go-1", 2, db=db)
    assert ("message 1 calls c1 and message 2 holds no result for it (the recording did not keep it): the API "
            "refuses such a request; give the result with --replace-message 2 JSON") in "\n".join(rec.notes)


# -- run ------------------------------------------------------------------------------------------


def test_run_resends_an_openinference_call_with_edits_and_records_it_marked(memory, db):
    provider, exporter = memory
    openinference(provider)
    collect(db, exporter.get_finished_spans())
    fake = FakeModel([reply("Escalating.", tool_use("get_order", {"order_id": "A-2"}))])

    with fake.serve() as url:
        result = cli("run", "oi-1", "--turn", "2", "--model-url", url, "--remove-tool", "escalate_to_human",
                     "--system-append", "Never escalate.", "--db", db)
    assert result.exit_code == 0, result.output
    assert f"{MARK} (OpenInference)" in result.output and "1/1 trials decided differently" in result.output
    [sent] = fake.requests
    assert sent["system"] == "You help.\n\nNever escalate."
    assert [t["name"] for t in sent["tools"]] == ["get_order"]
    assert (sent["model"], sent["max_tokens"], sent["temperature"], sent["tool_choice"]) == (
        "claude-haiku-4-5", 512, 0.2, {"type": "auto"})
    assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "user"]

    with tracer.Store(db, read_only=True) as store:
        [(replayed, attrs)] = store.sql("""SELECT session_id, attributes FROM spans WHERE parent_span_id IS NULL
                                           AND attributes LIKE '%flightrec.replay.of%'""")
    assert json.loads(attrs)["flightrec.replay.reconstructed_from"] == "OpenInference"
    trial = replay.reconstruct(replayed, 1, db=db)  # the re-run itself is flightrec's own call: exact
    assert trial.exact and trial.reconstructed_from is None and trial.request == sent


def test_run_an_openllmetry_062_call_with_a_new_system_prompt(memory, db):
    provider, exporter = memory
    openllmetry(provider)
    collect(db, exporter.get_finished_spans())
    fake = FakeModel([reply("Shipped yesterday.")])

    with fake.serve() as url:
        result = replay.run("tl-62", 2, replay.Edits(system="Answer in French."), db=db, model_url=url)
    assert result.reconstructed_from == "OpenLLMetry" and result.model_target == "url"
    assert any("thinking recorded without its signature" in n for n in result.notes)
    [sent] = fake.requests
    assert sent["system"] == "Answer in French."
    assert (sent["model"], sent["max_tokens"], sent["temperature"]) == ("claude-sonnet-4-5", 1024, 0.5)
    assert sent["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": QUESTION}]},
        {"role": "assistant", "content": [
            {"type": "tool_use", "id": "toolu_7", "name": "get_order", "input": {"order_id": "A-1"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_7", "content": '{"status": "shipped"}'}]}]
    assert sent["tools"] == [GET_ORDER, ESCALATE]
    assert result.trials[0].text == "Shipped yesterday."


def test_run_needs_what_the_recording_lacks_and_says_which_flag_gives_it(db):
    genai_otlp_json(db, max_tokens=False)

    refused = cli("run", "go-1", "--turn", "1", "--model-url", "http://127.0.0.1:9", "--db", db)
    assert refused.exit_code == 2
    line = one_line(refused.output)
    assert "without max_tokens, which the Messages API requires; pass --max-tokens N" in line
    with pytest.raises(replay.IncompleteRequestError, match=r"Edits\(max_tokens=…\)"):
        replay.run("go-1", 1, db=db, model_url="http://127.0.0.1:9")

    fake = FakeModel([reply("Shipped.")])
    with fake.serve() as url:
        result = cli("run", "go-1", "--turn", "1", "--model-url", url, "--max-tokens", "256", "--db", db)
    assert result.exit_code == 0, result.output
    assert fake.requests[0]["max_tokens"] == 256
    assert [t["name"] for t in fake.requests[0]["tools"]] == ["get_order", "escalate_to_human"]


def test_sdk_spans_replay_without_tools_and_say_so(memory, db):
    provider, exporter = memory
    telemetry = {"tracer_provider": provider, "traces": {"content_mode": "content"}, "conversation_id": "sdk-1"}
    run_agent(FakeAPI().client(open_telemetry=telemetry))
    collect(db, exporter.get_finished_spans())
    fake = FakeModel([reply("Shipped.")])

    with fake.serve() as url:
        result = cli("run", "sdk-1", "--turn", "2", "--model-url", url, "--db", db)
    assert result.exit_code == 0, result.output
    assert f"{MARK} (the anthropic SDK's own spans)" in result.output
    assert ("the tool definitions were not recorded, so the request offers no tools; add them with --add-tool JSON "
            "(the Anthropic API refuses a history with tool_use blocks and no tools)") in result.output
    [sent] = fake.requests
    assert "tools" not in sent and sent["system"] == "You help customers." and sent["max_tokens"] == 512
    assert sent["messages"][1]["content"][-1]["type"] == "tool_use"

    fake = FakeModel([reply("Shipped.")])
    with fake.serve() as url:
        added = cli("run", "sdk-1", "--turn", "2", "--model-url", url, "--add-tool", json.dumps(GET_ORDER),
                    "--db", db)
    assert added.exit_code == 0, added.output
    assert fake.requests[0]["tools"] == [GET_ORDER]


def test_a_foreign_session_with_no_model_named_says_to_name_one(memory, db):
    provider, exporter = memory
    openllmetry(provider)
    collect(db, exporter.get_finished_spans())

    result = cli("run", "tl-62", "--turn", "2", "--db", db)
    assert result.exit_code == 2
    line = one_line(result.output)
    assert "recorded by other instrumentation (OpenLLMetry), and no registered agent answers for it" in line
    assert "--model-url URL" in line


def test_a_beta_call_is_resent_with_its_beta_header(memory, db):
    provider, exporter = memory
    openinference(provider, betas=["context-management-2025-06-27"])
    collect(db, exporter.get_finished_spans())
    fake = FakeModel([reply("Shipped.")])
    headers: list[str | None] = []

    def client(origin: replay.Origin, seed: int) -> anthropic.Anthropic:
        hooks = {"request": [lambda r: headers.append(r.headers.get("anthropic-beta"))]}
        return anthropic.Anthropic(api_key="fake", http_client=httpx2.Client(transport=fake.transport(),
                                                                               event_hooks=hooks))

    rec = replay.reconstruct("oi-1", 2, db=db)
    assert rec.betas == ["context-management-2025-06-27"] and "betas" not in rec.request
    replay.run("oi-1", 2, db=db, client_factory=client)
    assert headers == ["context-management-2025-06-27"]


def test_flightrecs_own_beta_call_is_resent_with_its_betas():
    recorder = tracer.Recorder()  # $FLIGHTREC_DB, the test's own
    model = FakeModel([reply("Hi.")])
    with recorder.session(agent="beta-bot") as s:
        client = recorder.instrument(model.client())
        with s.turn():
            client.beta.messages.create(model="claude-haiku-4-5", max_tokens=64, betas=["files-api-2025-04-14"],
                                        messages=[{"role": "user", "content": "Hi"}])
    recorder.shutdown()
    fake = FakeModel([reply("Hi again.")])
    headers: list[str | None] = []

    def client_for(origin: replay.Origin, seed: int) -> anthropic.Anthropic:
        hooks = {"request": [lambda r: headers.append(r.headers.get("anthropic-beta"))]}
        return anthropic.Anthropic(api_key="fake", http_client=httpx2.Client(transport=fake.transport(),
                                                                               event_hooks=hooks))

    rec = replay.reconstruct(s.id, 1)
    assert rec.exact and rec.betas == ["files-api-2025-04-14"]
    replay.run(s.id, 1, client_factory=client_for)
    assert headers == ["files-api-2025-04-14"]


# -- verify ---------------------------------------------------------------------------------------


def test_verify_lists_reconstructed_calls_apart_without_failing(memory, db):
    provider, exporter = memory
    openllmetry(provider)
    collect(db, exporter.get_finished_spans())

    result = cli("verify", "--db", db)
    assert result.exit_code == 0, result.output
    assert "0/1 calls rebuilt exactly" in result.output
    assert "1 calls kept no exact request (recorded by other instrumentation" in result.output
    assert "have no hash to verify (not failures)" in result.output
    assert "reconstructs them from what was recorded" in result.output


# -- the dashboard --------------------------------------------------------------------------------


def test_the_replay_page_marks_a_reconstructed_request_and_what_it_lacks(db, monkeypatch):
    from dashboard._source import DB_ENV, MODE_ENV
    from tests.dashboard.conftest import app, drawn, no_exceptions

    genai_otlp_json(db, max_tokens=False)
    monkeypatch.setenv(DB_ENV, db)
    monkeypatch.setenv(MODE_ENV, "read_only")
    at = app("replay", id="go-1", turn="1")
    no_exceptions(at)
    marked = drawn(at)
    assert "Reconstructed from semantic conventions (the OpenTelemetry GenAI conventions)" in marked
    assert "no recorded hash to verify" in marked
    assert "max_tokens was not recorded" in marked and "OpenAI function shape" in marked
    assert "matches the hash recorded" not in marked


def test_a_foreign_call_is_reconstructed_through_the_serve_that_holds_the_store(tmp_path):
    # Users look at traces while their collector runs: the parts are read through serve's read API.
    from replay._reconstruct import reconstruct_in
    from tests.tracer.test_foreign_shapes import Producer, genai_chat, send
    from tracer._holder import find_holder
    from tracer._read_api import ReadApi

    db = str(tmp_path / "held.duckdb")
    p = Producer()
    p.span("sdk", "chat", 0, 5, {**genai_chat("c1", "stop"), "gen_ai.conversation.id": "held",
                                 "gen_ai.request.max_tokens": 256})
    with Collector(db, port=0) as collector:
        send(collector, p.take())
        api = ReadApi(db, collector_url=collector.url).start()
        try:
            rebuilt = reconstruct_in(tracer.ServedStore(db, find_holder(db, os.getpid())), "held", 1)
        finally:
            api.close()
    assert rebuilt.reconstructed_from == "the OpenTelemetry GenAI conventions" and rebuilt.missing == []
    assert rebuilt.request["messages"] == [{"role": "user", "content": [
        {"type": "text", "text": "Book me a trip to Rome"}]}]
