"""A call recorded with content mode ``redacted``: its recorded hash is the exact request's, and replay
says plainly that the redacted request cannot be rebuilt exactly."""

from __future__ import annotations

from click.testing import CliRunner

import replay
import tracer
from tests.replay.conftest import record
from tests.tracer.fakes import FakeAPI, run_agent
from tracer import canonical_json, sha256_hex
from tracer._cli import main

MARK = "REDACTED AT CAPTURE"


def redacted_session() -> tuple[str, list[dict]]:
    api = FakeAPI()
    rec = tracer.Recorder(content="redacted")
    with rec.session(agent="support") as session:
        run_agent(rec.instrument(api.client()), "I'm bob@example.com: where is A-1?")
    rec.shutdown()
    return session.id, api.requests


def test_replay_says_a_redacted_call_cannot_be_rebuilt_exactly():
    sid, sent = redacted_session()
    r = replay.reconstruct(sid, 1)
    assert not r.exact and r.recorded_sha256 == sha256_hex(canonical_json(sent[0]))
    assert "[REDACTED:email]" in canonical_json(r.request) and "bob@example.com" not in canonical_json(r.request)
    assert len(r.notes) == 1 and r.notes[0].startswith(MARK)
    for args in (["show", sid, "--turn", "1"], ["run", sid, "--turn", "1"]):
        out = CliRunner().invoke(main, ["replay", *args])
        assert out.exit_code == 0, out.output
        assert f"note      {MARK}: this call was recorded with content mode `redacted`" in out.output


def test_a_redacted_call_the_redactors_left_alone_is_still_exact():
    sid = record("refund_over_threshold", content="redacted")
    r = replay.reconstruct(sid, 1)
    assert r.exact and r.notes == []
    assert MARK not in CliRunner().invoke(main, ["replay", "show", sid, "--turn", "1"]).output
