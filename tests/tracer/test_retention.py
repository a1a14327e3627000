"""Retention: pruning old sessions or their content, deleting one session on request, and serve's
schedule. The store stays consistent (no reference dangles, nothing is left that nothing uses),
replay says "pruned", the writer makes the removals while serve runs, and bad input is one line."""

from __future__ import annotations

import json
import os
import threading
import time

import pytest
from click.testing import CliRunner

import tracer
from tests.tracer.fakes import FakeAPI, run_agent
from tests.tracer.test_store import locked_store  # noqa: F401  (fixture)
from tracer._cli import main
from tracer._collector import Collector
from tracer._holder import find_holder
from tracer._read_api import ReadApi
from tracer._retention import compact, parse_duration

NS_PER_DAY = 86_400 * 10**9


def record(rec: tracer.Recorder, *questions: str) -> list[str]:
    """One session per question (same system prompt and tools; equal questions share a chain prefix)."""
    ids = []
    for q in questions:
        with rec.session(agent="support") as s:
            run_agent(rec.instrument(FakeAPI().client()), q)
        ids.append(s.id)
    return ids


@pytest.fixture
def sessions(tmp_path) -> tuple[str, list[str]]:
    """A store of three sessions, oldest first: the first two ask the same question (their chains
    share nodes the first wrote), the third another; an alert seen in the first and third, one in
    the first alone, and an eval result of the first."""
    db = str(tmp_path / "r.duckdb")
    rec = tracer.Recorder(db)
    ids = record(rec, "Where is A-1?", "Where is A-1?", "Where is B-2?")
    rec.shutdown()
    with tracer.Store(db) as store:
        def alert(fp: str, sid: str) -> tuple[tracer.AlertRecord, str]:
            return tracer.AlertRecord(
                alert_id=fp * 10, fingerprint=fp * 64, detector="loop.calls", family="loops", severity="warning",
                title="a loop", agent="support", route=None, session_id=sid, turns=[1], session_ids=[sid],
                evidence={"arguments": {"order_id": "A-1"}}, status="open", first_seen_ns=1, last_seen_ns=len(sid),
                count=1), sid
        store.record_alerts([alert("a", ids[0]), alert("a", ids[2]), alert("b", ids[0])])
        store.save_eval_run(
            tracer.EvalRunRecord(run_id="run-1", started_ns=1, ended_ns=2, dataset="d", dataset_sha256="h",
                                 agent="support", settings={}, trials=1, seed=0, case_tags=[], cases=1,
                                 passed_trials=1, total_trials=1, mean_score=1.0, cost_usd=None, wall_s=1.0),
            [tracer.EvalResultRecord(run_id="run-1", case_id="c", trial=0, session_id=ids[0], tags=[], passed=True,
                                     score=1.0, scores=[], error=None, status="ok", turns=2, cost_usd=None,
                                     latency_ms=1.0)])
        assert tracer.reference_problems(store) == {}
    return db, ids


def end_of(store: tracer.Store, session_id: str) -> int:
    return store.sql("SELECT end_ns FROM sessions WHERE session_id = ?", [session_id])[0][0]


def test_durations_are_a_number_and_a_unit():
    assert parse_duration("30d") == 30 * NS_PER_DAY
    assert parse_duration("1.5h") == 5400 * 10**9
    assert parse_duration(" 2W ") == 14 * NS_PER_DAY
    for bad in ("30", "d", "30x", "-1d", "thirty days"):
        with pytest.raises(tracer.ConfigError, match="is not a duration: give a number and a unit, such as 30d"):
            parse_duration(bad)
    with pytest.raises(tracer.ConfigError, match="no time at all"):
        parse_duration("0d")


def test_content_expires_and_metadata_stays(sessions):
    db, ids = sessions
    with tracer.Store(db) as store:
        store._con.execute("""UPDATE turns SET events = '[{"name": "approval_requested", "time_ns": 7,
                                  "attributes": {"summary": "refund $549.00 on A-1003"}}]'
                              WHERE session_id = ? AND turn_index = 1""", [ids[0]])
        before = store.get_session(ids[0])
        result = store.prune_step(end_of(store, ids[0]) + 1, content_only=True)
        assert (result.sessions, result.llm_calls, result.tool_calls, result.more) == (1, 2, 1, False)
        # The second session asks the same question: the nodes the first wrote stay, now the second's.
        assert result.chain_nodes == 0 and result.content == 0
        assert store.sql("SELECT count(*) FROM message_chain WHERE session_id = ?", [ids[0]]) == [(0,)]
        assert tracer.reference_problems(store) == {}
        after = store.get_session(ids[0])
        assert after == before.model_copy(update={"status_reason": None})  # tokens, costs, counts, status
        assert store.sql("SELECT events FROM turns WHERE session_id = ? AND turn_index = 1", [ids[0]]) == \
            [('[{"name":"approval_requested","time_ns":7}]',)]
        calls = store.sql("""SELECT action, tools_chosen, input_tokens, cost_usd, request_sha256, reasoning,
                                    response_body, request_params, messages_ref, system_ref, tool_refs
                             FROM llm_calls WHERE session_id = ? ORDER BY start_ns""", [ids[0]])
        assert [c[:2] for c in calls] == [("tool_use", ["get_order"]), ("final", [])]
        assert all(c[2] and c[3] and c[4] for c in calls) and all(v is None for c in calls for v in c[5:])
        assert store.sql("SELECT arguments, result, args_key, outcome_key FROM tool_calls WHERE session_id = ?",
                         [ids[0]]) == [(None, None, None, None)]
        verify = store.verify_requests()
        assert (verify.total, verify.exact, verify.failures) == (6, 4, [])
        assert {p["session_id"] for p in verify.pruned} == {ids[0]} and len(verify.pruned) == 2
        # The alerts seen in it lose the evidence (tool arguments) that came from it, nothing else.
        for alert in store.alerts():
            if alert.session_id == ids[0]:
                assert alert.evidence == {"removed": "this alert's evidence came from a session whose content "
                                                     "retention removed"}
                assert alert.session_ids == [ids[0]] and alert.turns == [1]
        # Done once: the next step finds nothing more to empty.
        assert store.prune_step(end_of(store, ids[0]) + 1, content_only=True).sessions == 0


def test_sessions_expire_whole_and_what_only_they_used_goes(sessions):
    db, ids = sessions
    with tracer.Store(db) as store:
        content, nodes = store.sql("SELECT (SELECT count(*) FROM content), (SELECT count(*) FROM message_chain)")[0]
        result = store.prune_step(end_of(store, ids[1]) + 1)
        assert (result.sessions, result.llm_calls, result.tool_calls, result.turns, result.eval_results) == \
            (2, 4, 2, 4, 1)
        assert result.spans == 2 * 6 and result.chain_nodes == 3 and result.content == 1  # A-1's question and answer
        assert store.sql("SELECT (SELECT count(*) FROM content), (SELECT count(*) FROM message_chain)")[0] == \
            (content - 1, nodes - 3)
        assert [s.session_id for s in store.list_sessions()] == [ids[2]]
        assert tracer.reference_problems(store) == {}
        assert store.verify_requests().exact == store.verify_requests().total == 2
        assert store.eval_results("run-1")[0].session_id is None  # the result stays, its run's figures too
        shared, alone = sorted(store.alerts(), key=lambda a: a.fingerprint)
        assert shared.session_ids == [ids[2]] and shared.session_id == ids[2] and shared.count == 2
        # Retention keeps alerts: the count of what the detectors saw is a trend too.
        assert alone.session_ids == [] and alone.session_id is None and alone.count == 1
        assert alone.evidence == {"removed": "this alert's evidence came from a session that retention removed"}


def test_steps_are_bounded_and_say_when_more_are_due(sessions):
    db, ids = sessions
    with tracer.Store(db) as store:
        cutoff = end_of(store, ids[2]) + 1
        steps = []
        while not steps or steps[-1].more:
            steps.append(store.prune_step(cutoff, batch=2))
        assert [s.sessions for s in steps] == [2, 1] and store.count_sessions() == 0
        assert tracer.reference_problems(store) == {}
        assert store.sql("SELECT (SELECT count(*) FROM content) + (SELECT count(*) FROM message_chain) + "
                         "(SELECT count(*) FROM spans)") == [(0,)]


def test_a_deleted_session_is_gone_everywhere(sessions):
    db, ids = sessions
    with tracer.Store(db) as store:
        result = store.delete_session(ids[0])
        assert (result.sessions, result.llm_calls, result.eval_results, result.alerts_deleted) == (1, 2, 1, 1)
        for table in ("sessions", "spans", "turns", "llm_calls", "tool_calls", "message_chain", "eval_results"):
            assert store.sql(f"SELECT count(*) FROM {table} WHERE session_id = ?", [ids[0]]) == [(0,)], table
        assert store.sql("SELECT count(*) FROM alert_observations WHERE observation = ?", [ids[0]]) == [(0,)]
        # The alert seen in it alone went; the other no longer counts it.
        (alert,) = store.alerts()
        assert (alert.session_ids, alert.count) == ([ids[2]], 1)
        assert tracer.reference_problems(store) == {}
        assert store.verify_requests().exact == store.verify_requests().total == 4
        with pytest.raises(tracer.UnknownSessionError, match=f"no session '{ids[0]}'.*full id.*traces list"):
            store.delete_session(ids[0])
        with pytest.raises(tracer.UnknownSessionError, match=f"start of session {ids[1]}: pass the full id"):
            store.delete_session(ids[1][:13])


def test_replay_says_a_pruned_call_was_pruned(sessions, monkeypatch):
    import replay

    db, ids = sessions
    with tracer.Store(db) as store:
        store.prune_step(end_of(store, ids[0]) + 1, content_only=True)
    with pytest.raises(replay.NoContentError, match="its content was pruned by retention on .*traces show"):
        replay.reconstruct(ids[0], 1, db=db)
    assert replay.reconstruct(ids[1], 1, db=db).exact
    from replay._cli import replay as replay_cli

    out = CliRunner().invoke(replay_cli, ["verify", "--db", db]).output
    assert out.startswith("4/6 calls rebuilt exactly\n2 calls pruned: retention removed their content")


def run(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_the_commands_report_what_went_and_refuse_bad_input(sessions):
    db, ids = sessions
    for bad in ("30", "0d"):
        out = run("prune", "--older-than", bad, "--db", db)
        assert out.exit_code == 2 and "Invalid value for '--older-than'" in out.output
    out = run("prune", "--older-than", "30d", "--db", db)
    assert out.exit_code == 0 and out.output.startswith("Nothing to prune: no session ended before ")
    out = run("prune", "--older-than", "30d", "--db", "typo.duckdb")
    assert out.exit_code == 2 and out.output.startswith("error: no trace store at typo.duckdb: nothing to remove")
    assert not os.path.exists("typo.duckdb")
    out = run("delete", "--session", "nope", "--db", db)
    assert out.exit_code == 2 and out.output.startswith("error: no session 'nope'") and "Traceback" not in out.output
    out = run("delete", "--session", ids[0], "--db", db)
    assert out.exit_code == 0, out.output
    assert out.output.startswith(f"Deleted session {ids[0]}: 6 spans, 2 turns, 2 LLM calls, 1 tool call")
    assert "--compact rewrites it without them" in out.output
    out = run("prune", "--older-than", "0.001s", "--content-only", "--json", "--db", db, "--actor", "dpo")
    assert json.loads(out.output)["llm_calls"] == 4 and json.loads(out.output)["content_only"] is True
    with tracer.Store(db, read_only=True) as store:
        entries = store.audit_entries()
    # Newest first; the refused commands left none, the prune that found nothing one.
    assert [(e.action, e.target, e.detail["sessions"]) for e in entries] == [
        ("prune", "store", 2), ("delete", ids[0], 1), ("prune", "store", 0)]
    assert (entries[0].actor, entries[0].via, entries[0].detail["content_only"]) == ("dpo", "cli", True)
    out = run("prune", "--older-than", "0.001s", "--db", db)
    assert out.output.startswith("Removed 2 sessions that ended before "), out.output


def test_compaction_of_a_held_file_is_refused_and_leaves_it_alone(locked_store):  # noqa: F811
    path, pid = locked_store
    with pytest.raises(tracer.StoreError, match=f"compacting {path} failed, and the file is as it was: .*{pid}"):
        compact(str(path))
    assert not os.path.exists(f"{path}.compact")


def test_compaction_shrinks_the_file_and_drops_the_deleted_bytes(tmp_path):
    db = str(tmp_path / "big.duckdb")
    rec = tracer.Recorder(db)
    secret = "Where is the parcel of alice.secret@example.com?"
    ids = record(rec, *[f"{secret} ({i})" for i in range(40)])
    rec.shutdown()
    for sid in ids:
        assert run("delete", "--session", sid, "--db", db).exit_code == 0
    size = os.path.getsize(db)
    out = run("prune", "--older-than", "1s", "--compact", "--db", db)
    assert out.exit_code == 0 and "Compacted the file" in out.output
    assert os.path.getsize(db) < size and b"alice.secret" not in open(db, "rb").read()
    with tracer.Store(db) as store:
        assert store.schema_version() == tracer.Store(":memory:").schema_version()
        assert store.count_sessions() == 0


@pytest.fixture
def served(tmp_path):
    """A collector and its read API on a store, as `flightrec serve` runs them."""
    db = str(tmp_path / "served.duckdb")
    collector = Collector(db, port=0).start()
    api = ReadApi(db, collector_url=collector.url, maintain=collector.maintain).start()
    yield db, collector
    api.close()
    collector.close()


def test_while_serve_runs_its_writer_prunes_and_later_spans_write_again_what_went(served, monkeypatch):
    db, collector = served
    holder = find_holder(db, None)
    # In this process DuckDB would let the command join serve's database: make it go the way
    # another process goes, through serve's read API, as `tracer.connect` does for a held file.
    monkeypatch.setattr("tracer._cli.connect", lambda db, read_only: tracer.ServedStore(db, holder))
    rec = tracer.Recorder(endpoint=collector.url)
    first = record(rec, "Where is A-1?")
    rec.provider.force_flush()
    out = run("delete", "--session", first[0], "--db", db)
    assert out.exit_code == 0 and out.output.startswith(f"Deleted session {first[0]}: 6 spans"), out.output
    out = run("prune", "--older-than", "30d", "--compact", "--db", db)
    assert out.exit_code == 2 and out.output.startswith(f"error: --compact rewrites {db}, which `flightrec serve`")
    # The system prompt and tools went with the only session that used them. The writer's ingestor
    # knew them as written; the next session must store them again, or its calls would dangle.
    second = record(rec, "Where is A-1?")
    rec.shutdown()
    verify = collector.maintain(lambda store: store.verify_requests())
    assert verify.total == verify.exact == 2 and verify.failures == []
    assert collector.maintain(lambda store: [s.session_id for s in store.list_sessions()]) == second
    assert collector.maintain(tracer.reference_problems) == {}


def test_serve_applies_its_retention_policy_on_its_own(tmp_path):
    db = str(tmp_path / "policy.duckdb")
    rec = tracer.Recorder(db)
    ids = record(rec, "Where is A-1?", "Where is B-2?")
    rec.shutdown()
    with tracer.Store(db) as store:
        old, recent = end_of(store, ids[0]), end_of(store, ids[1])
    # A clock 10 days after the first session ended: keep sessions 30 days, content 10 days.
    now = old + 10 * NS_PER_DAY + (recent - old) // 2
    with Collector(db, port=0, retain_s=30 * 86_400, retain_content_s=10 * 86_400, clock=lambda: now) as collector:
        collector.maintain(lambda store: None)  # queued after the first round, which runs as the writer starts
        states = collector.store.sql("SELECT session_id, content_pruned_ns IS NOT NULL FROM sessions ORDER BY end_ns")
        assert states == [(ids[0], True), (ids[1], False)]
        assert tracer.reference_problems(collector.store) == {}
        [entry] = collector.store.audit_entries()
        assert (entry.action, entry.detail["policy"], entry.detail["sessions"]) == (
            "prune", "serve --retain-content", 1)
    with pytest.raises(tracer.ConfigError, match="content retention .* is longer than session retention"):
        Collector(db, port=0, retain_s=86_400, retain_content_s=2 * 86_400)


def test_serve_takes_its_policy_from_options_or_the_environment_and_refuses_a_bad_one():
    out = run("serve", "--retain", "30x")
    assert out.exit_code == 2 and "Invalid value for '--retain': '30x' is not a duration" in out.output
    out = CliRunner().invoke(main, ["serve", "--port", "0", "--no-grpc", "--no-dashboard"],
                             env={"FLIGHTREC_RETAIN": "1d", "FLIGHTREC_RETAIN_CONTENT": "2d"})
    assert out.exit_code == 2
    assert out.output.startswith("error: content retention (48 h) is longer than session retention (24 h)")


def test_serve_commits_what_is_queued_between_two_retention_steps(tmp_path, monkeypatch):
    from tracer._collector import _Task

    db = str(tmp_path / "steps.duckdb")
    rec = tracer.Recorder(db)
    record(rec, "Where is A-1?", "Where is B-2?", "Where is C-3?")
    rec.shutdown()
    order: list[str] = []
    queued = threading.Event()
    prune_step = tracer.Store.prune_step

    def one_at_a_time(self, before_ns, *, content_only=False, batch=0):
        queued.wait(30)  # until the test has queued its work, behind this first step
        result = prune_step(self, before_ns, content_only=content_only, batch=1)
        order.append(f"step {result.sessions}")
        return result

    monkeypatch.setattr(tracer.Store, "prune_step", one_at_a_time)
    later = time.time_ns() + NS_PER_DAY
    with Collector(db, port=0, retain_s=3600, clock=lambda: later) as collector:
        task = _Task(lambda store: order.append("other work"))
        collector._jobs.put(task)
        queued.set()
        assert task.done.wait(30)
        while collector.maintain(lambda store: store.count_sessions()):  # each waits for a step at least
            pass
    assert order[:3] == ["step 1", "other work", "step 1"] and order.count("step 1") == 3
