"""The PII corpus: every kind of secret, in every place an agent's strings go, in each content mode.

A small agent on the fake model puts the whole corpus in each place: the system prompt and the
customer's message, the model's text, reasoning and tool arguments, a tool's result and a tool's
error, session and event attributes (and one that other code sets on the session's span), the
session's status reason and its exception, OpenTelemetry's ``record_exception`` (on the session and
on another instrumentation's span, whose attributes hold the conventions' content keys too), and an
API error's message. Then every column of every table (found in DuckDB's catalog, so that a new
table is scanned too) and the raw bytes of the database, its WAL and the spill are searched, and so
are the bytes posted to an OTLP endpoint (tests/evals/test_redaction.py does the same for eval
records). ``redacted`` and ``none`` must leak nothing; ``full``, the control, must leak everything.
"""

from __future__ import annotations

import json
from pathlib import Path

import anthropic
import duckdb
import pytest
from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

import tracer
from tests.tracer.fakes import OtlpBackend
from tests.tracer.pii_corpus import NEEDLES, TEXT, found
from tracer._collector import Collector
from tracer.testing import FakeModel, error, reply, thinking, tool_use

MODES = ("full", "redacted", "none")
TOOLS = [{"name": name, "description": "Looks the customer up.", "input_schema": {
    "type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}} for name in ("lookup", "explode")]


def corpus_model() -> FakeModel:
    return FakeModel([
        error(400, f"bad request: {TEXT}"),
        reply(thinking(TEXT), TEXT, tool_use("lookup", {"q": TEXT}), tool_use("explode", {"q": TEXT})),
        reply(f"Done. {TEXT}"),
    ])


@tracer.tool
def lookup(q: str) -> dict[str, str]:
    return {"record": q}


@tracer.tool
def explode(q: str) -> None:
    raise ValueError(f"lookup failed for {q}")


def run_corpus_agent(rec: tracer.Recorder) -> None:
    """One session that puts the corpus everywhere, and ends in an exception that holds it."""
    client = rec.instrument(corpus_model().client())
    app = rec.provider.get_tracer("corpus-app")
    params = {"model": "claude-haiku-4-5", "max_tokens": 256, "system": f"Rules. {TEXT}", "tools": TOOLS}
    messages: list[dict] = [{"role": "user", "content": TEXT}]
    with pytest.raises(RuntimeError), rec.session(agent="corpus", customer=TEXT, notes=[TEXT]) as session:
        session.event("note", detail=TEXT, extra={"k": TEXT})
        with pytest.raises(anthropic.BadRequestError):
            client.messages.create(messages=messages, **params)
        answer = client.messages.create(messages=messages, **params)
        messages.append({"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in answer.content]})
        results = []
        for block in answer.content:
            if block.type == "tool_use":
                try:
                    out = {"lookup": lookup, "explode": explode}[block.name](**block.input)
                    results.append({"type": "tool_result", "tool_use_id": block.id, "content": json.dumps(out)})
                except ValueError as exc:
                    results.append({"type": "tool_result", "tool_use_id": block.id, "content": str(exc),
                                    "is_error": True})
        messages.append({"role": "user", "content": results})
        client.messages.create(messages=messages, **params)
        # Another instrumentation's span: its attributes, its exception event, its status.
        with pytest.raises(ValueError), app.start_as_current_span("crm.lookup", attributes={
                "crm.note": TEXT, "gen_ai.input.messages": json.dumps([{"role": "user", "content": TEXT}]),
                "gen_ai.prompt.0.content": TEXT, "crm.ids": [TEXT, "plain"]}):
            raise ValueError(TEXT)
        with app.start_as_current_span("crm.status") as span:
            span.set_status(Status(StatusCode.ERROR, TEXT))
        trace.get_current_span().record_exception(KeyError(TEXT))
        trace.get_current_span().set_attribute("app.customer", TEXT)  # other code, on flightrec's session span
        session.set_status("escalated", TEXT)
        raise RuntimeError(TEXT)


def scan_store(db: Path) -> tuple[dict[str, list[str]], list[str]]:
    """The needles found in the text of every column of each table, and in the raw files."""
    texts: dict[str, list[str]] = {}
    with duckdb.connect(str(db), read_only=True) as con:
        columns = con.execute("SELECT table_name, column_name FROM duckdb_columns() WHERE database_name = "
                              "current_database() AND schema_name = 'main'").fetchall()
        assert {"spans", "content", "llm_calls", "tool_calls", "sessions", "eval_results"} <= {t for t, _ in columns}
        for table, column in columns:
            rows = con.execute(f'SELECT CAST("{column}" AS VARCHAR) FROM "{table}"').fetchall()
            texts.setdefault(table, []).extend(r[0] for r in rows if r[0] is not None)
    files = [db, Path(f"{db}.wal"), *Path(f"{db}.spill").glob("**/*")]
    raw = b"".join(p.read_bytes() for p in files if p.is_file())
    return {t: hits for t, v in texts.items() if (hits := found("\n".join(v)))}, found(raw)


@pytest.mark.parametrize("mode", MODES)
def test_the_store_holds_no_secret_unless_content_is_full(mode, tmp_path):
    db = tmp_path / "corpus.duckdb"
    rec = tracer.Recorder(db, content=mode)
    run_corpus_agent(rec)
    rec.shutdown()
    in_tables, in_bytes = scan_store(db)
    if mode == "full":  # the control: the scan sees what is there
        assert sorted({n for hits in in_tables.values() for n in hits}) == sorted(NEEDLES)
    else:
        assert in_tables == {} and in_bytes == []


@pytest.mark.parametrize("mode", MODES)
def test_an_otlp_export_holds_no_secret_unless_content_is_full(mode):
    backend = OtlpBackend()
    try:
        # Bodies too: everything an endpoint can be sent.
        rec = tracer.Recorder(content=mode, endpoint=backend.url, otlp_bodies=True)
        run_corpus_agent(rec)
        rec.shutdown()
    finally:
        backend.close()
    sent = b"".join(backend.bodies)
    assert sent
    assert sorted(found(sent)) == (sorted(NEEDLES) if mode == "full" else [])


@pytest.mark.parametrize("mode", MODES)
def test_serve_stores_no_secret_a_full_sender_sends_unless_content_is_full(mode, tmp_path):
    # The sender records everything (bodies too, and the corpus in its resource): what the store
    # keeps is the collector's policy alone, as for an agent in another language.
    db = tmp_path / "served.duckdb"
    with Collector(db, port=0, content=mode) as collector:
        rec = tracer.Recorder(content="full", endpoint=collector.url, otlp_bodies=True,
                              service_name=f"corpus {TEXT}")
        run_corpus_agent(rec)
        rec.shutdown()
        assert collector.stats.spans_committed > 0 and collector.stats.bad_requests == 0
    in_tables, in_bytes = scan_store(db)
    if mode == "full":
        assert sorted({n for hits in in_tables.values() for n in hits}) == sorted(NEEDLES)
    else:
        assert in_tables == {} and in_bytes == []
