"""Outcomes recorded after the fact (the API, the CLI, a span from any process) and the review queue."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import tracer
from tests.tracer.fakes import FakeAPI, run_agent
from tests.tracer.test_collector import post
from tracer._cli import main
from tracer._collector import Collector


def _session(db: str, session_id: str = "conv-1") -> tracer.SessionSummary:
    rec = tracer.Recorder(db)
    with rec.session("support", session_id=session_id):
        run_agent(rec.instrument(FakeAPI().client()))
    rec.shutdown()
    with tracer.Store(db) as store:
        return store.get_session(session_id)


def test_an_outcome_from_the_recorder_is_the_sessions_outcome_not_a_span_of_it(tmp_path):
    db = str(tmp_path / "t.duckdb")
    before = _session(db)
    rec = tracer.Recorder(db)
    with rec.session("support", session_id="conv-2"):  # inside another session: still the named one's outcome
        rec.outcome("conv-1", resolved=False, note="ticket reopened")
    rec.outcome("conv-1", score=0.25, source="thumbs")
    rec.shutdown()
    with tracer.Store(db) as store:
        after = store.get_session("conv-1")
        assert after == before  # no span joined it: its end, counts and cost are as they were
        assert store.sql("SELECT count(*) FROM spans WHERE name = 'flightrec.outcome'") == [(0,)]
        newest, first = store.outcomes("conv-1")
        assert (first.resolved, first.score, first.note, first.source) == (False, None, "ticket reopened", "api")
        assert (newest.resolved, newest.score, newest.source) == (None, 0.25, "thumbs")
        assert store.outcomes("conv-2") == []


@pytest.mark.parametrize("kwargs, message", [
    ({}, "an outcome needs resolved \\(true or false\\) or a score from 0 to 1"),
    ({"score": 1.5}, "an outcome's score must be a number from 0 to 1, got 1.5"),
    ({"score": True}, "an outcome's score must be a number from 0 to 1, got True"),
])
def test_a_bad_outcome_is_refused_where_it_is_made(kwargs, message):
    rec = tracer.Recorder(":memory:")
    with pytest.raises(tracer.ConfigError, match=message):
        rec.outcome("conv-1", **kwargs)
    rec.shutdown()
    with tracer.Store(":memory:") as store, pytest.raises(tracer.ConfigError, match=message):
        store.record_outcome("conv-1", **kwargs)  # the same rules, before the session is looked up


def _outcome_spans(**attributes) -> list:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    provider.get_tracer("shop").start_span("thumbs", attributes=attributes).end()
    return list(memory.get_finished_spans())


def test_an_outcome_span_from_another_process_over_otlp_is_stored_once_and_a_bad_one_is_rejected(tmp_path):
    db = str(tmp_path / "t.duckdb")
    _session(db)
    good = _outcome_spans(**{"gen_ai.conversation.id": "conv-1", "flightrec.outcome.resolved": True,
                             "flightrec.outcome.source": "ticket"})
    with Collector(db, port=0) as collector:
        body = encode_spans(good).SerializeToString()
        assert post(collector.url, body)[0] == 200
        assert post(collector.url, body)[0] == 200  # a retry of the same span
        for attributes, why in [
            ({"flightrec.outcome.resolved": True}, "an outcome that names no session"),
            ({"flightrec.outcome.session_id": "conv-1", "flightrec.outcome.score": 7.0},
             "whose flightrec.outcome.score is not a number from 0 to 1"),
        ]:
            status, answer = post(collector.url, encode_spans(_outcome_spans(**attributes)).SerializeToString())
            assert status == 400, answer
            assert why in answer.decode()
        # One good and one bad in one request: a partial success that names the bad one's reason.
        mixed = _outcome_spans(**{"flightrec.outcome.session_id": "conv-1", "flightrec.outcome.score": 0.0}) + \
            _outcome_spans(**{"flightrec.outcome.resolved": "perhaps", "flightrec.outcome.session_id": "conv-1"})
        status, answer = post(collector.url, encode_spans(mixed).SerializeToString())
        assert status == 200
        partial = ExportTraceServiceResponse.FromString(answer).partial_success
        assert partial.rejected_spans == 1 and "flightrec.outcome.resolved is not a boolean" in partial.error_message
    with tracer.Store(db) as store:
        rows = store.outcomes("conv-1")
        assert [(o.resolved, o.score, o.source) for o in rows] == [(None, 0.0, "otlp"), (True, None, "ticket")]
        assert rows[1].outcome_id == f"{good[0].context.trace_id:032x}{good[0].context.span_id:016x}"


def test_flightrec_outcome_records_with_the_actor_and_says_what_is_wrong(tmp_path):
    db = str(tmp_path / "t.duckdb")
    sid = _session(db).session_id
    result = CliRunner().invoke(main, ["outcome", sid[:8], "--unresolved", "--score", "0.2", "--note", "refund missing",
                                       "--actor", "ana", "--db", db])
    assert result.exit_code == 0, result.output
    assert result.output == f"Session {sid}: unresolved, score 0.2, recorded by ana.\n"
    with tracer.Store(db) as store:
        (o,) = store.outcomes(sid)
        assert (o.resolved, o.score, o.note, o.source, o.actor) == (False, 0.2, "refund missing", "cli", "ana")
        (entry,) = store.audit_entries(action="outcome")
        assert (entry.actor, entry.target, entry.via, entry.detail) == ("ana", sid, "cli",
                                                                        {"resolved": False, "score": 0.2})
    runner = CliRunner()
    nothing = runner.invoke(main, ["outcome", sid, "--db", db])
    assert nothing.exit_code == 2 and "give --resolved or --unresolved, or --score" in nothing.output
    unknown = runner.invoke(main, ["outcome", "no-such", "--resolved", "--db", db])
    assert unknown.exit_code == 2 and "no session 'no-such'" in unknown.output and "traces list" in unknown.output
    scale = runner.invoke(main, ["outcome", sid, "--score", "5", "--db", db])
    assert scale.exit_code == 2 and "5.0 is not in the range 0<=x<=1" in scale.output


def test_the_review_queue_keeps_why_a_session_came_and_a_review_replaces_the_last(tmp_path):
    db = str(tmp_path / "t.duckdb")
    a, b = _session(db, "conv-a").session_id, _session(db, "conv-b").session_id
    with tracer.Store(db) as store:
        assert store.queue_reviews([a, a], "alert") == 1
        assert store.queue_reviews([a, b], "sample") == 1  # a stays queued by its alert
        assert [(r.session_id, r.queued_by, r.verdict) for r in store.reviews(pending=True)] == [
            (a, "alert", None), (b, "sample", None)]
        store.review_session(a, "bad", category="wrong tool", note="looked up the wrong order", actor="bo")
        again = store.review_session(a, "good", actor="cy")
        assert (again.queued_by, again.verdict, again.category, again.reviewer) == ("alert", "good", None, "cy")
        assert [r.session_id for r in store.reviews(pending=True)] == [b]
        assert store.reviews(pending=False) == [again]
        assert [e.detail["verdict"] for e in store.audit_entries(action="review")] == ["good", "bad"]
        with pytest.raises(tracer.ConfigError, match="verdict is good or bad, not 'meh'"):
            store.review_session(b, "meh")
        with pytest.raises(tracer.ConfigError, match="queued_by 'later' is not one of sample, alert, score, hand"):
            store.queue_reviews([b], "later")
        with pytest.raises(tracer.UnknownSessionError):
            store.review_session("no-such", "good")
        store.record_outcome(a, resolved=True)
        store.delete_session(a)  # what was said of a session goes with it
        for table in ("reviews", "session_outcomes"):
            assert store.sql(f"SELECT count(*) FROM {table} WHERE session_id = ?", [a]) == [(0,)]
