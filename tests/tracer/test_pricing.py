"""Prices: a data file, overridable; an unknown model costs "unknown", never 0."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

import tracer
from tests.tracer.fakes import FakeAPI, message, run_agent
from tracer._cli import main


def test_bundled_prices_cover_cache_reads_and_writes():
    table = tracer.PriceTable.load()
    usage = tracer.Usage(input_tokens=1_000_000, output_tokens=1_000_000, cache_read_tokens=1_000_000,
                         cache_write_5m_tokens=1_000_000, cache_write_1h_tokens=1_000_000)
    assert table.cost("claude-sonnet-4-5", usage) == pytest.approx(3 + 15 + 0.3 + 3.75 + 6)
    assert table.cost("claude-sonnet-4-5-20250929", usage) == table.cost("claude-sonnet-4-5", usage)
    assert table.cost("claude-opus-4", usage) == table.cost("claude-opus-4-0", usage)
    assert table.cost("gpt-9", usage) is None and table.context_window("gpt-9") is None


def test_user_file_overrides_and_extends(tmp_path, monkeypatch):
    path = tmp_path / "prices.json"
    entry = {"input": 1, "output": 2, "cache_write_5m": 1, "cache_write_1h": 1, "cache_read": 0, "context_window": 8000}
    path.write_text(json.dumps({"models": {"my-finetune": entry, "claude-haiku-4-5": {**entry, "input": 100}}}))
    monkeypatch.setenv("FLIGHTREC_PRICES", str(path))
    table = tracer.PriceTable.load()
    assert table.cost("my-finetune", tracer.Usage(input_tokens=1_000_000)) == 1
    assert table.cost("claude-haiku-4-5", tracer.Usage(input_tokens=1_000_000)) == 100
    assert table.cost("claude-opus-4-5", tracer.Usage(output_tokens=1_000_000)) == 25


@pytest.mark.parametrize("content, expected", [
    ("{not json", "is not valid JSON"),
    ('{"models": {"m": {"input": -1}}}', "has a bad entry at models.m"),
])
def test_bad_price_file_is_a_clear_error(tmp_path, content, expected):
    path = tmp_path / "p.json"
    path.write_text(content)
    with pytest.raises(tracer.ConfigError, match=expected):
        tracer.PriceTable.load(path)
    with pytest.raises(tracer.ConfigError, match="cannot read price file"):
        tracer.PriceTable.load(tmp_path / "missing.json")


def test_unknown_model_makes_the_session_cost_unknown():
    api = FakeAPI(lambda body: message([{"type": "text", "text": "hi"}], "end_turn", model="acme-llm-1"))
    rec = tracer.Recorder()
    with rec.session(agent="support") as s:
        run_agent(rec.instrument(api.client()), model="acme-llm-1")
    rec.shutdown()
    with tracer.Store(rec.db_path, read_only=True) as store:
        summary = store.get_session(s.id)
        call = store.session_account(s.id).turns[0].llm_calls[0]
    assert summary.cost_usd is None and call.cost_usd is None
    out = CliRunner().invoke(main, ["traces", "list"]).output
    assert "unknown" in out and "$0.0000" not in out
