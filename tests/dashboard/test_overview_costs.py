"""The Overview and Costs pages against the demo store, and every new page on an empty store."""

from __future__ import annotations

import re

import duckdb
import pytest

import tracer
from dashboard import _ui
from dashboard._source import DB_ENV, MODE_ENV
from tests.dashboard.conftest import app, no_exceptions


def _metrics(at) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def _one(store, sql: str):
    with tracer.Store(str(store), read_only=True) as s:
        return s.sql(sql)[0][0]


def test_overview_headline_matches_the_store(store):
    at = app("overview")
    no_exceptions(at)
    shown = _metrics(at)
    assert shown["Sessions"] == f"{_one(store, 'SELECT count(*) FROM sessions'):,}"
    assert shown["Cost"] == _ui.usd(_one(store, "SELECT sum(cost_usd) FROM sessions"))
    assert shown["Open alerts"] == str(_one(store, "SELECT count(*) FROM alerts WHERE status = 'open'"))
    ok = _one(store, "SELECT count(*) FILTER (WHERE status = 'ok') / count(*) FROM sessions")
    assert shown["Success rate"] == f"{ok:.1%}"
    # The demo is recorded in about a minute: its charts get buckets of seconds, not one bar a day.
    assert any(re.search(r"in buckets of \d+ s\.", c.value) for c in at.caption), [c.value for c in at.caption]


def test_overview_range_is_a_deep_link(store):
    at = app("overview", range="custom", **{"from": "2001-01-01", "to": "2001-01-31"})
    no_exceptions(at)
    assert "No session started in 2001-01-01 to 2001-01-31" in at.info[0].value
    at = app("overview", range="1h")
    no_exceptions(at)
    assert _metrics(at)["Sessions"] == f"{_one(store, 'SELECT count(*) FROM sessions'):,}"


def test_costs_total_and_cache_savings_match_the_store(store):
    at = app("costs")
    no_exceptions(at)
    shown = _metrics(at)
    assert shown["Known cost"] == _ui.usd(_one(store, "SELECT sum(cost_usd) FROM llm_calls"))
    prices = tracer.PriceTable.load().lookup("claude-haiku-4-5")
    reads = _one(store, "SELECT sum(cache_read_tokens) FROM llm_calls")
    assert shown["Cache savings"] == _ui.usd(reads * (prices.input - prices.cache_read) / 1e6)
    by_model = at.dataframe[0].value
    assert by_model["model"].tolist() == ["claude-haiku-4-5"]
    assert by_model["calls"].iloc[0] == _one(store, "SELECT count(*) FROM llm_calls")


def test_costs_flags_calls_with_no_known_price(store):
    # A copy of a real call, answered by a model the price table does not know.
    with duckdb.connect(str(store)) as con:
        con.execute("INSERT INTO llm_calls SELECT * REPLACE ('f00d' AS span_id, 'mystery-model' AS model, "
                    "'mystery-model' AS response_model, NULL AS cost_usd) FROM llm_calls WHERE status = 'ok' LIMIT 1")
    at = app("costs")
    assert not at.exception
    assert "1 successful call uses a model with no known price" in at.warning[0].value
    by_model = at.dataframe[0].value.set_index("model")
    # Unknown, not $0: the row has no cost and no savings, and says how many calls it could not price.
    assert by_model.loc["mystery-model", "unpriced_calls"] == 1
    assert by_model.loc["mystery-model"][["cost_usd", "saved_usd"]].isna().all()


@pytest.mark.parametrize("page", ["overview", "costs", "evals", "alerts"])
def test_an_empty_store_shows_how_to_fill_it(page, tmp_path, monkeypatch):
    db = tmp_path / "empty.duckdb"
    tracer.Store(str(db)).close()
    monkeypatch.setenv(DB_ENV, str(db))
    monkeypatch.setenv(MODE_ENV, "read_only")
    at = app(page)
    no_exceptions(at)
    assert at.info and ("flightrec" in at.info[0].value or "make demo" in at.info[0].value), \
        [i.value for i in at.info]
