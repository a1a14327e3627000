"""A chat span's attributes are stored once (what ``llm_calls`` holds is not kept in ``spans``) and read
back exactly as recorded, from stores written this way and from stores written before."""

from __future__ import annotations

import json

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import tracer
from tests.tracer.fakes import FakeAPI, run_agent
from tracer import _attributes as A
from tracer import _chat_attributes as chat
from tracer._holder import find_holder
from tracer._ingest import Ingestor, SpanRecord
from tracer._read_api import ReadApi

_READ = f"""SELECT s.span_id, s.scope, s.attributes, l.span_id IS NOT NULL, {chat.call_columns("l")}
            FROM spans s LEFT JOIN llm_calls l ON l.span_id = s.span_id AND l.trace_id = s.trace_id"""


def _as_stored(attributes) -> dict:
    """A finished span's attributes as JSON gives them back, less the content ingest moves out."""
    return json.loads(json.dumps({k: v for k, v in attributes.items() if k not in A.CONTENT_ATTRIBUTES}))


@pytest.fixture
def recorded(tmp_path):
    """A store with sessions of every kind of chat span (retried errors, streamed, a call outside any
    session), and the attributes each span was recorded with, by span id."""
    db = str(tmp_path / "s.duckdb")
    rec = tracer.Recorder(db)
    spans = InMemorySpanExporter()
    rec.provider.add_span_processor(SimpleSpanProcessor(spans))
    with rec.session(agent="support"):
        run_agent(rec.instrument(FakeAPI(errors=[529, 500]).client(max_retries=2)))
    with rec.session(agent="support"):
        run_agent(rec.instrument(FakeAPI().client()), stream=True)
    run_agent(rec.instrument(FakeAPI().client()), max_turns=1)  # no session: the chat span is a root
    rec.shutdown()
    return db, {f"{s.context.span_id:016x}": _as_stored(s.attributes) for s in spans.get_finished_spans()}


def test_every_span_reads_back_as_recorded_and_chat_spans_keep_only_the_rest(recorded):
    db, original = recorded
    with tracer.Store(db, read_only=True) as store:
        rows = store.sql(_READ)
        assert {r[0] for r in rows} == set(original)
        slim = 0
        for span_id, scope, text, has_call, *values in rows:
            read = chat.read(scope, text, values if has_call else None)
            assert list(read.items()) == list(original[span_id].items())  # in order, and of the same types:
            assert json.dumps(read) == json.dumps(original[span_id])  # 1 == 1.0 == True in Python
            if has_call:
                assert store.call_parts(span_id).attribute_keys == list(original[span_id])
                slim += A.OPERATION not in json.loads(text)
        calls = sum(1 for a in original.values() if a.get(A.OPERATION) == "chat")
        assert calls == 7 and slim == calls  # every chat span of capture is stored in part (errors, streams)
        assert store.sql("SELECT count(*) FROM llm_calls WHERE status = 'error'")[0][0] == 2
        # The call made outside a session is its own session's run: its attributes read back whole.
        root = next(r for r in rows if r[3] and original[r[0]].get(A.CONVERSATION_ID) is None)
        (run,) = store.session_runs(store.sql("SELECT session_id FROM spans WHERE span_id = ?", [root[0]])[0][0])
        assert run.attributes == original[root[0]]
        assert json.loads(root[2]) == {k: v for k, v in original[root[0]].items()
                                       if k in (A.PROVIDER, A.SERVER_ADDRESS, A.SERVER_PORT, A.REQUEST_MAX_TOKENS,
                                                A.CACHE_WRITE_1H)}
        verified = store.verify_requests()
        assert verified.total == calls and verified.exact == calls and not verified.failures


def test_a_store_written_before_reads_the_same(recorded):
    db, original = recorded
    with tracer.Store(db) as store:  # the layout of earlier versions: every chat span's attributes whole
        for (span_id,) in store.sql("SELECT span_id FROM llm_calls"):
            store.sql("UPDATE spans SET attributes = ? WHERE span_id = ?", [json.dumps(original[span_id]), span_id])
        assert store.sql("SELECT count(*) FROM spans WHERE attributes LIKE '%\"chat\"%'")[0][0] == 7
        for span_id, scope, text, has_call, *values in store.sql(_READ):
            read = chat.read(scope, text, values if has_call else None)
            assert list(read.items()) == list(original[span_id].items())


def _chat_span(**attributes) -> SpanRecord:
    return SpanRecord(trace_id="1" * 32, span_id="2" * 16, parent_span_id=None, name="chat m", kind="CLIENT",
                      start_ns=1, end_ns=2, status_code="OK", status_message=None, scope="flightrec",
                      attributes={A.OPERATION: "chat", A.REQUEST_MODEL: "m", A.ATTEMPT: 0, A.REQUEST_STREAM: False,
                                  A.REQUEST_SHA256: "ab" * 32, A.TOOLS_AVAILABLE: ["get_order"], **attributes})


@pytest.mark.parametrize("odd", [
    {A.COST_USD: 0},  # an int where llm_calls keeps a DOUBLE: it would come back as 0.0
    {A.ATTEMPT: "1"},  # a string where llm_calls keeps an INTEGER
    {A.RESPONSE_FINISH_REASONS: ["end_turn", "max_tokens"]},  # llm_calls keeps the first only
    {A.USAGE_INPUT: 10, "flightrec.custom": 1, A.USAGE_OUTPUT: 2},  # an unknown key between held ones
])
def test_attributes_llm_calls_would_change_are_stored_whole(tmp_path, odd):
    span = _chat_span(**odd)
    with tracer.Store(tmp_path / "s.duckdb") as store:
        store.write(Ingestor().build([span]))
        ((span_id, scope, text, has_call, *values),) = store.sql(_READ)
        assert json.loads(text) == span.attributes
        assert chat.read(scope, text, values) == span.attributes


def test_the_read_api_gives_a_root_chat_span_whole(recorded):
    db, original = recorded
    read_api = ReadApi(db, collector_url="http://127.0.0.1:4318").start()
    try:
        store = read_api.store
        sid = store.sql("SELECT session_id FROM spans WHERE parent_span_id IS NULL AND name LIKE 'chat %'")[0][0]
        with tracer.ServedStore(read_api.db_path, find_holder(read_api.db_path, None)) as served:
            (run,) = served.session_runs(sid)
            assert run.attributes == original[run.span_id]
            assert served.call_parts(run.span_id).attribute_keys == list(original[run.span_id])
    finally:
        read_api.close()


def test_a_store_with_content_keys_of_both_lengths_rebuilds_every_request(tmp_path, monkeypatch):
    db = str(tmp_path / "s.duckdb")

    def record() -> None:
        rec = tracer.Recorder(db)
        with rec.session(agent="support"):
            run_agent(rec.instrument(FakeAPI().client()))
        rec.shutdown()

    monkeypatch.setattr("tracer._ingest.content_key", tracer.sha256_hex)  # as versions before 7 keyed content
    record()
    monkeypatch.undo()
    record()  # the same system prompt, tools and first message again, now under 128-bit keys
    with tracer.Store(db, read_only=True) as store:
        lengths = store.sql("SELECT length(hash), count(*) FROM content GROUP BY 1 ORDER BY 1")
        assert [n for n, _ in lengths] == [32, 64]
        assert store.sql("SELECT DISTINCT length(node) FROM message_chain ORDER BY 1") == [(32,), (64,)]
        verified = store.verify_requests()
        assert verified.total == 4 and verified.exact == 4
