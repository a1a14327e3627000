"""Sessions: every recorded session, filterable and sortable, searchable by id and by text.

Production sessions by default (the origin switch shows eval trials, replays and forks);
``?run=RUN_ID`` shows the sessions of one eval run, as the Evals page links to them; ``?route=ROUTE``
the sessions of one route (the Evals page's run beside production links to them).
"""

import streamlit as st

from dashboard import _ui

_PAGE_SIZE = 100
_SORTS = {
    "newest": "s.start_ns DESC",
    "oldest": "s.start_ns ASC",
    "cost": "s.cost_usd DESC NULLS LAST",
    "turns": "s.turns DESC",
    "tool calls": "s.tool_calls DESC",
    "duration": "duration_ms DESC",
    "tokens": "tokens DESC",
    "alerts": "alerts DESC, s.start_ns DESC",
}


@_ui.cached
def _facets() -> tuple[list[str], list[str]]:
    agents = _ui.frame("SELECT DISTINCT agent FROM sessions WHERE agent IS NOT NULL ORDER BY 1")["agent"].tolist()
    statuses = _ui.frame("SELECT status FROM sessions GROUP BY 1 ORDER BY count(*) DESC")["status"].tolist()
    return agents, statuses


def _where(search: str, agents: list[str], statuses: list[str], origins: list[str],
           run: str | None, route: str | None) -> tuple[str, list[object]]:
    clauses, params = _ui.where_in({"s.agent": agents, "s.status": statuses, "s.origin": origins,
                                    "s.eval_run_id": [run] if run else [], "s.route": [route] if route else []})
    if search:
        # An id (or a prefix of one) is looked up directly; anything else is searched in what the
        # sessions said and did: the model's replies, tool arguments and results, status reasons.
        like = f"%{search}%"
        clauses.append("""(starts_with(s.session_id, ?) OR s.status_reason ILIKE ? OR s.agent ILIKE ?
            OR s.session_id IN (SELECT session_id FROM tool_calls WHERE arguments ILIKE ? OR result ILIKE ?
                                UNION SELECT session_id FROM llm_calls WHERE response_body ILIKE ?))""")
        params += [search.lower(), like, like, like, like, like]
    return ("WHERE " + " AND ".join(clauses)) if clauses else "", params


# The table as shown, built by the store: formatting rows in pandas (a per-row apply, a column
# rebuilt in Python) was most of the page's script run (benchmarks/RESULTS.md).
_ORIGIN = """CASE WHEN s.origin = 'eval' THEN 'eval ' || left(coalesce(s.eval_run_id, ''), 8) || ' · '
                      || coalesce(s.eval_case_id, '')
                 WHEN s.origin IN ('replay', 'fork') AND coalesce(s.source_session_id, '') <> ''
                      THEN s.origin || ' of ' || left(s.source_session_id, 13)
                 ELSE s.origin END AS origin,"""


@_ui.cached
def _sessions(search: str, agents: tuple[str, ...], statuses: tuple[str, ...], origins: tuple[str, ...],
              run: str | None, route: str | None, sort: str, page: int, with_origin: bool):
    where, params = _where(search, list(agents), list(statuses), list(origins), run, route)
    total = int(_ui.frame(f"SELECT count(*) AS n FROM sessions s {where}", params)["n"].iloc[0])
    # Why a session ended is what a reader scans for: next to its status, in view at 1440 px.
    rows = _ui.frame(
        f"""WITH open_alerts AS (
                SELECT sid AS session_id, count(*) AS alerts
                FROM (SELECT unnest(session_ids) AS sid FROM alerts WHERE status <> 'resolved') GROUP BY 1)
            SELECT left(s.session_id, 13) AS session, s.status, s.status_reason, {_ORIGIN if with_origin else ""}
                   s.agent, strftime(make_timestamp(s.start_ns // 1000), '%Y-%m-%d %H:%M:%S UTC') AS started,
                   s.turns, s.tool_calls, s.tool_errors,
                   s.input_tokens + s.output_tokens + s.cache_read_tokens + s.cache_write_tokens AS tokens,
                   CASE WHEN s.unpriced_calls > 0 THEN NULL ELSE s.cost_usd END AS cost_usd,
                   (s.end_ns - s.start_ns) / 1e6 AS duration_ms, coalesce(a.alerts, 0) AS alerts, s.session_id
            FROM sessions s LEFT JOIN open_alerts a USING (session_id) {where}
            ORDER BY {_SORTS[sort]} LIMIT ? OFFSET ?""",
        [*params, _PAGE_SIZE, page * _PAGE_SIZE],
    )
    return total, rows


def render() -> None:
    st.title("Sessions")
    agents, statuses = _facets()
    run, route = _ui.param("run"), _ui.param("route")
    view = _ui.origin_view("sessions", default="evals" if run else "production")
    if run or route:
        left, right = st.columns([4, 1])
        left.caption(f"The sessions of eval run `{run}`." if run else f"The sessions of route `{route}`.")
        with right:
            _ui.link("sessions", "All sessions", origin=view)
    c1, c2, c3, c4 = st.columns([3, 2, 2, 1])
    search = c1.text_input("Search", value=_ui.param("q") or "", placeholder="a session id, or text the agent "
                           "or its tools said", key="sessions_q").strip()
    chosen_agents = c2.multiselect("Agent", agents, key="sessions_agents")
    chosen_status = c3.multiselect("Status", statuses, key="sessions_status")
    sort = c4.selectbox("Sort by", list(_SORTS), key="sessions_sort")
    # Every session of the production view is production's: no origin column to read.
    total, rows = _sessions(search, tuple(chosen_agents), tuple(chosen_status), tuple(_ui.origin_values(view)), run,
                            route, sort, st.session_state.get("sessions_page", 1) - 1, view != "production")
    pages = max(1, -(-total // _PAGE_SIZE))
    left, right = st.columns([4, 1])
    right.number_input(f"Page (of {pages})", min_value=1, max_value=pages, key="sessions_page")
    left.caption(f"{total:,} {_ui.ORIGIN_VIEWS[view].sessions} match"
                 + (f"; showing {len(rows):,}" if total > len(rows) else ""))
    if rows.empty:
        shown = "" if view == "all" else f" (of the {_ui.ORIGIN_VIEWS[view].sessions}: pick **all** above to " \
            "search every session)"
        st.info(f"No session matches{shown}. Clear the search or the filters, or record some sessions (`make demo`, "
                "or point an agent at this store).")
        return
    st.caption("Click a row to open its session.")
    _ui.table(rows, key="sessions_table", opens=lambda row: ("session", {"id": row["session_id"]}), column_config={
        "session": st.column_config.TextColumn("session", help="The session id's first characters.", width="small"),
        "tool_calls": st.column_config.NumberColumn("tool calls"),
        "tool_errors": st.column_config.NumberColumn("tool errors"),
        "cost_usd": st.column_config.NumberColumn("cost", format="$%.4f"),
        "duration_ms": st.column_config.NumberColumn("duration", format="%.0f ms"),
        "status_reason": st.column_config.TextColumn("why it ended", width="large"),
        "session_id": None,
    })

_ui.guarded(render, live=True)
