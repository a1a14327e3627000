"""Eval records (``eval_results``: errors, score explanations) and the trial sessions hold no secret of the
PII corpus unless the content mode, here from ``$FLIGHTREC_CONTENT``, is full."""

from __future__ import annotations

import json

import anthropic
import pytest

import evals
from tests.tracer.pii_corpus import NEEDLES, TEXT
from tests.tracer.test_pii_corpus import MODES, scan_store
from tracer.testing import FakeModel, reply


@evals.agent("corpus-eval", model=lambda seed: FakeModel([reply(f"Answer: {TEXT}")]).client())
def corpus_eval_agent(case: evals.Case, client: anthropic.Anthropic) -> str:
    """Answers with the corpus, or fails with it."""
    if case.input.extra.get("fail"):
        raise ValueError(TEXT)
    return client.messages.create(model="claude-haiku-4-5", max_tokens=64,
                                  messages=[{"role": "user", "content": "hello"}]).content[0].text


@pytest.mark.parametrize("mode", MODES)
def test_eval_records_hold_no_secret_unless_content_is_full(mode, tmp_path, monkeypatch):
    monkeypatch.setenv("FLIGHTREC_CONTENT", mode)
    dataset = tmp_path / "corpus.yaml"  # JSON is YAML
    dataset.write_text(json.dumps({"name": "corpus", "cases": [
        {"id": "answers", "expect": [{"type": "final_contains", "text": "no such words"}]},
        {"id": "fails", "input": {"extra": {"fail": True}}, "expect": [{"type": "status", "equals": "ok"}]}]}))
    db = tmp_path / "evals.duckdb"
    evals.run_eval(str(dataset), agent="tests.evals.test_redaction:corpus_eval_agent", trials=1, seed=1, db=str(db))
    in_tables, in_bytes = scan_store(db)
    if mode == "full":
        assert sorted(in_tables["eval_results"]) == sorted(NEEDLES)
    else:
        assert in_tables == {} and in_bytes == []
