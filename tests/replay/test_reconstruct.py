"""Rebuilding recorded decisions: `replay show`, `replay verify`, and their errors."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

import replay
import tracer
from tracer._cli import main

from .conftest import record


def cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["replay", *args])
    return result.exit_code, result.output


def test_reconstruct_rebuilds_the_exact_request(refund_session):
    r = replay.reconstruct(refund_session, 3)
    assert r.exact and r.sha256 == r.recorded_sha256
    assert r.request["messages"][0]["role"] == "user" and len(r.request["messages"]) == 5
    assert {t["name"] for t in r.request["tools"]} >= {"issue_refund", "get_order"}
    assert r.decision.action == "final"
    assert r.origin.scenario == "refund_over_threshold" and r.origin.model_target == "sim"


def test_show_prints_the_request_and_its_hash(refund_session):
    code, out = cli("show", refund_session[:13], "--turn", "4")
    assert code == 0
    assert "matches the recorded hash" in out and '"messages"' in out
    code, out = cli("show", refund_session, "--turn", "4", "--json")
    data = json.loads(out)
    assert data["exact"] and data["decision"]["tool_uses"][0]["name"] == "issue_refund"


def test_verify_reports_every_call_rebuilt(refund_session):
    record("order_status")
    code, out = cli("verify")
    assert code == 0
    total = out.split("/")[0]
    assert out.strip() == f"{total}/{total} calls rebuilt exactly" and int(total) >= 5


def test_verify_lists_calls_recorded_without_content(refund_session):
    record("order_status", content="none")
    code, out = cli("verify")
    assert code == 1
    assert "content was not captured (content mode none)" in out


def test_unknown_session_and_turn_are_one_line_errors(refund_session):
    code, out = cli("show", "nosuchsession", "--turn", "1")
    assert code == 2 and out.startswith("error: no session 'nosuchsession'") and "Traceback" not in out
    code, out = cli("show", refund_session, "--turn", "40")
    assert code == 2 and "has no decision at turn 40; it has turns 1..4" in out


def test_a_session_without_content_cannot_be_replayed():
    sid = record("order_status", content="none")
    with pytest.raises(replay.NoContentError, match="content mode `none`"):
        replay.reconstruct(sid, 1)
    code, out = cli("run", sid, "--turn", "1")
    assert code == 2 and "recorded with content mode `none`" in out


def test_unknown_session_is_the_tracer_error():
    tracer.Store().close()  # an empty store
    with pytest.raises(tracer.UnknownSessionError):
        replay.reconstruct("0000000000", 1)
