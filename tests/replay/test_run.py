"""Counterfactual re-runs: `replay run` with edits and trials, recorded as linked sessions."""

from __future__ import annotations

import json
import socket

import pytest
from click.testing import CliRunner

import replay
import tracer
from tracer._cli import main

from .conftest import RULE_2


def cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["replay", *args])
    return result.exit_code, result.output


def test_an_unedited_rerun_sends_the_same_request_and_decides_the_same(refund_session):
    result = replay.run(refund_session, 3)
    assert result.request_sha256 == result.origin.request_sha256
    assert result.trials[0].request_sha256 == result.origin.request_sha256  # recorded with the same hash
    assert result.changed == 0 and result.trials[0].action == "final"


def test_walkthrough_removing_the_confirmation_rule_refunds_at_once(refund_session):
    """The README's walkthrough: without rule 2, turn 3 refunds instead of asking."""
    code, out = cli("run", refund_session, "--turn", "3", "--system-remove", RULE_2, "--trials", "3", "--json")
    assert code == 0, out
    result = replay.RunResult.model_validate_json(out)
    assert result.origin.action == "final"
    assert result.changed == 3
    assert all(t.tool_uses[0]["name"] == "issue_refund" for t in result.trials)
    diff = replay.diff(f"{refund_session}:3", f"{result.replay_session_id}:1")
    assert not diff.same and any(c.field == "action" for c in diff.changes)
    context = replay.diff(f"{refund_session}:3", f"{result.replay_session_id}:1", context=True)
    assert context.system_changed and any(RULE_2 in line for line in context.system_diff)
    assert context.messages_added == [] and context.messages_removed == []
    with tracer.Store(read_only=True) as store:
        (entry,) = store.audit_entries()
    assert (entry.action, entry.target, entry.via) == ("replay", refund_session, "cli")
    assert entry.detail == {"kind": "run", "turn": 3, "model": result.model, "edited": ["system_replace"],
                            "trials": 3, "new_session": result.replay_session_id}
    assert RULE_2 not in entry.model_dump_json()  # the edit's text is content: the never-pruned log keeps its name


def test_the_replay_is_a_new_session_linked_to_its_origin(refund_session):
    result = replay.run(refund_session, 3, replay.Edits(temperature=0.5), trials=2)
    with tracer.Store(read_only=True) as store:
        summary = store.get_session(result.replay_session_id)
        rows = store._query("SELECT attributes, links FROM spans WHERE session_id = ? AND name LIKE 'invoke_agent%'",
                            [result.replay_session_id])
        origin_trace = store._query("SELECT trace_id FROM llm_calls WHERE span_id = ?", [result.origin.span_id])[0][0]
        body = store.rebuild_request(result.trials[0].span_id)
        origin = store.sql("SELECT origin, source_session_id FROM sessions WHERE session_id = ?",
                           [result.replay_session_id])
    attrs = json.loads(rows[0][0])
    assert origin == [("replay", refund_session)]  # not production traffic
    # A real OpenTelemetry span link to the decision that was replayed.
    assert [(link["trace_id"], link["span_id"]) for link in json.loads(rows[0][1])] == [
        (origin_trace, result.origin.span_id)]
    assert summary.turns == 2 and summary.llm_calls == 2
    assert attrs[replay.REPLAY_OF] == f"{refund_session}:{result.origin.span_id}"
    assert attrs["flightrec.model_target"] == "agent" and attrs["flightrec.replay.turn"] == 3
    assert attrs["flightrec.model"] == "the reference agent's simulator (in process)" == result.model
    assert json.loads(attrs["flightrec.replay.edits"]) == {"temperature": 0.5}
    assert body["temperature"] == 0.5  # the edit reached the wire


def test_an_edit_that_breaks_the_conversation_is_reported(refund_session):
    code, out = cli("run", refund_session, "--turn", "3", "--drop-message", "4")
    assert code == 2 and "the model rejected the edited request (HTTP 400)" in out and "final message" in out


def test_an_unreachable_model_is_a_clear_error(refund_session):
    with socket.socket() as s:  # a loopback port with nobody listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, out = cli("run", refund_session, "--turn", "3", "--model-url", f"http://127.0.0.1:{port}")
    assert code == 2 and out.startswith("error: cannot reach http://127.0.0.1:") and "Traceback" not in out


def test_the_real_api_needs_a_key(refund_session):
    with pytest.raises(replay.ModelUnreachableError, match="ANTHROPIC_API_KEY"):
        replay.run(refund_session, 3, real=True)


def test_edit_file_and_flags_combine(refund_session, tmp_path):
    path = tmp_path / "edits.json"
    path.write_text(json.dumps({"system_replace": [[RULE_2, ""]]}))
    code, out = cli("run", refund_session, "--turn", "3", "--edits", str(path), "--max-tokens", "512", "--json")
    assert code == 0, out
    result = replay.RunResult.model_validate_json(out)
    assert result.changed == 1 and result.edits.max_tokens == 512
