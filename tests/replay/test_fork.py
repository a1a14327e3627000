"""Forks: carry a session on from a turn, serving recorded tool results, and diff the trajectories."""

from __future__ import annotations

import os

from click.testing import CliRunner

import replay
import tracer
from reference_agent import AgentConfig, World, default_world_path
from tracer._cli import main

from .conftest import RULE_2, record

OTHER_ORDER = {"role": "user", "content": "The pour-over set from order A-1001 arrived broken. I want a refund."}


def refunds(session_id: str) -> int:
    with World(default_world_path(os.environ["FLIGHTREC_DB"])) as world:
        return len(world.refunds(session_id))


def test_an_unedited_fork_serves_every_tool_call_from_the_recording():
    sid = record("refund_under_threshold")
    assert refunds(sid) == 1
    result = replay.fork(sid, 1)
    assert result.live_tool_calls == 0 and result.recorded_tool_calls >= 2
    assert refunds(sid) == 1 and refunds(result.session_id) == 0  # the refund was not paid a second time
    assert replay.diff(sid, result.session_id).first_divergence is None
    with tracer.Store(read_only=True) as store:  # a fork is not production traffic, and names its source
        assert store.sql("SELECT origin, source_session_id FROM sessions WHERE session_id = ?",
                         [result.session_id]) == [("fork", sid)]


def test_walkthrough_fork_without_the_rule_diverges_at_the_edited_turn(refund_session):
    code = CliRunner().invoke(main, ["replay", "fork", refund_session, "--turn", "3", "--system-remove", RULE_2,
                                     "--json", "--actor", "ana"])
    assert code.exit_code == 0, code.output
    result = replay.ForkResult.model_validate_json(code.output)
    with tracer.Store(read_only=True) as store:
        (entry,) = store.audit_entries()
    assert (entry.actor, entry.action, entry.target, entry.via) == ("ana", "fork", refund_session, "cli")
    assert entry.detail == {"turn": 3, "model": result.model, "edited": ["system_replace"],
                            "new_session": result.session_id, "status": "waiting_human"}
    assert result.decisions[0].turn == 3 and result.decisions[0].tool_uses[0]["name"] == "issue_refund"
    assert result.status == "waiting_human" and result.recorded_tool_calls == 1
    session_diff = replay.diff(refund_session, result.session_id)
    assert session_diff.first_divergence == 3
    assert [p.b for p in session_diff.turns[:2]] == ["(inherited)", "(inherited)"]
    assert session_diff.divergence is not None and not session_diff.divergence.same
    out = CliRunner().invoke(main, ["replay", "diff", refund_session, result.session_id]).output
    assert "first divergence at turn 3" in out
    # The sides are named for what they are, not A and B: the recording and its replay.
    assert session_diff.labels == session_diff.divergence.labels == ("recorded", "replayed")
    assert out.startswith(f"recorded  {refund_session}\nreplayed  {result.session_id}")
    assert "--- recorded" in out or "recorded:" in out


def test_new_tool_calls_run_live_or_stop_under_recorded(refund_session):
    edits = replay.Edits(replace_messages={0: OTHER_ORDER})
    stopped = replay.fork(refund_session, 1, edits, tools="recorded")
    assert stopped.status == "stopped"
    assert stopped.reason.startswith('the model asked for get_order({"order_id":"A-1001"}), which the recording')
    live = replay.fork(refund_session, 1, edits)  # the session's registered agent: the reference agent
    assert live.live_tool_calls >= 1
    assert live.decisions[0].tool_uses == [{"name": "get_order", "input": {"order_id": "A-1001"}}]


def guards_fired(session_id: str) -> list[str]:
    with tracer.Store(read_only=True) as store:
        account = store.session_account(session_id)
    return [e["attributes"]["guard"] for t in account.turns for e in t.events if e["name"] == "guard_fired"]


def test_a_fork_of_a_looping_session_stops_at_the_loop_guard_where_production_stopped():
    sid = record("stuck_tracking")  # the model repeats get_order; the agent's loop guard stopped it
    with tracer.Store(read_only=True) as store:
        origin = store.session_account(sid).session
    assert origin.status == "guard:loop"
    for turn in (1, 2):
        result = replay.fork(sid, turn, replay.Edits(system="You are a support agent."))
        assert result.status == "guard:loop", result.reason
        assert result.reason == origin.status_reason
        # Counted from the origin's start: the calls before the fork point are part of the loop.
        assert (turn - 1) + result.recorded_tool_calls + result.live_tool_calls == origin.tool_calls
        assert guards_fired(result.session_id) == ["loop"]


def test_a_fork_runs_under_the_limits_the_origin_session_recorded():
    sid = record("refund_under_threshold", config=AgentConfig(max_tool_calls=1))
    with tracer.Store(read_only=True) as store:
        assert store.session_account(sid).session.status == "guard:max_tool_calls"
    result = replay.fork(sid, 1)
    assert result.status == "guard:max_tool_calls"
    assert result.recorded_tool_calls + result.live_tool_calls == 1
    assert guards_fired(result.session_id) == ["max_tool_calls"]
