"""Spans the store could not take as sent: rejected with a reason when they can never be stored,
else normalised (or a value dropped) and stored, with what was changed named in the answer; over
OTLP and through the embedded exporter alike (tracer/_validate.py)."""

from __future__ import annotations

import json

import pytest
from google.protobuf import json_format
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.trace import TracerProvider

import tracer
from tests.tracer.test_collector import post
from tests.tracer.test_foreign_shapes import Producer, genai_chat
from tracer._collector import Collector
from tracer._export import StoreSpanProcessor
from tracer._ingest import Ingestor, SpanRecord
from tracer._validate import BAD_BODY

JSON = "application/json"
TRACE = "5b8efff798038103d269b633813fc60c"
T0 = 1_700_000_000_000_000_000


def span(span_id: str, name: str, attributes: dict, *, scope: str = "flightrec", start: int = T0,
         trace: str = TRACE) -> dict:
    """One OTLP/JSON request holding one span; ``attributes`` maps keys to OTLP/JSON ``AnyValue``s."""
    return {"resourceSpans": [{"scopeSpans": [{"scope": {"name": scope}, "spans": [{
        "traceId": trace, "spanId": span_id, "name": name, "startTimeUnixNano": str(start),
        "endTimeUnixNano": str(start + 5_000_000),
        "attributes": [{"key": k, "value": v} for k, v in attributes.items()]}]}]}]}


def merged(*requests: dict) -> dict:
    spans = [s for r in requests for s in r["resourceSpans"]]
    return {"resourceSpans": spans}


def export(collector: Collector, request: dict) -> tuple[int, ExportTraceServiceResponse | bytes]:
    """Posts an OTLP/JSON request: the status, and the response (parsed when 200, else the text)."""
    status, body = post(collector.url, json.dumps(request).encode(), JSON)
    if status != 200:
        return status, body
    return status, json_format.Parse(body, ExportTraceServiceResponse())


@pytest.fixture
def collector(tmp_path):
    with Collector(str(tmp_path / "v.duckdb"), port=0) as c:
        yield c


def s(text: str) -> dict:
    return {"stringValue": text}


def i(number: int | str) -> dict:
    return {"intValue": str(number)}


def test_mistyped_attributes_are_coerced_or_dropped_and_the_spans_stored_and_named_in_the_answer(collector):
    session = {"gen_ai.conversation.id": s("typed")}
    request = merged(
        span("aaaaaaaaaaaaaaa1", "execute_tool lookup", {
            **session, "gen_ai.operation.name": s("execute_tool"), "gen_ai.tool.name": {},  # null tool name
            "flightrec.turn.index": s("2"), "flightrec.tool.retries": s("lots"),
            "gen_ai.tool.call.arguments": {"kvlistValue": {"values": [{"key": "q", "value": s("x")}]}}}),
        span("aaaaaaaaaaaaaaa2", "chat", {
            **session, "gen_ai.operation.name": s("chat"), "flightrec.turn.index": i(2),
            "gen_ai.usage.input_tokens": s("12"), "gen_ai.usage.output_tokens": i(2**62),
            "flightrec.cost.usd": {"doubleValue": "NaN"}, "gen_ai.request.model": {"arrayValue": {"values": [s("m")]}},
            "gen_ai.response.finish_reasons": s("end_turn"), "http.response.status_code": i(2**40),
            "flightrec.decision.context.window": {"doubleValue": 200000.0}}),
    )
    status, response = export(collector, request)
    assert status == 200
    assert response.partial_success.rejected_spans == 0  # a warning: every span was stored
    message = response.partial_success.error_message
    for named in ("gen_ai.tool.name: empty, dropped", "flightrec.tool.retries: not an integer",
                  "gen_ai.usage.output_tokens: not a count from 0 to 2147483647, dropped",
                  "flightrec.cost.usd: not a cost", "gen_ai.request.model: not a string",
                  "http.response.status_code: not an integer"):
        assert named in message, message
    assert "input_tokens" not in message and "finish_reasons" not in message  # coerced, nothing lost
    store = collector.store
    assert store.sql("SELECT tool_name, turn_index, retries, arguments FROM tool_calls") == [
        ("execute_tool lookup", 2, None, '{"q": "x"}')]
    assert store.sql("SELECT input_tokens, output_tokens, cost_usd, model, stop_reason, http_status, ctx_window "
                     "FROM llm_calls") == [(12, None, None, None, "end_turn", None, 200000)]
    assert store.sql("SELECT input_tokens, llm_calls, tool_calls FROM sessions") == [(12, 1, 1)]


def test_a_span_past_2262_is_rejected_alone_and_a_request_of_nothing_else_is_answered_400(collector):
    good = span("bbbbbbbbbbbbbbb1", "fine", {})
    late = span("bbbbbbbbbbbbbbb2", "late", {}, start=2**63)
    status, response = export(collector, merged(good, late))
    assert status == 200 and response.partial_success.rejected_spans == 1
    assert "start or end time outside 0 to 2^63 - 1 ns" in response.partial_success.error_message
    status, body = export(collector, late)
    assert status == 400 and b"outside 0 to 2^63 - 1 ns (1970 to 2262)" in body
    assert collector.store.sql("SELECT name FROM spans") == [("fine",)]


def test_a_session_stays_writable_when_its_counts_would_overflow(collector):
    p = Producer()
    for k, tokens in enumerate([2**31 - 1, 2**31 - 1, 2**62, 2**63 - 1]):
        p.span("sdk", "chat", k * 10, k * 10 + 5, {**genai_chat(f"c{k}", "stop", history=k),
                                                   "gen_ai.conversation.id": "big",
                                                   "gen_ai.usage.input_tokens": tokens})
    status, body = post(collector.url, encode_spans(p.take()).SerializeToString())
    assert status == 200 and b"not a count" in body
    p.span("sdk", "chat", 50, 55, {**genai_chat("c5", "stop", history=5), "gen_ai.conversation.id": "big",
                                   "gen_ai.usage.input_tokens": 7})
    assert post(collector.url, encode_spans(p.take()).SerializeToString())[0] == 200
    assert collector.store.sql("SELECT llm_calls, input_tokens FROM sessions") == [(5, 2 * (2**31 - 1) + 7)]


def test_a_request_body_that_is_not_a_json_object_stores_its_call_as_not_rebuildable(collector):
    call = {"gen_ai.operation.name": s("chat"), "gen_ai.conversation.id": s("bodies"),
            "flightrec.request.sha256": s("0" * 64), "gen_ai.usage.output_tokens": i(3)}
    status, response = export(collector, merged(
        span("ccccccccccccccc1", "chat", {**call, "flightrec.request.body": s('[{"messages": 1}')}),
        # Cut inside: it looks like an object from its ends, and only ingest finds out.
        span("ccccccccccccccc2", "chat", {**call, "flightrec.request.body": s('{"messages":[{"a":}')}),
        span("ccccccccccccccc3", "chat", {**call, "flightrec.request.body": i(5)}),
    ))
    assert status == 200 and response.partial_success.rejected_spans == 0
    assert f"flightrec.request.body: {BAD_BODY}, so the call is stored without it, as not rebuildable (2)" \
        in response.partial_success.error_message
    result = collector.store.verify_requests()
    assert result.failures == [] and result.total == 3
    assert {f["reason"] for f in result.not_rebuildable} == {f"its flightrec.request.body is {BAD_BODY}"}
    assert collector.store.sql("SELECT output_tokens FROM sessions") == [(9,)]


def test_the_embedded_exporter_drops_only_the_unstorable_span_and_repairs_text(tmp_path):
    db = str(tmp_path / "e.duckdb")
    processor = StoreSpanProcessor(lambda: tracer.Store(db))
    provider = TracerProvider()
    provider.add_span_processor(processor)
    t = provider.get_tracer("app")
    t.start_span("late", start_time=2**63).end(end_time=2**63 + 1)
    t.start_span("odd\ud800", attributes={"gen_ai.conversation.id": "e", "note": "x\udc80y"}).end()
    t.start_span("fine", attributes={"gen_ai.conversation.id": "e", "gen_ai.usage.input_tokens": "12"}).end()
    assert processor.force_flush()
    assert processor.stats.written == 2 and processor.stats.drop_reasons == {
        "start or end time outside 0 to 2^63 - 1 ns (1970 to 2262)": 1}
    provider.shutdown()
    with tracer.Store(db, read_only=True) as store:
        rows = store.sql("SELECT name, attributes FROM spans ORDER BY name")
    assert [r[0] for r in rows] == ["fine", "odd\ufffd"]
    assert "x\ufffdy" in rows[1][1]


def test_the_store_answers_a_value_its_schema_refuses_as_unstorable_not_as_a_retry(tmp_path):
    # What validation exists to prevent, written straight to the store: a tool call with no name.
    record = SpanRecord(trace_id=TRACE, span_id="ddddddddddddddd1", parent_span_id=None, name="execute_tool",
                        kind="INTERNAL", start_ns=T0, end_ns=T0 + 1, status_code="OK", status_message=None,
                        attributes={"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": None})
    with tracer.Store(str(tmp_path / "u.duckdb")) as store:
        with pytest.raises(tracer.UnstorableError, match="NOT NULL"):
            store.write(Ingestor().build([record]))
        store.write(Ingestor().build([SpanRecord(**{**record.__dict__, "attributes": {}})]))  # still writable
        assert store.sql("SELECT count(*) FROM spans") == [(1,)]


def test_the_store_failing_is_answered_503_retry_and_a_value_it_refuses_400_final(collector, monkeypatch):
    def failing(error: Exception):
        def write(batch):
            raise error
        return write

    request = span("eeeeeeeeeeeeeee1", "fine", {})
    monkeypatch.setattr(collector.store, "write", failing(tracer.StoreError("disk full")))
    status, body = export(collector, request)
    assert status == 503 and b"disk full" in body and b"retry" in body
    monkeypatch.setattr(collector.store, "write", failing(tracer.UnstorableError("NOT NULL constraint failed")))
    status, body = export(collector, span("eeeeeeeeeeeeeee2", "fine", {}))
    assert status == 400 and b"would not be if sent again" in body


def test_a_session_at_its_counters_bounds_stays_writable_and_its_counts_stay_at_the_bound(collector):
    # Bounded calls reach the bounds only after about 2^31 spans: set the counts there directly.
    p = Producer()
    p.span("sdk", "chat", 0, 5, {**genai_chat("c0", "stop"), "gen_ai.conversation.id": "full"})
    assert post(collector.url, encode_spans(p.take()).SerializeToString())[0] == 200
    collector.store._con.execute(f"UPDATE sessions SET llm_calls = {2**31 - 1}, input_tokens = {2**63 - 10}")
    p.span("sdk", "chat", 10, 15, {**genai_chat("c1", "stop", history=1), "gen_ai.conversation.id": "full"})
    assert post(collector.url, encode_spans(p.take()).SerializeToString())[0] == 200
    assert collector.store.sql("SELECT llm_calls, input_tokens FROM sessions") == [(2**31 - 1, 2**63 - 1)]
