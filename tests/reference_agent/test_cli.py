"""The ``flightrec agent``, ``sim`` and ``demo`` commands, through click's runner, as a user runs them."""

from __future__ import annotations

import json
import re
import socket
import sqlite3

import pytest
from click.testing import CliRunner

import reference_agent._cli
import tracer
from reference_agent import SCENARIOS, AgentConfig, AgentConfigError, RunSpec, default_client
from tests.conftest import DEMO_SESSIONS
from tracer._cli import main


def run(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def session_id(output: str) -> str:
    return re.search(r"session\s+([0-9a-f-]{36})", output).group(1)  # type: ignore[union-attr]


def test_scenarios_are_listed_one_line_each():
    result = run("agent", "scenarios")
    lines = result.output.splitlines()
    assert result.exit_code == 0 and len(lines) == len(SCENARIOS) >= 12
    assert lines[0].split()[0] == "order_status" and "where is my order" in lines[0]
    assert {s["name"] for s in json.loads(run("agent", "scenarios", "--json").output)} == {s.name for s in SCENARIOS}


def test_run_then_approve_from_the_command_line():
    waiting = run("agent", "run", "--scenario", "refund_over_threshold", "--seed", "4")
    assert waiting.exit_code == 0 and "status   waiting_human: refund $549.00 on A-1003" in waiting.output
    sid = session_id(waiting.output)
    assert f"flightrec agent approve {sid}" in waiting.output
    listed = run("agent", "sessions", "--status", "waiting_human")
    assert sid in listed.output
    approved = run("agent", "approve", sid[:13], "--note", "ok", "--json", "--actor", "team lead")
    out = json.loads(approved.output)
    assert out["status"] == "ok" and out["refunds"] == 1 and out["session_id"] == sid
    with tracer.Store(read_only=True) as store:
        assert store.get_session(sid).status == "ok"
        (entry,) = store.audit_entries(action="approve")  # who decided, in the audit log
        assert (entry.actor, entry.target, entry.via, entry.detail["note"]) == ("team lead", sid, "cli", "ok")
        assert entry.detail["approval_id"]


def test_reject_resume_and_say_from_the_command_line():
    sid = session_id(run("agent", "run", "--scenario", "refund_over_threshold").output)
    rejected = run("agent", "reject", sid, "--note", "no photos")
    assert "status   ok" in rejected.output and "no photos" in rejected.output
    with tracer.Store(read_only=True) as store:
        assert [(e.action, e.target) for e in store.audit_entries(action="reject")] == [("reject", sid)]
    more = run("agent", "say", sid, "Thanks, that's all.")
    assert more.exit_code == 0 and "status   ok" in more.output
    errored = run("agent", "run", "--scenario", "order_status", "--fault", "529@0x9")
    assert "status   error" in errored.output and "flightrec agent resume" in errored.output


def test_guards_and_faults_are_set_from_the_command_line():
    guarded = run("agent", "run", "--scenario", "order_status", "--misbehave", "loop", "--max-tool-calls", "2")
    assert "status   guard:max_tool_calls" in guarded.output and "guard    max_tool_calls:" in guarded.output
    budget = run("agent", "run", "--scenario", "long_conversation", "--token-budget", "5000", "--json")
    assert json.loads(budget.output)["status"] == "guard:token_budget"


def test_a_model_name_without_a_key_runs_on_the_simulator():
    result = CliRunner().invoke(main, ["agent", "run", "--scenario", "order_status", "--model", "claude-sonnet-4-5"])
    assert result.exit_code == 0 and "the simulator answers as claude-sonnet-4-5" in result.output
    with tracer.Store(read_only=True) as store:
        (call, *_) = store.session_account(session_id(result.output)).turns[0].llm_calls
    assert call.model == "claude-sonnet-4-5"


def test_the_real_api_is_the_same_code_path_given_a_key(monkeypatch):
    with pytest.raises(AgentConfigError, match="ANTHROPIC_API_KEY"):
        default_client(RunSpec(real=True), AgentConfig())
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    client = default_client(RunSpec(real=True), AgentConfig(max_retries=3))
    assert str(client.base_url).startswith("https://api.anthropic.com") and client.max_retries == 3


@pytest.mark.parametrize(("args", "message"), [
    (["agent", "run", "--scenario", "nope"], "no scenario 'nope'. The scenarios are: order_status"),
    (["agent", "run", "--scenario", "order_status", "--fault", "418"], "bad fault spec '418'"),
    (["agent", "resume", "0123456789"], "no agent session '0123456789'"),
    (["agent", "sessions"], "no world file at"),
])
def test_bad_input_is_one_line_and_exit_2(args, message):
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2 and result.output.startswith("error: ") and message in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_approving_a_session_that_does_not_wait_is_an_error():
    sid = session_id(run("agent", "run", "--scenario", "order_status").output)
    result = CliRunner().invoke(main, ["agent", "approve", sid])
    assert result.exit_code == 2 and "is ok; it is not waiting for an approval" in result.output


def test_the_demo_records_a_store_that_rebuilds_exactly(demo):
    """The demo all the suite shares (tests/conftest.py), built by ``flightrec demo --no-serve``."""
    db, output = demo.db, demo.output
    for label in (f"sessions      {DEMO_SESSIONS}:", "turns", "tool calls", "tokens", "cost", "guards fired",
                  "failures", "approvals"):
        assert label in output
    # The one planted duplicate: an e-mail re-sent on resume by an agent whose idempotency keys are per turn.
    assert "0 duplicated refunds, 1 e-mails sent twice (planted:" in output
    exact = re.search(r"exact rebuild ([\d,]+) of ([\d,]+) stored calls", output)
    assert exact and exact.group(1) == exact.group(2)
    # After deploy: customers' outcomes come in as spans, and the scoring policy scores the sessions.
    survey = re.search(r"After deploy: (\d+) customers answered the survey, (\d+) resolved", output)
    assert survey and 0 < int(survey.group(2)) < int(survey.group(1)) < DEMO_SESSIONS
    scored = re.search(r"Scored (\d+) of (\d+) production sessions .*; (\d+) sessions wait for review", output)
    assert scored and int(scored.group(1)) == int(scored.group(2)) == DEMO_SESSIONS and int(scored.group(3)) > 0
    # The demo ends with the eval gate: a baseline run of the bundled suite, then the regressed variant.
    assert "Eval 2/2" in output and "REGRESSION" in output
    assert "The gate caught the regression" in output
    with tracer.Store(db, read_only=True) as store:
        runs = store.eval_runs()
        assert [r.labels for r in runs] == [[], ["baseline"]]
        # Besides the sub-agents' sessions (delegated_research's researcher), one session a demo session or a trial.
        assert store.sql("SELECT count(*) FROM sessions WHERE parent_session_id IS NULL") == [
            (DEMO_SESSIONS + sum(r.total_trials for r in runs),)]
        assert store.sql("SELECT count(*) FROM sessions WHERE agent = 'researcher'")[0][0] >= 1
        verified = store.verify_requests()
        statuses = {s for (s,) in store.sql("SELECT DISTINCT status FROM sessions")}
        # The misbehaving sessions raise the failure table's alerts, found in their spans by the detectors.
        raised = {d for (d,) in store.sql("SELECT DISTINCT detector FROM alerts")}
        duplicated = store.sql("SELECT DISTINCT session_ids FROM alerts WHERE detector = 'safety.duplicate_effect'")
        outcomes = store.sql("SELECT count(*), count(DISTINCT session_id), count(*) FILTER (WHERE resolved) FROM "
                             "session_outcomes WHERE source = 'survey'")[0]
        assert store.sql("SELECT count(*) FROM spans WHERE name = 'flightrec.outcome'") == [(0,)]
    assert outcomes == (int(survey.group(1)), int(survey.group(1)), int(survey.group(2)))
    assert verified.total > 300 and verified.exact == verified.total
    assert {"ok", "guard:loop", "guard:token_budget"} <= statuses
    assert {"tools.hallucinated", "tools.overload", "safety.duplicate_effect", "approval.waiting",
            "approval.expired"} <= raised
    assert len(duplicated) == 1
    world = sqlite3.connect(f"file:{db.parent / 'demo.world.sqlite'}?mode=ro", uri=True)
    assert world.execute("SELECT count(*) FROM (SELECT session_id, order_id, amount_cents FROM refunds "
                         "GROUP BY session_id, order_id, amount_cents HAVING count(*) > 1)").fetchone() == (0,)
    assert world.execute("SELECT session_id FROM emails GROUP BY session_id, to_address, subject "
                         "HAVING count(*) > 1").fetchall() == [tuple(duplicated[0][0])]


# -- the demo's hand-over to `flightrec serve` ------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("option", ["--port", "--grpc-port", "--dashboard-port"])
def test_the_demo_names_the_option_to_change_when_a_port_is_taken_before_recording(tmp_path, taken_port, option):
    db = tmp_path / "demo.duckdb"
    # The other two on free ports, not 4318 and 8501, which a demo or serve on this machine may hold; the
    # option given last wins.
    result = CliRunner().invoke(main, ["demo", "--db", str(db), "--sessions", "2", "--port", str(free_port()),
                                       "--grpc-port", "0", "--dashboard-port", str(free_port()), option,
                                       str(taken_port)])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"error: cannot listen on 127.0.0.1:{taken_port} (address already in use): pass {option} with a free port."]
    assert not db.exists()


def test_the_demo_hands_its_ports_to_serve_and_prints_the_dashboard_url(tmp_path, monkeypatch):
    import dashboard._cli

    served = {}
    monkeypatch.setattr(dashboard._cli.serve, "callback", lambda **params: served.update(params))
    # The detectors and the eval gate have their own test; this one is about what follows them.
    monkeypatch.setattr(reference_agent._cli, "_detect", lambda ctx, db_path: None)
    monkeypatch.setattr(reference_agent._cli, "_gate", lambda ctx, db_path, seed: None)
    port, grpc_port, dashboard_port = free_port(), free_port(), free_port()
    db = tmp_path / "demo.duckdb"
    result = run("demo", "--db", str(db), "--sessions", "2", "--port", str(port), "--grpc-port", str(grpc_port),
                 "--dashboard-port", str(dashboard_port))
    assert result.exit_code == 0, result.output
    assert f"Browse what was recorded: http://127.0.0.1:{dashboard_port} " in result.output
    assert (served["db"], served["port"], served["grpc_port"], served["dashboard_port"]) == (
        str(db), port, grpc_port, dashboard_port)
