"""The Overview and Costs pages against the demo store, and every new page on an empty store."""

from __future__ import annotations

import re

import duckdb
import pytest

import tracer
from dashboard import _ui
from dashboard._source import DB_ENV, MODE_ENV
from tests.dashboard.conftest import app, drawn, follow, html_links, link_tables, metrics, no_exceptions


def _metrics(at) -> dict[str, str]:
    return {label: m.value for label, m in metrics(at).items()}


def _one(store, sql: str):
    with tracer.Store(str(store), read_only=True) as s:
        return s.sql(sql)[0][0]


_PRODUCTION = "FROM sessions WHERE origin = 'production'"
_PRODUCTION_CALLS = "FROM llm_calls JOIN sessions USING (session_id) WHERE origin = 'production'"


def test_overview_shows_production_by_default_and_its_counts_match_the_store(store):
    # A fork that stopped at once: made from a recorded session, not traffic, it must not count.
    with duckdb.connect(str(store)) as con:
        con.execute("INSERT INTO sessions SELECT * REPLACE ('fork-1' AS session_id, 'fork' AS origin, 'stopped' AS "
                    "status, session_id AS source_session_id) FROM sessions WHERE origin = 'production' LIMIT 1")
    at = app("overview")
    no_exceptions(at)
    shown = _metrics(at)
    production = _one(store, f"SELECT count(*) {_PRODUCTION}")
    assert 0 < production < _one(store, "SELECT count(*) FROM sessions")  # the demo's eval runs are not production
    assert shown["Sessions"] == f"{production:,}"
    assert shown["Cost"] == _ui.usd(_one(store, f"SELECT sum(cost_usd) {_PRODUCTION}"))
    assert shown["Open alerts"] == str(_one(store, "SELECT count(*) FROM alerts WHERE status = 'open'"))
    ok = _one(store, f"SELECT count(*) FILTER (WHERE status = 'ok') / count(*) {_PRODUCTION}")
    assert shown["Completion rate"] == f"{ok:.1%}"
    assert at.query_params["origin"] == "production"
    # The demo is recorded in about a minute: its charts get buckets of seconds, not one bar a day.
    assert re.search(r"in buckets of \d+ s\.", drawn(at)), drawn(at)


def test_the_origin_switch_shows_eval_sessions_and_the_rest(store):
    at = follow(html_links(app("overview", range="30d"))["evals"])
    no_exceptions(at)
    assert at.query_params["range"] == "30d"  # the switch keeps the other choices
    evals_count = _one(store, "SELECT count(*) FROM sessions WHERE origin = 'eval'")
    assert _metrics(at)["Sessions"] == f"{evals_count:,}"
    assert at.query_params["origin"] == "evals"  # kept in the URL, so a link shows the same sessions
    at = app("overview", origin="all")
    assert _metrics(at)["Sessions"] == f"{_one(store, 'SELECT count(*) FROM sessions'):,}"
    at = app("sessions", origin="evals")
    no_exceptions(at)
    assert f"{evals_count:,} eval sessions match" in drawn(at)
    assert all(o.startswith("eval ") for o in link_tables(at)[0].column("origin"))
    at = app("sessions")
    assert f"{_one(store, f'SELECT count(*) {_PRODUCTION}'):,} production sessions match" in drawn(at)


def test_open_alerts_and_the_alert_chart_follow_the_origin_switch(store):
    # The demo's detectors judged production only; an alert raised on an eval trial (`flightrec detect
    # --origin eval`) belongs to the evals view, and one seen in no session (a latency drift) to production.
    production = _one(store, "SELECT count(*) FROM alerts WHERE status = 'open'")
    assert production > 0
    with duckdb.connect(str(store)) as con:
        sid, seen = con.execute("SELECT session_id, end_ns FROM sessions WHERE origin = 'eval' LIMIT 1").fetchone()
        for fingerprint, observation in (("on-a-trial", sid), ("on-no-session", "1-2")):
            con.execute("INSERT INTO alerts SELECT * REPLACE (? AS fingerprint, ? AS alert_id, 'open' AS status, "
                        "? AS last_seen_ns) FROM alerts LIMIT 1", [fingerprint, fingerprint[:10], seen])
            con.execute("INSERT INTO alert_observations VALUES (?, ?, ?)", [fingerprint, observation, seen])
    assert _metrics(app("overview"))["Open alerts"] == str(production + 1)
    assert _metrics(app("overview", origin="evals"))["Open alerts"] == "1"
    assert _metrics(app("overview", origin="all"))["Open alerts"] == str(production + 2)
    at = app("overview", origin="evals")
    no_exceptions(at)
    drawn = "".join(e.proto.body for e in at.get("html"))
    assert "No alert observed" not in drawn  # the chart has the trial's alert
    assert "origin=evals" in html_links(at)["See the alerts"]
    # The Alerts page follows the same switch.
    listed = {view: link_tables(app("alerts", origin=view))[0].column("alert") for view in ("evals", "all")}
    assert listed["evals"] == ["on-a-trial"] and {"on-a-trial", "on-no-sess"} <= set(listed["all"])
    production = link_tables(app("alerts"))[0].column("alert")
    assert "on-no-sess" in production and "on-a-trial" not in production


def test_an_eval_run_links_to_its_sessions(store):
    run_id, trials = tracer.Store(str(store), read_only=True).sql(
        "SELECT run_id, total_trials FROM eval_runs ORDER BY started_ns LIMIT 1")[0]
    at = app("evals", run=run_id)
    no_exceptions(at)
    link = html_links(at)[f"Its {trials} trial sessions, in Sessions"]
    assert f"run={run_id}" in link and "origin=evals" in link
    at = follow(link)
    no_exceptions(at)
    assert f"{trials:,} eval sessions match" in drawn(at), drawn(at)
    assert all(o.startswith(f"eval {run_id[:8]}") for o in link_tables(at)[0].column("origin"))


def test_overview_range_is_a_deep_link(store):
    at = app("overview", range="custom", **{"from": "2001-01-01", "to": "2001-01-31"})
    no_exceptions(at)
    assert "No production sessions started in 2001-01-01 to 2001-01-31" in at.info[0].value
    at = app("overview", range="1h")
    no_exceptions(at)
    assert _metrics(at)["Sessions"] == f"{_one(store, f'SELECT count(*) {_PRODUCTION}'):,}"


def _calls(count: str) -> int:
    return int(count.replace(",", ""))


def test_costs_total_and_cache_savings_match_the_store(store):
    at = app("costs")
    no_exceptions(at)
    shown = _metrics(at)
    assert shown["Known cost"] == _ui.usd(_one(store, f"SELECT sum(llm_calls.cost_usd) {_PRODUCTION_CALLS}"))
    table = tracer.PriceTable.load()
    with tracer.Store(str(store), read_only=True) as s:  # the demo's model_fallback scenario answers with two models
        models = dict(s.sql(f"SELECT coalesce(llm_calls.response_model, llm_calls.model), "
                            f"sum(llm_calls.cache_read_tokens) {_PRODUCTION_CALLS} GROUP BY 1"))
    savings = sum(reads * (table.lookup(m).input - table.lookup(m).cache_read) / 1e6 for m, reads in models.items())
    assert shown["Cache savings"] == _ui.usd(savings)
    by_model = link_tables(at)[0]
    assert sorted(by_model.column("model")) == sorted(models) and len(models) == 2
    assert sum(map(_calls, by_model.column("calls"))) == _one(store, f"SELECT count(*) {_PRODUCTION_CALLS}")


def test_costs_by_route_sum_to_the_total(store):
    at = app("costs", by="route")
    no_exceptions(at)
    by_route = link_tables(at)[0]
    with tracer.Store(str(store), read_only=True) as s:
        routes = s.sql("SELECT coalesce(s.route, '(none)') AS r, count(*), sum(c.cost_usd) FROM llm_calls c "
                       "JOIN sessions s USING (session_id) WHERE s.origin = 'production' GROUP BY r "
                       "ORDER BY 3 DESC")
    assert len(routes) > 1
    # Most expensive first, each with its calls and cost; the routes' calls add up to every call.
    assert [(r["route"], _calls(r["calls"]), r["cost"]) for r in by_route.rows] == \
        [(route, calls, _ui.usd(cost)) for route, calls, cost in routes]
    assert sum(calls for _, calls, _ in routes) == _one(store, f"SELECT count(*) {_PRODUCTION_CALLS}")
    # Tags: the reference agent tags how a session ran; a session counts under each of its tags.
    at = app("costs", by="tag")
    no_exceptions(at)
    assert {"stream", "(none)"} <= set(link_tables(at)[0].column("tag"))


def test_costs_over_time_are_bucketed_from_the_range_and_the_range_is_shared(store):
    at = app("costs", by="day")  # an older link's by=day is the time view
    no_exceptions(at)
    assert at.query_params["by"] == "time"
    by_time = link_tables(at)[0]
    assert len(by_time.rows) > 1  # a minute-long demo gets buckets of seconds, not one bar a day
    assert by_time.links == [None] * len(by_time.rows)  # a bucket lists no sessions of its own
    at = app("costs", range="custom", **{"from": "2001-01-01", "to": "2001-01-31"})
    no_exceptions(at)
    assert "in 2001-01-01 to 2001-01-31" in at.info[0].value
    # The Overview's link to Costs keeps its range and sessions.
    at = app("overview", range="7d", origin="evals")
    link = html_links(at)["Where the money goes"]
    assert link.startswith("/costs?") and "range=7d" in link and "origin=evals" in link


def test_top_sessions_by_cost_open_the_session_page(store):
    at = app("costs")
    no_exceptions(at)
    top = link_tables(at)[1]
    # Ranked by cost with the sub-agents' sessions (delegated_research's parent starts one).
    with tracer.Store(str(store), read_only=True) as s:
        rolled = {sid: (s.session_tree(sid).node(sid).subtree_cost_usd_known_part, start)
                  for sid, start in s.sql(f"SELECT session_id, start_ns {_PRODUCTION}")}
        parents = dict(s.sql(f"SELECT parent_session_id, count(*) {_PRODUCTION} AND parent_session_id IS NOT NULL "
                             "GROUP BY 1"))
    expected = sorted(rolled, key=lambda sid: (-rolled[sid][0], -rolled[sid][1]))[:20]
    assert top.links == [f"/session?id={sid}" for sid in expected]
    assert parents, "the demo has a session with a sub-agent"
    for sid, row in zip(expected, top.rows, strict=True):
        assert row["with sub-agents"] == (_ui.usd(rolled[sid][0]) if sid in parents else "–")
        assert row["sub-agent sessions"] == str(parents.get(sid, 0))
    at = follow(top.links[0])
    no_exceptions(at)
    assert at.title[0].value.startswith(f"Session {expected[0][:13]}")


def test_a_route_clicked_in_costs_lists_its_most_expensive_sessions(store):
    at = app("costs", by="route", range="all")
    no_exceptions(at)
    assert not any("scrollIntoView" in h.proto.body for h in at.html)  # no route picked: nothing to scroll to
    routes = link_tables(at)[0]
    route = routes.column("route")[0]  # the most expensive route first
    assert routes.links[0] == _ui.url("costs", range="all", origin="production", by="route", route=route)
    at = follow(routes.links[0])
    no_exceptions(at)
    assert at.query_params["route"] == route
    assert f"Most expensive sessions of route {route}" in drawn(at)
    # The page loaded anew at its top: it scrolls to the route's sessions, once.
    assert any("st-key-costs_top_sessions" in h.proto.body and "scrollIntoView" in h.proto.body for h in at.html)
    at.run()
    assert not any("scrollIntoView" in h.proto.body for h in at.html)
    shown = link_tables(at)[1]
    expected = tracer.Store(str(store), read_only=True).sql(
        f"SELECT session_id {_PRODUCTION} AND coalesce(route, '(none)') = ?", [route])
    assert {link.split("id=")[1] for link in shown.links} <= {sid for (sid,) in expected}
    assert len(shown.rows) == min(20, len(expected))
    assert set(shown.column("route")) == {route}
    # Another breakdown drops the route; a link lists every session again.
    at = follow(html_links(at)["All sessions, of every route"])
    no_exceptions(at)
    assert "route" not in at.query_params and at.query_params["by"] == "route"
    assert "Most expensive sessions Click" in drawn(at)


def test_costs_flags_calls_with_no_known_price(store):
    # A copy of a real call, answered by a model the price table does not know.
    with duckdb.connect(str(store)) as con:
        con.execute("INSERT INTO llm_calls SELECT * REPLACE ('f00d' AS span_id, 'mystery-model' AS model, "
                    "'mystery-model' AS response_model, NULL AS cost_usd) FROM llm_calls WHERE status = 'ok' "
                    "AND session_id IN (SELECT session_id FROM sessions WHERE origin = 'production') LIMIT 1")
    at = app("costs")
    assert not at.exception
    assert "1 successful call uses a model with no known price" in at.warning[0].value
    mystery = next(r for r in link_tables(at)[0].rows if r["model"] == "mystery-model")
    # Unknown, not $0: the row has no cost and no savings, and says how many calls it could not price.
    assert mystery["unpriced calls"] == "1"
    assert (mystery["cost"], mystery["cache savings"]) == ("unknown", "unknown")


@pytest.mark.parametrize("page", ["overview", "costs", "evals", "alerts", "review"])
def test_an_empty_store_shows_how_to_fill_it(page, tmp_path, monkeypatch):
    db = tmp_path / "empty.duckdb"
    tracer.Store(str(db)).close()
    monkeypatch.setenv(DB_ENV, str(db))
    monkeypatch.setenv(MODE_ENV, "read_only")
    at = app(page)
    no_exceptions(at)
    # An info box, Streamlit's or one drawn with the page's HTML (_html.callout).
    said = [i.value for i in at.info] + [h.proto.body for h in at.get("html") if "fr-info" in h.proto.body]
    assert said and ("flightrec" in said[0] or "make demo" in said[0]), said
