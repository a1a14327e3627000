"""Forks: carry a session on from a turn, serving recorded tool results, and diff the trajectories."""

from __future__ import annotations

import os

from click.testing import CliRunner

import replay
import tracer
from reference_agent import World, default_world_path
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


def test_new_tool_calls_run_live_or_stop_under_recorded(refund_session):
    edits = replay.Edits(replace_messages={0: OTHER_ORDER})
    stopped = replay.fork(refund_session, 1, edits, tools="recorded")
    assert stopped.status == "stopped"
    assert stopped.reason.startswith('the model asked for get_order({"order_id":"A-1001"}), which the recording')
    live = replay.fork(refund_session, 1, edits)  # the session's registered agent: the reference agent
    assert live.live_tool_calls >= 1
    assert live.decisions[0].tool_uses == [{"name": "get_order", "input": {"order_id": "A-1001"}}]
