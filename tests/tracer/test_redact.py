"""Redaction: sensitive text never reaches the store, and the request hash stays the exact one."""

from __future__ import annotations

import json
import sys

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

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
    ("token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJib2IifQ.c2lnbmF0dXJl", "[REDACTED:jwt]"),
    ("Authorization: Bearer 0a1b2c3d4e5f6a7b8c9d", "Bearer [REDACTED:token]"),
    ("pay to DE89 3704 0044 0532 0130 00 EUR", "[REDACTED:iban] EUR"),
    ("pay to GB82WEST12345698765432.", "[REDACTED:iban]."),
    ("ssn 078-05-1120", "[REDACTED:ssn]"),
    ("Social Security Number: 536224871", "[REDACTED:ssn]"),
    ("from 203.0.113.195.", "[REDACTED:ip]."),
    ("via 2001:db8::8a2e:370:7334 and fe80::1%eth0", "via [REDACTED:ip] and [REDACTED:ip]"),
    ("slack xoxb-123456789012-AbCdEfGhIj", "[REDACTED:api_key]"),
    ("gh github_pat_11ABCDEFG0123456789_abcdef", "[REDACTED:api_key]"),
    ("aws_secret_access_key: wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "aws_secret_access_key: [REDACTED:api_key]"),
    ("-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----", "[REDACTED:private_key]"),
    ("call +33 6 12 34 56 78", "[REDACTED:phone]"),
])
def test_builtin_redactors_catch(text, marker):
    out = redact_value(text, BUILTIN_REDACTORS)
    assert marker in out


@pytest.mark.parametrize("text", [
    "order A-10045 placed 2026-11-21, total 129.99",
    "tracking 1Z999AA10123456784",
    "id 4111111111111112 fails the Luhn check",
    "session 0193a4b2-1234-7123-8123-123456789012 and span 4111111111111111ab",
    "DE89370400440532013001 fails the IBAN check",
    "flightrec v1.2.3.4, at 12:30:45 on 2026-11-21T12:30:45Z, std::vector",
    "scores 5 10 15 20 25 30; basic questions; the bearer of bad news; token counts",
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


# -- the content policy on spans ------------------------------------------------------------------


def _span_with_everything(provider) -> None:
    """Another instrumentation's span with content in an attribute, an exception event and its status."""
    with pytest.raises(ValueError), provider.get_tracer("app").start_as_current_span(
            "lookup", attributes={"customer": "bob@example.com", "http.status_code": 500,
                                  "gen_ai.input.messages": '[{"content": "bob@example.com"}]'}):
        raise ValueError("no order for bob@example.com")


@pytest.mark.parametrize("mode", ["redacted", "none"])
def test_the_policy_shapes_exception_events_statuses_and_other_instrumentations_attributes(mode, memory):
    provider, exporter = memory
    _span_with_everything(provider)
    (span,) = exporter.get_finished_spans()
    shaped = tracer.ContentPolicy(mode).span(span)
    (event,) = shaped.events
    assert event.attributes["exception.type"] == "ValueError"
    assert shaped.attributes["http.status_code"] == 500
    assert shaped.attributes["customer"] == "[REDACTED:email]"  # metadata: redacted in both modes
    if mode == "redacted":
        assert "[REDACTED:email]" in event.attributes["exception.message"]
        assert "[REDACTED:email]" in event.attributes["exception.stacktrace"]
        assert shaped.status.description == "ValueError: no order for [REDACTED:email]"
        assert json.loads(shaped.attributes["gen_ai.input.messages"]) == [{"content": "[REDACTED:email]"}]
    else:
        assert set(event.attributes) == {"exception.type"}
        assert shaped.status.description is None
        assert "gen_ai.input.messages" not in shaped.attributes


def test_full_mode_passes_spans_as_they_are(memory):
    provider, exporter = memory
    _span_with_everything(provider)
    (span,) = exporter.get_finished_spans()
    assert tracer.ContentPolicy("full").span(span) is span


def test_a_redacted_json_attribute_still_parses():
    policy = tracer.ContentPolicy("redacted")
    # A card number as a JSON number: redacted as a string, the JSON stays valid.
    assert json.loads(policy.text('{"card": 4111111111111111, "to": "bob@example.com"}')) == {
        "card": 4111111111111111, "to": "[REDACTED:email]"}
    assert policy.text("{not json bob@example.com") == "{not json [REDACTED:email]"


def test_redacted_tool_errors_session_events_and_status_reasons():
    """What capture puts on flightrec's spans is redacted as it is set: a span processor of the user's sees no
    secret either."""
    rec = tracer.Recorder(":memory:", content="redacted")
    memory = InMemorySpanExporter()
    rec.provider.add_span_processor(SimpleSpanProcessor(memory))
    with rec.session(agent="support", user="bob@example.com") as session:
        session.event("approval", by="eve@example.com")
        with pytest.raises(KeyError), session.tool_call("lookup", {"email": "bob@example.com"}):
            raise KeyError("no bob@example.com")
        session.set_status("waiting_human", "asked bob@example.com to confirm")
    rec.shutdown()
    text = json.dumps([[dict(s.attributes), s.status.description, [dict(e.attributes) for e in s.events]]
                       for s in memory.get_finished_spans()])
    assert "bob@example.com" not in text and "eve@example.com" not in text
    assert text.count("[REDACTED:email]") == 5


# -- the Presidio adapter -------------------------------------------------------------------------


class _Finding:
    def __init__(self, entity_type: str, start: int, end: int, score: float) -> None:
        self.entity_type, self.start, self.end, self.score = entity_type, start, end, score


class FakeAnalyzer:
    """Presidio's ``AnalyzerEngine.analyze``, answering from a fixed list of (entity, word, score)."""

    def __init__(self, *findings: tuple[str, str, float]) -> None:
        self.findings = findings
        self.calls: list[dict] = []

    def analyze(self, *, text: str, language: str, entities=None, score_threshold=None) -> list[_Finding]:
        self.calls.append({"language": language, "entities": entities})
        return [_Finding(kind, text.index(word), text.index(word) + len(word), score)
                for kind, word, score in self.findings if word in text]


def test_the_presidio_redactor_replaces_what_the_analyzer_finds():
    analyzer = FakeAnalyzer(("PERSON", "Jane Doe", 0.85), ("LOCATION", "Lyon", 0.7), ("PERSON", "Doe", 0.6),
                            ("NRP", "French", 0.2))
    redact = tracer.presidio_redactor(analyzer, entities=["PERSON", "LOCATION", "NRP"], language="fr")
    assert redact("Jane Doe, French, lives in Lyon.") == "[REDACTED:person], French, lives in [REDACTED:location]."
    assert analyzer.calls == [{"language": "fr", "entities": ["PERSON", "LOCATION", "NRP"]}]


def test_the_presidio_redactor_runs_in_the_recorder_after_the_builtins():
    rec = tracer.Recorder(content="redacted", redactors=[tracer.presidio_redactor(FakeAnalyzer(("PERSON", "Jane",
                                                                                                  0.9)))])
    with rec.session(agent="support"):
        run_agent(rec.instrument(FakeAPI().client()), "I'm Jane, jane@example.com")
    rec.shutdown()
    with tracer.Store(rec.db_path, read_only=True) as store:
        everything = json.dumps(store._query("SELECT body FROM content"))
    assert "Jane" not in everything and "jane@example.com" not in everything
    assert "I'm [REDACTED:person], [REDACTED:email]" in everything


def test_without_presidio_the_adapter_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "presidio_analyzer", None)  # as if not installed
    with pytest.raises(tracer.ConfigError, match=r"pip install 'flightrec\[presidio\]'"):
        tracer.presidio_redactor()
