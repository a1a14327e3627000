"""The Sessions page against the demo store."""

from __future__ import annotations

import pytest

import tracer
from tests.dashboard.conftest import app, click, no_exceptions


def test_sessions_lists_every_production_session_with_links(store):
    at = app("sessions")
    no_exceptions(at)
    table = at.dataframe[0].value
    with tracer.Store(str(store), read_only=True) as s:
        total = s.sql("SELECT count(*) FROM sessions WHERE origin = 'production'")[0][0]
    assert len(table) == min(total, 100)
    assert table["session"].iloc[0] == table["session_id"].iloc[0][:13]
    assert f"{total:,} production sessions match" in at.caption[0].value


def test_a_click_on_a_row_opens_its_session_in_the_same_tab(store):
    at = app("sessions")
    sid = at.dataframe[0].value["session_id"].iloc[3]
    click(at, "sessions_table", 3, "status")
    no_exceptions(at)
    assert at.query_params["id"] == sid
    assert at.title[0].value.startswith(f"Session `{sid[:13]}")


def _count(at) -> int:
    return int(at.caption[0].value.split()[0].replace(",", ""))


def test_filters_and_sorting_match_the_store(store):
    with tracer.Store(str(store), read_only=True) as s:
        loops = s.sql("SELECT count(*) FROM sessions WHERE status = 'guard:loop' AND origin = 'production'")[0][0]
        costs = [c for (c,) in s.sql("SELECT cost_usd FROM sessions WHERE unpriced_calls = 0 AND origin = 'production' "
                                     "ORDER BY cost_usd DESC LIMIT 5")]
    assert loops > 0
    at = app("sessions")
    at.multiselect(key="sessions_status").set_value(["guard:loop"]).run()
    no_exceptions(at)
    assert _count(at) == loops
    assert set(at.dataframe[0].value["status"]) == {"guard:loop"}
    at.multiselect(key="sessions_status").set_value([]).run()
    at.selectbox(key="sessions_sort").set_value("cost").run()
    assert at.dataframe[0].value["cost_usd"].head(5).tolist() == pytest.approx(costs)  # sessions can tie


def test_search_finds_a_session_by_id_prefix_and_by_what_its_tools_returned(store):
    with tracer.Store(str(store), read_only=True) as s:
        sid = s.sql("SELECT session_id FROM sessions WHERE origin = 'production' ORDER BY start_ns LIMIT 1")[0][0]
        hits = s.sql("SELECT count(DISTINCT session_id) FROM tool_calls JOIN sessions USING (session_id) "
                     "WHERE result ILIKE '%Standing desk%' AND origin = 'production'")[0][0]
    at = app("sessions", q=sid[:23])  # 13 characters are the millisecond, which two demo sessions can share
    no_exceptions(at)
    assert at.dataframe[0].value["session_id"].tolist() == [sid]
    at.text_input(key="sessions_q").input("Standing desk").run()
    assert _count(at) >= hits > 0
    at.text_input(key="sessions_q").input("no session says this").run()
    no_exceptions(at)
    assert any("No session matches" in i.value for i in at.info)
