"""Replay, fork, rerun and evals for agents that are not the reference agent.

Two agents of other shapes, each on a fake model from ``tracer.testing``: the trip planner of
``docs/custom_agent.py`` (two tools, plain calls) and the invoice clerk of ``invoice_agent.py``
(streaming, a paged list, a side effect). Their sessions are recorded the way production code
records them, then acted on from the command line and from Python.
"""

from __future__ import annotations

import json
import os
import sys

import pytest
from click.testing import CliRunner

import evals
import replay
import tracer
from docs import custom_agent as trips
from tracer._cli import main

from . import invoice_agent as clerk

LISBON = {"role": "user", "content": "A weekend from Paris to Lisbon, please."}


def cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output  # stdout and stderr, as a terminal shows them


def record_trip(ask: str = LISBON["content"]) -> str:
    recorder = tracer.Recorder(os.environ["FLIGHTREC_DB"])
    try:
        case = evals.Case(id="t", input={"messages": [ask]}, expect=[{"type": "final_contains", "text": "TP"}])
        with recorder.session("trip-planner") as session:
            trips.plan_trip(case, recorder.instrument(trips.MODEL.client()))
    finally:
        recorder.shutdown()
    return session.id


def record_invoices() -> str:
    recorder = tracer.Recorder(os.environ["FLIGHTREC_DB"])
    try:
        return clerk.record(recorder)
    finally:
        recorder.shutdown()


@pytest.fixture(autouse=True)
def _no_reminders():
    clerk.REMINDERS.clear()


@pytest.fixture
def registered(tmp_path, monkeypatch):
    """Installs the invoice clerk under the ``flightrec.agents`` entry-point group, as a package would."""
    dist = tmp_path / "site" / "invoice_clerk-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: invoice-clerk\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[flightrec.agents]\ninvoice-clerk = tests.replay.invoice_agent:INVOICE_CLERK\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    return "invoice-clerk"


# -- which model answers --------------------------------------------------------------------------

def test_a_replay_of_an_unregistered_agent_names_no_model_of_another_agent():
    sid = record_trip()
    code, out = cli("replay", "run", sid, "--turn", "1")
    assert code == 2 and out.count("\n") == 1
    assert out.startswith("error: no model to ask: the session was recorded by agent 'trip-planner', which is not a "
                          "registered agent. Name one with --model-url URL")


@pytest.mark.parametrize("record_session, agent", [(record_trip, "docs.custom_agent:TRIP_PLANNER"),
                                                   (record_invoices, "tests.replay.invoice_agent:INVOICE_CLERK")])
def test_without_edits_a_deterministic_model_decides_as_recorded(record_session, agent):
    sid = record_session()
    code, out = cli("replay", "run", sid, "--turn", "2", "--trials", "3", "--agent", agent)
    assert code == 0, out
    assert "unchanged 3/3 trials decided as the recording did" in out
    assert "answered by " in out and "simulator" not in out


def test_an_edit_changes_the_decision_and_the_result_says_which_model_answered():
    sid = record_trip()
    result = replay.run(sid, 1, replay.Edits(remove_tools=["get_weather"]), agent=trips.TRIP_PLANNER)
    assert result.changed == 1 and result.model == "the trip planner's fake model" and result.model_target == "agent"
    assert result.trials[0].tool_uses == [{"name": "find_flights", "input": {"origin": "Paris",
                                                                             "destination": "Lisbon"}}]


def test_a_model_named_by_url_answers_and_is_recorded():
    sid = record_invoices()
    with clerk.MODEL.serve() as url:
        code, out = cli("replay", "run", sid, "--turn", "3", "--model-url", url, "--json")
    assert code == 0, out
    result = replay.RunResult.model_validate_json(out)
    assert result.changed == 0 and result.model == url and result.model_target == "url"
    with tracer.Store(read_only=True) as store:
        attrs = store.session_runs(result.replay_session_id)[0].attributes
    assert attrs["flightrec.model_target"] == "url" and attrs["flightrec.model"] == url


def test_an_agent_named_for_another_agents_session_is_refused():
    sid = record_trip()
    code, out = cli("replay", "run", sid, "--turn", "1", "--agent", "support")
    assert code == 2
    assert "--agent support is the agent 'support', and the session was recorded by 'trip-planner'" in out


# -- fork -----------------------------------------------------------------------------------------

def test_fork_with_recorded_tools_needs_no_agent_code_and_fakes_nothing():
    sid = record_invoices()
    assert clerk.REMINDERS == ["INV-1", "INV-3"]
    with clerk.MODEL.serve() as url:
        same = replay.fork(sid, 1, tools="recorded", model_url=url)
    assert same.status == "ok" and same.live_tool_calls == 0 and same.recorded_tool_calls == 4
    assert same.agent is None and same.model == url
    assert clerk.REMINDERS == ["INV-1", "INV-3"]  # no reminder sent twice


def test_fork_stops_at_the_first_call_the_recording_lacks():
    sid = record_trip()
    code, out = cli("replay", "fork", sid, "--turn", "2", "--tools", "recorded", "--agent",
                    "docs.custom_agent:TRIP_PLANNER", "--replace-message", "0",
                    '{"role": "user", "content": "A weekend from Paris to Rome, please."}')
    assert code == 0, out
    assert ('stopped: the model asked for find_flights({"destination":"Rome","origin":"Paris"}), which the recording '
            "does not have; nothing was faked") in out
    assert "0 run live" in out


def test_fork_with_live_tools_runs_the_registered_agents_own_tools(registered):
    sid = record_invoices()
    # At turn 3, the second page (as the model saw it) lists one more overdue invoice: INV-4.
    request = replay.reconstruct(sid, 3).request
    page = request["messages"][-1]["content"][0]
    more = {"invoices": [{"id": "INV-3", "overdue": True}, {"id": "INV-4", "overdue": True}], "next_cursor": None}
    result = replay.fork(sid, 3, replay.Edits(tool_results={page["tool_use_id"]: json.dumps(more)}))
    assert result.agent == registered and result.status == "ok"
    # INV-1 and INV-3 are served from the recording; the reminder for INV-4 is really sent, once.
    assert (result.recorded_tool_calls, result.live_tool_calls) == (2, 1)
    assert clerk.REMINDERS == ["INV-1", "INV-3", "INV-4"]


def test_fork_with_live_tools_refuses_a_session_whose_agent_is_not_registered():
    sid = record_trip()
    code, out = cli("replay", "fork", sid, "--turn", "1")
    assert code == 2 and out.count("\n") == 1
    assert ("a fork with live tools needs the session's own agent code, and the session was recorded by agent "
            "'trip-planner', which is not registered") in out and "--tools recorded" in out


# -- rerun ----------------------------------------------------------------------------------------

def test_rerun_takes_the_recorded_path_for_a_registered_agent(registered):
    sid = record_invoices()
    code, out = cli("replay", "rerun", sid, "--recorded")
    assert code == 0, out
    assert f"session {sid}: the agent took the recorded path (5 decisions checked)" in out
    with tracer.Store(read_only=True) as store:
        assert [(e.action, e.target, e.detail) for e in store.audit_entries()] == [
            ("replay", sid, {"kind": "rerun", "turns_checked": 5, "same_path": True})]


def test_rerun_finds_a_code_change():
    sid = record_trip()
    code, out = cli("replay", "rerun", sid, "--recorded", "--agent", "docs.custom_agent:TRIP_PLANNER")
    assert code == 0, out
    changed = replay.rerun(record_invoices(), agent=clerk.CHANGED_PROMPT)
    assert not changed.same_path and changed.first_divergence is not None
    assert changed.first_divergence.turn == 1 and changed.first_divergence.what == "the system prompt changed"


def test_rerun_refuses_a_session_no_registered_agent_can_run():
    sid = record_trip()
    code, out = cli("replay", "rerun", sid, "--recorded")
    assert code == 2 and "rerun needs the session's own agent code" in out and "not registered" in out


# -- evals ----------------------------------------------------------------------------------------

def test_an_eval_of_a_custom_agent_catches_its_regression(registered):
    dataset = evals.Dataset(name="invoices", agent=registered, cases=[
        evals.Case(id="all-overdue", input={"messages": ["Chase the overdue invoices."]},
                   expect=[{"type": "tool_args", "tool": "send_reminder", "args": {"invoice": "INV-3"}}]),
        evals.Case(id="report", input={"messages": ["Chase and report."]},
                   expect=[{"type": "final_contains", "text": "2 reminders"}]),
    ])
    base = evals.run_eval(dataset, trials=5, label="baseline", seed=1)
    assert base.run.agent == registered and base.run.passed_trials == 10
    broken = evals.run_eval(dataset, trials=5, agent="tests.replay.invoice_agent:WITHOUT_REMINDERS", seed=2)
    with tracer.Store(read_only=True) as store:
        comparison = evals.compare_stored(store, "baseline", broken.run.run_id)
    assert comparison.verdict == "regression"
    # The trials are this agent's sessions, with the case's input kept for a rerun.
    sid = base.results[0].session_id
    assert replay.rerun(sid).same_path


def test_the_docs_example_records_and_its_suite_gates_a_regression(tmp_path, monkeypatch):
    import subprocess

    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    monkeypatch.chdir(repo)  # the suite names docs.custom_agent:TRIP_PLANNER, imported from the working directory
    out = subprocess.run([sys.executable, "docs/custom_agent.py"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "Take TP 1351 from Paris to Lisbon at 09:40 for 129 EUR. It will be sunny there." in out.stdout
    base = evals.run_eval("docs/trips.yaml", trials=5, label="baseline", seed=3)
    assert base.run.passed_trials == 15
    broken = evals.run_eval("docs/trips.yaml", trials=5, agent="docs.custom_agent:WITHOUT_WEATHER", seed=4)
    with tracer.Store(read_only=True) as store:
        comparison = evals.compare_stored(store, "baseline", broken.run.run_id)
    assert comparison.verdict == "regression"
    assert set(comparison.regressions) == {"lisbon-weekend", "weather-first"}
