"""Every session says where it comes from: production, an eval run's trial, a replay or a fork.

Derived at ingest from the session span's marks, the same embedded and through the collector, and
filled in by migration 10 for a store recorded before it. A session still running has its origin
from its first turn or call: the session span, which ends last, is not waited for.
"""

from __future__ import annotations

import json

import duckdb
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import tracer
from tests.tracer.fakes import FakeAPI, run_agent
from tests.tracer.test_collector import post
from tracer._collector import Collector
from tracer._ingest import Batch, Ingestor, from_readable

_ROW = "SELECT origin, eval_run_id, eval_case_id, source_session_id, route, tags FROM sessions WHERE session_id = ?"


def _record(rec: tracer.Recorder) -> dict[str, str]:
    """One session of each origin (the replay marks are replay's own session attributes); their ids by origin."""
    ids: dict[str, str] = {}
    with rec.session("support", **{"flightrec.route": "refunds", "flightrec.tags": ["pro", "mobile"]}) as s:
        run_agent(rec.instrument(FakeAPI().client()))
    ids["production"] = s.id
    with tracer.eval_trial("run-1", "refund-shoes", 2), rec.session("support", **{"flightrec.scenario": "lost"}) as s:
        run_agent(rec.instrument(FakeAPI().client()))
    ids["eval"] = s.id
    for kind in ("run", "fork"):
        marks = {"flightrec.replay.kind": kind, "flightrec.replay.session": ids["production"],
                 "flightrec.replay.of": f"{ids['production']}:0123456789abcdef"}
        with rec.session("support", **marks) as s:
            run_agent(rec.instrument(FakeAPI().client()))
        ids["replay" if kind == "run" else "fork"] = s.id
    # Outside the eval trial's context, a session is production again.
    with rec.session("support") as s:
        run_agent(rec.instrument(FakeAPI().client()))
    ids["after"] = s.id
    return ids


_EXPECTED = {
    "production": ("production", None, None, None, "refunds", ["pro", "mobile"]),
    "eval": ("eval", "run-1", "refund-shoes", None, "lost", None),
    "replay": ("replay", None, None, "PROD", None, None),
    "fork": ("fork", None, None, "PROD", None, None),
    "after": ("production", None, None, None, None, None),
}


def _check(store: tracer.Store, ids: dict[str, str]) -> None:
    for name, expected in _EXPECTED.items():
        want = tuple(ids["production"] if v == "PROD" else v for v in expected)
        assert store.sql(_ROW, [ids[name]])[0] == want, name


def test_each_origin_is_derived_in_an_embedded_store(tmp_path):
    db = str(tmp_path / "s.duckdb")
    rec = tracer.Recorder(db)
    ids = _record(rec)
    rec.shutdown()
    with tracer.Store(db, read_only=True) as store:
        _check(store, ids)
        assert store.sql("SELECT count(*) FROM sessions WHERE origin = 'production'")[0][0] == 2


def _recorded_spans() -> tuple[dict[str, str], list]:
    """The sessions of ``_record``, as the SDK handed their spans on: in the order they ended."""
    memory = InMemorySpanExporter()
    rec = tracer.Recorder(":memory:")
    rec.provider.add_span_processor(SimpleSpanProcessor(memory))
    ids = _record(rec)
    rec.shutdown()
    return ids, list(memory.get_finished_spans())


def test_each_origin_is_derived_through_the_collector_as_embedded(tmp_path):
    ids, spans = _recorded_spans()
    served = str(tmp_path / "served.duckdb")
    with Collector(served, port=0) as collector:
        # One request per span, root spans last as they end: the origin arrives after the turns.
        for span in spans:
            assert post(collector.url, encode_spans([span]).SerializeToString())[0] == 200
    with tracer.Store(served, read_only=True) as store:
        _check(store, ids)
    embedded = str(tmp_path / "embedded.duckdb")
    with tracer.Store(embedded) as store:
        store.write(Ingestor().build([from_readable(s) for s in spans], Batch()))
        _check(store, ids)


def test_a_running_session_has_its_origin_from_the_first_span_that_reaches_the_collector(tmp_path):
    ids, spans = _recorded_spans()
    expected = {ids[name]: row[0] for name, row in _EXPECTED.items()}
    seen: dict[str, list[str]] = {}
    with Collector(str(tmp_path / "served.duckdb"), port=0) as collector:
        for span in spans:  # in the order they ended: the session span of each last
            assert post(collector.url, encode_spans([span]).SerializeToString())[0] == 200
            sid = span.attributes["gen_ai.conversation.id"]
            ((origin,),) = collector.maintain(
                lambda store, sid=sid: store.sql("SELECT origin FROM sessions WHERE session_id = ?", [sid]))
            seen.setdefault(sid, []).append(origin)
    assert {sid: set(origins) for sid, origins in seen.items()} == {sid: {o} for sid, o in expected.items()}
    assert min(len(origins) for origins in seen.values()) >= 3  # a turn, a call and a tool span before the session's
    with tracer.Store(str(tmp_path / "served.duckdb"), read_only=True) as store:
        _check(store, ids)


def test_migration_10_fills_in_the_origin_of_an_older_store(tmp_path):
    db = str(tmp_path / "old.duckdb")
    rec = tracer.Recorder(db)
    ids = _record(rec)
    rec.shutdown()
    with tracer.Store(db) as store:  # the eval run's results name the trial's session
        store.save_eval_run(
            tracer.EvalRunRecord(run_id="run-1", started_ns=0, ended_ns=1, dataset="d", dataset_sha256="x",
                                 agent="support", settings={}, trials=1, seed=0, case_tags=[], cases=1,
                                 passed_trials=1, total_trials=1, mean_score=1.0, cost_usd=None, wall_s=0.1),
            [tracer.EvalResultRecord(run_id="run-1", case_id="refund-shoes", trial=2, session_id=ids["eval"], tags=[],
                                     passed=True, score=1.0, scores=[], error=None, status="ok", turns=1,
                                     cost_usd=None, latency_ms=None)])
    # The store as flightrec wrote it at schema version 9: without the columns, nor the eval marks on the spans.
    with duckdb.connect(db) as con:
        for column in ("origin", "eval_run_id", "eval_case_id", "source_session_id", "route", "tags",
                       "parent_session_id"):  # migration 11 adds the last
            con.execute(f"ALTER TABLE sessions DROP COLUMN {column}")
        # A merge patch removes the keys it sets to null (json_remove is DuckDB 2.0's).
        patch = json.dumps({f"flightrec.eval.{key}": None for key in ("run_id", "case_id", "trial")})
        con.execute("UPDATE spans SET attributes = json_merge_patch(attributes, ?)::VARCHAR "
                    "WHERE attributes IS NOT NULL",
                    [patch])
        assert con.execute("SELECT count(*) FROM spans WHERE attributes LIKE '%flightrec.eval%'").fetchone()[0] == 0
        for table in ("session_scores", "session_outcomes", "reviews"):  # migration 11's
            con.execute(f"DROP TABLE {table}")
        con.execute("DELETE FROM schema_migrations WHERE version >= 10")
    with tracer.Store(db) as store:
        _check(store, ids)


def test_other_instrumentation_names_the_route_and_tags_on_any_span_or_its_resource(tmp_path):
    from tests.tracer.test_foreign_shapes import Producer, genai_chat

    def conversation(p: Producer, name: str, root: dict, child: dict) -> None:
        top = p.open("app", "workflow", 0, {"gen_ai.conversation.id": name, **root})
        p.span("sdk", "chat", 1, 5, {**genai_chat("c", "stop"), **child}, parent=top)
        top.end(end_time=top.start_time + 10 * 1_000_000)

    labelled = Producer({"flightrec.route": "from-resource", "flightrec.tags": "fleet"})
    conversation(labelled, "on-resource", {}, {})
    conversation(labelled, "on-root", {"flightrec.route": "from-root"}, {"flightrec.route": "from-child"})
    plain = Producer()
    conversation(plain, "on-child", {}, {"flightrec.route": "from-child", "flightrec.tags": ["a", "b"],
                                         "flightrec.eval.run_id": "not-the-sessions"})
    with tracer.Store(str(tmp_path / "labels.duckdb")) as store:
        store.write(Ingestor().build([from_readable(s) for s in labelled.take() + plain.take()], Batch()))
        rows = store.sql("SELECT session_id, origin, route, tags FROM sessions ORDER BY session_id")
    assert rows == [
        ("on-child", "production", "from-child", ["a", "b"]),  # a child span names no origin
        ("on-resource", "production", "from-resource", ["fleet"]),
        ("on-root", "production", "from-root", ["fleet"]),  # the root's route wins; the resource adds tags
    ]
