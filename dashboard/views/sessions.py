"""Sessions: every recorded session, filterable and sortable, searchable by id and by text.

Production sessions by default (the origin switch shows eval trials, replays and forks);
``?run=RUN_ID`` shows the sessions of one eval run, as the Evals page links to them; ``?route=ROUTE``
the sessions of one route (the Evals page's run beside production links to them).
"""


import streamlit as st

import tracer
from dashboard import _html, _ui

_PAGE_SIZE = 50  # every row is drawn on each load: a hundred were 0.03 s more of it (benchmarks/RESULTS.md §78)
# What a header sorts by (its ``?sort=`` value, the column shown, the SQL) and which way first: text
# from A, times and counts from the most. Ties fall to the newest, so a page boundary is stable.
_SORTS = {
    "status": ("status", "s.status", False),
    "agent": ("agent", "s.agent", False),
    "started": ("started (UTC)", "s.start_ns", True),
    "turns": ("turns", "s.turns", True),
    "tool_calls": ("tool calls", "s.tool_calls", True),
    "tool_errors": ("tool errors", "s.tool_errors", True),
    "tokens": ("tokens", "tokens", True),
    "cost": ("cost", "CASE WHEN s.unpriced_calls > 0 THEN NULL ELSE s.cost_usd END", True),
    "duration": ("duration", "duration_ms", True),
    "alerts": ("alerts", "alerts", True),
}
_DEFAULT_SORT = "started"
_NUMERIC = ("turns", "tool calls", "tool errors", "tokens", "cost", "duration", "alerts")
_REASON_CHARS = 160  # why a session ended, clipped so that a row stays a line or two


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


# The origin as shown, built by the store: formatting rows in pandas (a per-row apply, a column
# rebuilt in Python) was most of the page's script run (benchmarks/RESULTS.md).
_ORIGIN = """CASE WHEN s.origin = 'eval' THEN 'eval ' || left(coalesce(s.eval_run_id, ''), 8) || ' · '
                      || coalesce(s.eval_case_id, '')
                 WHEN s.origin IN ('replay', 'fork') AND coalesce(s.source_session_id, '') <> ''
                      THEN s.origin || ' of ' || left(s.source_session_id, 13)
                 ELSE s.origin END AS origin,"""


@_ui.cached
def _sessions(search: str, agents: tuple[str, ...], statuses: tuple[str, ...], origins: tuple[str, ...],
              run: str | None, route: str | None, sort: str, desc: bool, page: int,
              with_origin: bool) -> tuple[int, list[dict[str, str]], list[str]]:
    """How many sessions match, and one page of them: each row's cells as the table shows them, and its session id."""
    where, params = _where(search, list(agents), list(statuses), list(origins), run, route)
    total = int(_ui.frame(f"SELECT count(*) AS n FROM sessions s {where}", params)["n"].iloc[0])
    rows = _ui.frame(
        f"""WITH open_alerts AS (
                SELECT sid AS session_id, count(*) AS alerts
                FROM (SELECT unnest(session_ids) AS sid FROM alerts WHERE status <> 'resolved') GROUP BY 1)
            SELECT s.session_id, s.status, coalesce(s.status_reason, '') AS status_reason,
                   {_ORIGIN if with_origin else ""} coalesce(s.agent, '–') AS agent,
                   strftime(make_timestamp(s.start_ns // 1000), '%Y-%m-%d %H:%M:%S') AS started,
                   s.turns, s.tool_calls, s.tool_errors,
                   s.input_tokens + s.output_tokens + s.cache_read_tokens + s.cache_write_tokens AS tokens,
                   CASE WHEN s.unpriced_calls > 0 THEN NULL ELSE s.cost_usd END AS cost_usd,
                   (s.end_ns - s.start_ns) / 1e6 AS duration_ms, coalesce(a.alerts, 0) AS alerts
            FROM sessions s LEFT JOIN open_alerts a USING (session_id) {where}
            ORDER BY {_SORTS[sort][1]} {"DESC" if desc else "ASC"} NULLS LAST, s.start_ns DESC, s.session_id
            LIMIT ? OFFSET ?""",
        [*params, _PAGE_SIZE, page * _PAGE_SIZE],
    )
    # Why a session ended is what a reader scans for: next to its status, in view at 1440 px.
    shown = [{"session": r.session_id[:13], "status": r.status,
              "why it ended": tracer.clip_text(r.status_reason, _REASON_CHARS),
              **({"origin": r.origin} if with_origin else {}), "agent": r.agent, "started (UTC)": r.started,
              "turns": _count(r.turns), "tool calls": _count(r.tool_calls), "tool errors": _count(r.tool_errors),
              "tokens": _count(r.tokens), "cost": _ui.usd(r.cost_usd), "duration": _ui.ms(r.duration_ms),
              "alerts": _count(r.alerts)} for r in rows.itertuples()]
    return total, shown, rows["session_id"].tolist()


def _count(n: float) -> str:
    # A column with a missing value comes out of the frame as floats.
    return "–" if n != n else f"{int(n):,}"


def _sort() -> tuple[str, bool]:
    """The URL's sort (``?sort=cost&desc=0``), else the newest first."""
    sort = _ui.param("sort") or _DEFAULT_SORT
    if sort not in _SORTS:
        st.warning(f"`sort={sort}` in the URL is not one of {', '.join(_SORTS)}; sorted by {_DEFAULT_SORT}.")
        sort = _DEFAULT_SORT
    desc = _ui.param("desc")
    return sort, _SORTS[sort][2] if desc is None else desc != "0"


def render() -> None:
    st.title("Sessions")
    agents, statuses = _facets()
    run, route = _ui.param("run"), _ui.param("route")
    view = _ui.origin_view(default="evals" if run else "production")
    if run or route:
        left, right = st.columns([4, 1])
        left.caption(f"The sessions of eval run `{run}`." if run else f"The sessions of route `{route}`.")
        with right:
            _ui.link("sessions", "All sessions", origin=view)
    # Every choice lives in the URL: the filters' form, the origin's links, a header's sort link and the
    # page links load the page anew, each carrying the others.
    search = (_ui.param("q") or "").strip()
    chosen_agents, chosen_status = _ui.picked("agent", agents), _ui.picked("status", statuses)
    sort, desc = _sort()
    query = {"origin": view, "run": run, "route": route, "q": search or None, "agent": chosen_agents,
             "status": chosen_status}
    _ui.to_url(query)
    kept = {"origin": view, "run": run, "route": route, "sort": sort, "desc": int(desc)}
    _ui.draw(_html.switches("sessions", _ui.here(), _ui.origin_switch(view)),
             _html.filters("sessions", kept=kept, clear=bool(search or chosen_agents or chosen_status), fields=[
                 _html.search_field("q", search, "Search: a session id, or text the agent or its tools said"),
                 _html.boxes_field("agent", agents, chosen_agents),
                 _html.boxes_field("status", statuses, chosen_status)]))
    page, pages, (total, rows, ids) = _ui.paged(
        lambda index: _sessions(search, tuple(chosen_agents), tuple(chosen_status), tuple(_ui.origin_values(view)),
                                run, route, sort, desc, index, view != "production"), _PAGE_SIZE)
    count = _html.note(_ui.matching(total, _ui.ORIGIN_VIEWS[view].sessions, (page - 1) * _PAGE_SIZE, len(rows),
                                     one=_ui.ORIGIN_VIEWS[view].session)
                       + ". Click a session to open it, a column's header to sort by it.")
    if not rows:
        _ui.draw(count)
        shown = "" if view == "all" else f" (of the {_ui.ORIGIN_VIEWS[view].sessions}: pick **all** above to " \
            "search every session)"
        st.info(f"No session matches{shown}. Clear the search or the filters, or record some sessions (`make demo`, "
                "or point an agent at this store).")
        return
    sorted_col = _SORTS[sort][0]
    # A header sorts by its column, its own way first; the one sorted by turns the order round.
    sorts = {col: _ui.url("sessions", **query, sort=key, desc=int(not desc if col == sorted_col else first_desc))
             for key, (col, _, first_desc) in _SORTS.items()}
    _ui.draw(count,
             _html.table(rows, links=[_ui.url("session", id=sid) for sid in ids], numeric=_NUMERIC,
                         wrap=("why it ended",), sorts=sorts, sorted_by=(sorted_col, desc),
                         tips={"session": "The session id's first characters.",
                               "cost": "Unknown: a call has no known price."}),
             _html.pager("sessions", query | {"sort": sort, "desc": int(desc)}, page, pages) if pages > 1 else "")


_ui.guarded(render, live=True)
