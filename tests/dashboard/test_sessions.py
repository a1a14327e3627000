"""The Sessions page against the demo store."""

from __future__ import annotations

import re

import tracer
from dashboard import _ui
from tests.dashboard.conftest import app, drawn, follow, link_tables, no_exceptions, submit

_PAGE = 50  # sessions a page


def _sql(store, sql: str, params: list | None = None) -> list[tuple]:
    with tracer.Store(str(store), read_only=True) as s:
        return s.sql(sql, params or [])


def _count(at) -> int:
    return int(re.search(r"([\d,]+) [a-z ]*sessions match", drawn(at))[1].replace(",", ""))


def test_sessions_lists_the_newest_production_sessions_first_each_a_link_to_its_page(store):
    at = app("sessions")
    no_exceptions(at)
    [table] = link_tables(at)
    newest = [sid for (sid,) in _sql(store, "SELECT session_id FROM sessions WHERE origin = 'production' "
                                            f"ORDER BY start_ns DESC, session_id LIMIT {_PAGE}")]
    total = _sql(store, "SELECT count(*) FROM sessions WHERE origin = 'production'")[0][0]
    assert f"{total:,} production sessions match" in drawn(at)
    assert table.links == [f"/session?id={sid}" for sid in newest]
    assert table.column("session") == [sid[:13] for sid in newest]
    assert table.headers[:3] == ["session", "status", "why it ended"]  # in view at 1440 px, before the numbers
    assert "origin" not in table.headers  # every session of the production view is production's
    assert "started (UTC) ↓" in table.headers  # sorted newest first, and marked so


def test_a_row_opens_its_session_in_the_same_tab(store):
    [table] = link_tables(app("sessions"))
    at = follow(table.links[3])
    no_exceptions(at)
    assert at.title[0].value.startswith(f"Session {table.column('session')[3]}")  # the row clicked, not another


def test_a_header_sorts_by_its_column_and_again_the_other_way(store):
    costs = [c for (c,) in _sql(store, "SELECT cost_usd FROM sessions WHERE unpriced_calls = 0 AND origin = "
                                       "'production' ORDER BY cost_usd DESC LIMIT 5")]
    [table] = link_tables(app("sessions"))
    query = table.sort_link("cost")
    assert query["sort"] == ["cost"] and query["desc"] == ["1"]  # dearest first
    at = follow(table.header_links[table.headers.index("cost")])
    no_exceptions(at)
    [table] = link_tables(at)
    assert table.column("cost")[:5] == [_ui.usd(c) for c in costs]
    assert "cost ↓" in table.headers
    at = follow(table.header_links[table.headers.index("cost ↓")])  # the same header again: cheapest first
    [table] = link_tables(at)
    cheapest = _sql(store, "SELECT min(cost_usd) FROM sessions WHERE unpriced_calls = 0 AND origin = 'production'")
    assert table.column("cost")[0] == _ui.usd(cheapest[0][0]) and "cost ↑" in table.headers


def test_filters_are_kept_in_the_url_and_by_the_sort_and_page_links(store):
    loops = _sql(store, "SELECT count(*) FROM sessions WHERE status = 'guard:loop' AND origin = 'production'")[0][0]
    assert loops > 0
    at = submit(app("sessions"), status=["guard:loop"])
    no_exceptions(at)
    assert _count(at) == loops
    [table] = link_tables(at)
    assert set(table.column("status")) == {"guard:loop"}
    assert at.query_params["status"] == "guard:loop"
    assert table.sort_link("turns")["status"] == ["guard:loop"]  # a sort keeps the filter
    # Opened from the URL, as a header link loads it.
    at = app("sessions", status="guard:loop", sort="turns")
    no_exceptions(at)
    [table] = link_tables(at)
    assert set(table.column("status")) == {"guard:loop"} and _count(at) == loops
    turns = [int(t) for t in table.column("turns")]
    assert turns == sorted(turns, reverse=True)


def test_more_sessions_than_a_page_get_page_links_and_a_count_of_those_shown(store):
    at = app("sessions", origin="all")
    total = _sql(store, "SELECT count(*) FROM sessions")[0][0]
    assert total > _PAGE, "the demo has more sessions than a page"
    assert f"{total:,} sessions match; showing 1–{_PAGE}" in drawn(at)
    pager = next(h.proto.body for h in at.get("html") if "next ›" in h.proto.body)
    assert f"page 1 of {-(-total // _PAGE)}" in pager
    link = next(a for a in pager.split('"') if "page=2" in a)
    at = follow(link)
    no_exceptions(at)
    [table] = link_tables(at)
    oldest = _sql(store, f"SELECT session_id FROM sessions ORDER BY start_ns DESC, session_id "
                         f"LIMIT {_PAGE} OFFSET {_PAGE}")
    assert table.links == [f"/session?id={sid}" for (sid,) in oldest]
    assert f"{total:,} sessions match; showing {_PAGE + 1}–" in drawn(at)
    # A sort or a new filter starts again from the first page: page 2 of the old order means nothing.
    [table] = link_tables(at)
    assert "page" not in table.sort_link("cost")
    at = submit(at, status=["ok"])
    no_exceptions(at)
    assert "page" not in at.query_params and "showing 1–" in drawn(at)
    # A page past the last (an old link, or fewer sessions since) shows the last page.
    pages = -(-total // _PAGE)
    at = app("sessions", origin="all", page="999")
    no_exceptions(at)
    assert f"{total:,} sessions match; showing {(pages - 1) * _PAGE + 1:,}–{total:,}" in drawn(at)
    assert f"page {pages:,} of {pages:,}" in drawn(at)


def test_search_finds_a_session_by_id_prefix_and_by_what_its_tools_returned(store):
    sid = _sql(store, "SELECT session_id FROM sessions WHERE origin = 'production' ORDER BY start_ns LIMIT 1")[0][0]
    hits = _sql(store, "SELECT count(DISTINCT session_id) FROM tool_calls JOIN sessions USING (session_id) "
                       "WHERE result ILIKE '%Standing desk%' AND origin = 'production'")[0][0]
    at = app("sessions", q=sid[:23])  # 13 characters are the millisecond, which two demo sessions can share
    no_exceptions(at)
    assert link_tables(at)[0].links == [f"/session?id={sid}"]
    at = submit(at, q="Standing desk")
    assert _count(at) >= hits > 0
    assert at.query_params["q"] == "Standing desk"
    at = submit(at, q="no session says this")
    no_exceptions(at)
    assert any("No session matches" in i.value for i in at.info)


def test_a_filter_value_the_store_does_not_have_is_named_and_ignored(store):
    at = app("sessions", status=["ok", "no-such-status"])
    assert not at.exception
    [warning] = at.warning
    assert warning.value.startswith("`status=no-such-status` in the URL is not one of ") and "ok" in warning.value
    def count(page) -> str:
        return re.search(r"([\d,]+) production sessions? match", drawn(page)).group(1)

    assert count(at) == count(app("sessions", status="ok")) != count(app("sessions"))  # filtered by ok alone
