"""Redaction: sensitive text never reaches the store, and the request hash stays the exact one."""

from __future__ import annotations

import json

import pytest

import tracer
from tests.tracer.fakes import FakeAPI, run_agent
from tracer import canonical_json, sha256_hex
from tracer._redact import BUILTIN_REDACTORS, redact_value


@pytest.mark.parametrize("text, marker", [
    ("write to jane.doe+shop@example.co.uk today", "[REDACTED:email]"),
    ("call +44 20 7946 0958 after 5", "[REDACTED:phone]"),
    ("call (415) 555-0100", "[REDACTED:phone]"),
    ("card 4111 1111 1111 1111 exp 12/29", "[REDACTED:card]"),
    ("card 5500-0000-0000-0004", "[REDACTED:card]"),
    ("key sk-ant-api03-AbCdEfGhIjKlMnOpQrStUv", "[REDACTED:api_key]"),
    ("aws AKIAIOSFODNN7EXAMPLE", "[REDACTED:api_key]"),
])
def test_builtin_redactors_catch(text, marker):
    out = redact_value(text, BUILTIN_REDACTORS)
    assert marker in out


@pytest.mark.parametrize("text", [
    "order A-10045 placed 2026-11-21, total 129.99",
    "tracking 1Z999AA10123456784",
    "id 4111111111111112 fails the Luhn check",
])
def test_builtin_redactors_leave_ordinary_text(text):
    assert redact_value(text, BUILTIN_REDACTORS) == text


def test_redacted_mode_stores_no_secret_and_keeps_the_exact_hash():
    api = FakeAPI()
    rec = tracer.Recorder(content="redacted", redactors=[lambda s: s.replace("A-1", "[REDACTED:order]")])
    with rec.session(agent="support"):
        run_agent(rec.instrument(api.client()), "I'm bob@example.com, card 4111 1111 1111 1111: where is A-1?")
    rec.shutdown()
    with tracer.Store(rec.db_path, read_only=True) as store:
        everything = json.dumps([store._query(f"SELECT * FROM {t}") for t in
                                 ("spans", "content", "llm_calls", "tool_calls")], default=str)
        calls = store._query("SELECT request_sha256 FROM llm_calls ORDER BY start_ns")
        result = store.verify_requests()
    for secret in ("bob@example.com", "4111 1111", "help@shop.example", "A-1"):
        assert secret not in everything
    assert "[REDACTED:email]" in everything and "[REDACTED:order]" in everything
    # The recorded hash is of the request that was really sent, before redaction.
    assert [c[0] for c in calls] == [sha256_hex(canonical_json(b)) for b in api.requests]
    assert result.exact == 0
    assert all("redacted at capture" in f["reason"] for f in result.failures)
