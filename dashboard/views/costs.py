"""Costs: where the money goes, by model, agent, route, tag and time, the sessions that cost most,
and what the prompt cache saved, over the range and the sessions (production by default) picked.

A call whose model has no known price has an unknown cost (``llm_calls.cost_usd`` is NULL): it is
counted and flagged, never summed as 0, so a group with such calls shows a lower bound. A call is in
the range when it started in it; a session (top sessions, cost per session) when it started in it.
A sub-agent's session (``parent_session_id``) is a session of its own here, with its own row and
cost; the top sessions also rank each session by its cost with its sub-agents' ("with sub-agents").
"""


import pandas as pd
import streamlit as st

import tracer
from dashboard import _html, _ui

_PER_TOKEN = 1e-6
_GROUPS = ("model", "agent", "route", "tag", "time")
_TOP_SESSIONS = 20
_TOP_KEY = "costs_top_sessions"  # the top sessions' container, scrolled to when a group's row opens the page
_FIRST = {"time": "from (UTC)"}  # a breakdown's first column, where its group's name is not the header
_ROUTE_LINES = 8  # routes drawn in the cost-per-session chart; the others are summed into one line
# What every breakdown sums over its calls. (A page script's bare strings would be drawn: comments here.)
_SUMS = """count(*) AS calls,
           count(*) FILTER (WHERE status = 'ok' AND cost_usd IS NULL) AS unpriced_calls,
           coalesce(sum(cost_usd), 0) AS cost_usd,
           sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens,
           sum(cache_read_tokens) AS cache_read_tokens, sum(cache_write_tokens) AS cache_write_tokens,
           sum(saved_usd) AS saved_usd,
           count(*) FILTER (WHERE cache_read_tokens > 0 AND saved_usd IS NULL) AS unpriced_reads"""


def _prices_cte(models: list[str]) -> tuple[str, list[object]]:
    """The per-token input and cache-read prices of the models the table knows, as a CTE. The price
    table resolves aliases and dated ids, so it is asked in Python, once per distinct model."""
    table = tracer.PriceTable.load()
    known = [(m, p.input * _PER_TOKEN, p.cache_read * _PER_TOKEN) for m in models if (p := table.lookup(m))]
    if not known:
        return "prices AS (SELECT NULL::VARCHAR AS model, NULL::DOUBLE AS input, NULL::DOUBLE AS cache_read " \
               "WHERE false)", []
    rows = ", ".join("(?, ?::DOUBLE, ?::DOUBLE)" for _ in known)
    return f"prices(model, input, cache_read) AS (VALUES {rows})", [v for row in known for v in row]


@_ui.cached
def _models() -> list[str]:
    return _ui.frame("SELECT DISTINCT coalesce(response_model, model) AS m FROM llm_calls "
                     "WHERE m IS NOT NULL")["m"].tolist()


def _calls(lo: int, hi: int, view: str) -> tuple[str, list[object]]:
    """The ``WITH`` head that every breakdown reads: the calls in the range of the view's sessions,
    with their session's agent, route and tags, and what their cache reads saved. The model is the
    one that answered, as the recorder priced it.

    A sub-agent's calls count under their own session's agent, and under its route, else its parent's:
    a route is the way a task came in, and the sub-agent spent its money on that task (the reference
    agent's sub-agent carries its parent's route already; a sender's child session may name none)."""
    cte, params = _prices_cte(_models())
    origins = _ui.origin_values(view)
    # A call whose session row is missing (its root span never came) counts as production, like its session would.
    where = f" AND coalesce(s.origin, 'production') IN ({', '.join('?' * len(origins))})" if origins else ""
    return f"""WITH {cte},
        calls AS (
            SELECT coalesce(c.response_model, c.model, '(none)') AS model, coalesce(s.agent, '(none)') AS agent,
                   coalesce(s.route, up.route, '(none)') AS route, s.tags, c.start_ns, c.status, c.cost_usd,
                   c.input_tokens, c.output_tokens, c.cache_read_tokens, c.cache_write_tokens,
                   c.cache_read_tokens * (p.input - p.cache_read) AS saved_usd
            FROM llm_calls c LEFT JOIN sessions s USING (session_id)
            LEFT JOIN sessions up ON up.session_id = s.parent_session_id
            LEFT JOIN prices p ON p.model = coalesce(c.response_model, c.model)
            WHERE c.start_ns >= ? AND c.start_ns < ?{where})""", [*params, lo, hi, *origins]


@_ui.cached
def _costs(lo: int, hi: int, view: str) -> pd.DataFrame:
    """One scan of the calls, grouped by model, by agent, by route, and in total (``grp`` says which);
    the total row also holds the first and last call's start, for the time buckets."""
    head, params = _calls(lo, hi, view)
    return _ui.frame(
        f"""{head}
            SELECT CASE GROUPING(model, agent, route) WHEN 3 THEN 'model' WHEN 5 THEN 'agent' WHEN 6 THEN 'route'
                   ELSE 'total' END AS grp,
                   model, agent, route, {_SUMS}, min(start_ns) AS first_ns, max(start_ns) AS last_ns
            FROM calls GROUP BY GROUPING SETS ((model), (agent), (route), ()) ORDER BY grp, cost_usd DESC""",
        params)


@_ui.cached
def _by_tag(lo: int, hi: int, view: str) -> pd.DataFrame:
    """By tag: a call counts under each of its session's tags, so the rows add up to more than the total."""
    head, params = _calls(lo, hi, view)
    return _ui.frame(
        f"""{head}
            SELECT tag, {_SUMS}
            FROM (SELECT unnest(CASE WHEN len(tags) > 0 THEN tags ELSE ['(none)'] END) AS tag, * EXCLUDE (tags)
                  FROM calls)
            GROUP BY tag ORDER BY cost_usd DESC""", params)


@_ui.cached
def _by_time(lo: int, hi: int, view: str, step_ns: int) -> pd.DataFrame:
    head, params = _calls(lo, hi, view)
    frame = _ui.frame(f"{head} SELECT start_ns // ? * ? AS bucket, {_SUMS} FROM calls GROUP BY 1 ORDER BY 1",
                      [*params, step_ns, step_ns])
    return frame.assign(time=pd.to_datetime(frame["bucket"], unit="ns", utc=True)).drop(columns="bucket")


# A breakdown row picked on the page narrows the top sessions to the sessions of that group.
_IN_GROUP = {
    "model": "s.session_id IN (SELECT session_id FROM llm_calls WHERE coalesce(response_model, model, '(none)') = ?)",
    "agent": "coalesce(s.agent, '(none)') = ?",
    "route": "coalesce(s.route, '(none)') = ?",
    "tag": "(list_contains(s.tags, ?) OR (? = '(none)' AND coalesce(len(s.tags), 0) = 0))",
}


def _sessions_where(lo: int, hi: int, view: str, group: tuple[str, str] | None = None) -> tuple[str, list[object]]:
    clauses, params = _ui.where_in({"s.origin": _ui.origin_values(view)})
    if group:
        by, value = group
        clauses.append(_IN_GROUP[by])
        params += [value] * _IN_GROUP[by].count("?")
    return "".join(f" AND {c}" for c in clauses), [lo, hi, *params]


@_ui.cached
def _top_sessions(lo: int, hi: int, view: str,
                  group: tuple[str, str] | None) -> tuple[list[dict[str, str]], list[str]]:
    """The most expensive sessions, as their table shows them (shaped here, once per query), and their ids."""
    where, params = _sessions_where(lo, hi, view, group)
    # A session's cost with its sub-agents' (the sessions under it, ``parent_session_id``): the edges are
    # only the child sessions, so the recursion is as small as the store's sub-agent sessions.
    top = _ui.frame(
        f"""WITH RECURSIVE edges AS MATERIALIZED (
                SELECT session_id, parent_session_id, cost_usd, unpriced_calls FROM sessions
                WHERE parent_session_id IS NOT NULL
            ), under(top, session_id, depth) AS (
                SELECT parent_session_id, session_id, 1 FROM edges
                UNION ALL
                SELECT u.top, e.session_id, u.depth + 1 FROM under u JOIN edges e ON e.parent_session_id = u.session_id
                WHERE u.depth < 32
            ), rolled AS (
                SELECT u.top AS session_id, count(DISTINCT e.session_id) AS sub_sessions,
                       sum(e.cost_usd) AS sub_cost, sum(e.unpriced_calls) AS sub_unpriced
                FROM (SELECT DISTINCT top, session_id FROM under) u JOIN edges e USING (session_id) GROUP BY u.top
            )
            SELECT session_id, coalesce(agent, '–') AS agent, coalesce(route, '(none)') AS route, start_ns, status,
                   turns, llm_calls,
                   cost_usd, unpriced_calls, input_tokens + output_tokens + cache_read_tokens + cache_write_tokens
                   AS tokens, coalesce(r.sub_sessions, 0) AS sub_sessions,
                   cost_usd + coalesce(r.sub_cost, 0) AS tree_cost_usd, coalesce(r.sub_unpriced, 0) AS sub_unpriced
            FROM sessions s LEFT JOIN rolled r USING (session_id) WHERE start_ns >= ? AND start_ns < ?{where}
            ORDER BY tree_cost_usd DESC, start_ns DESC LIMIT {_TOP_SESSIONS}""", params)
    # A session with unpriced calls cost at least its priced calls: shown, and flagged in its own column.
    return [{"session": r.session_id[:13],
             "with sub-agents": _ui.usd(r.tree_cost_usd) if r.sub_sessions > 0 else "–",
             "cost": _ui.usd(r.cost_usd if r.unpriced_calls < r.llm_calls else None), "route": r.route,
             "agent": r.agent, "started": _ui.when(r.start_ns), "status": r.status, "turns": f"{r.turns:,}",
             "LLM calls": f"{r.llm_calls:,}", "tokens": _ui.tokens(r.tokens),
             "sub-agent sessions": f"{int(r.sub_sessions):,}",
             "unpriced calls": f"{int(r.unpriced_calls + r.sub_unpriced):,}"} for r in top.itertuples()], \
        top["session_id"].tolist()


@_ui.cached
def _per_session(lo: int, hi: int, view: str, step_ns: int) -> pd.DataFrame:
    """Per bucket and route: the mean cost of the sessions that started in it, as the chart draws it."""
    where, params = _sessions_where(lo, hi, view)
    per = _ui.frame(
        f"""SELECT start_ns // ? * ? AS bucket, coalesce(route, '(none)') AS route, count(*) AS sessions,
                   sum(cost_usd) AS cost_usd
            FROM sessions s WHERE start_ns >= ? AND start_ns < ?{where} GROUP BY ALL ORDER BY 1""",
        [step_ns, step_ns, *params])
    # The routes that cost most get a line each; the rest share one, so the chart stays readable.
    top = per.groupby("route")["cost_usd"].sum().nlargest(_ROUTE_LINES).index
    per = per.assign(route=per["route"].where(per["route"].isin(top), "(other routes)"))
    sums = per.groupby(["bucket", "route"], as_index=False)[["sessions", "cost_usd"]].sum()
    # Long, not pivoted: a bucket in which a route had no session is a gap its line crosses, not a 0.
    return pd.DataFrame({"time": pd.to_datetime(sums["bucket"], unit="ns", utc=True), "route": sums["route"],
                         "value": sums["cost_usd"] / sums["sessions"]})


@_ui.cached
def _breakdown_rows(lo: int, hi: int, view: str, by: str,
                    step_ns: int) -> tuple[list[dict[str, str]], list[str], pd.DataFrame]:
    """A breakdown's rows as its table shows them, each row's group (for its link), and its chart's
    points (each group's cost and cache savings), shaped here once per query so that a rerun of the
    page does no pandas work."""
    if by == "tag":
        rows = _by_tag(lo, hi, view)
    elif by == "time":
        rows = _by_time(lo, hi, view, step_ns)
    else:
        costs = _costs(lo, hi, view)
        rows = costs[costs["grp"] == by]
    # A group made only of unpriced calls has no cost at all; one with some is a lower bound.
    groups = [t.strftime("%Y-%m-%d %H:%M:%S") for t in rows["time"]] if by == "time" else rows[by].tolist()
    shown = [{_FIRST.get(by, by): group, "calls": f"{r.calls:,}",
              "cost": _ui.usd(r.cost_usd if r.unpriced_calls < r.calls else None),
              "unpriced calls": f"{r.unpriced_calls:,}", "input (uncached)": _ui.tokens(r.input_tokens),
              "output": _ui.tokens(r.output_tokens), "cache read": _ui.tokens(r.cache_read_tokens),
              "cache write": _ui.tokens(r.cache_write_tokens), "cache savings": _ui.usd(r.saved_usd)}
             for group, r in zip(groups, rows.itertuples(), strict=True)]
    points = (rows[[by, "cost_usd", "saved_usd"]].rename(columns={"cost_usd": "cost", "saved_usd": "cache savings"})
              .fillna(0.0).melt(by, var_name="series", value_name="value"))
    return shown, groups, points


def _headline(total: pd.Series) -> None:
    unpriced = int(total["unpriced_calls"])
    _ui.draw(_html.metrics([
        _html.Metric("Known cost", _ui.usd(total["cost_usd"]),
                     help="The calls whose model has a price. Calls without one are not counted as 0."),
        _html.Metric("LLM calls", f"{int(total['calls']):,}"),
        _html.Metric("Cache reads", _ui.tokens(total["cache_read_tokens"]),
                     help="Input tokens read from the prompt cache instead of being sent at full price."),
        _html.Metric("Cache savings", _ui.usd(total["saved_usd"] or 0.0),
                     help="What the cache reads would have cost at the model's input price, minus what they cost.")]))
    if unpriced:
        calls = "call uses" if unpriced == 1 else "calls use"
        st.warning(f"{unpriced:,} successful {calls} a model with no known price: their cost is unknown, so "
                   "totals below are lower bounds. Add the model to a price file (`$FLIGHTREC_PRICES`, shaped "
                   "like tracer/prices.json) and record again.", icon=":material/price_change:")


def _table(shown: list[dict[str, str]], groups: list[str], by: str) -> str:
    """The breakdown's rows; a group's row (not a time bucket's) links to this page with the group
    picked, which lists its most expensive sessions below."""
    here = _ui.shared_query()
    return ((_html.note(f"Click a row to list the most expensive sessions of that {by} below.") if by != "time" else "")
            + _html.table(shown, links=[_ui.url("costs", **here, by=by, **{by: g}) if by in _IN_GROUP else None
                                        for g in groups],
                          numeric=("calls", "cost", "unpriced calls", "input (uncached)", "output", "cache read",
                                   "cache write", "cache savings"),
                          tips={"unpriced calls": "Calls with no known price (cost unknown).",
                                "cache savings": "What the cache reads would have cost at the model's input price, "
                                                 "minus what they cost."}))


def _breakdown(span: _ui.TimeRange, view: str, step: tuple[int, str]) -> tuple[str, str] | None:
    """The breakdown the URL asks for (its switch's links set it); returns the group whose row was picked
    (kept in the URL as ``?route=…``, ``?agent=…``: a link to the page keeps it)."""
    by = _ui.param("by") or "model"
    by = "time" if by == "day" else by  # links made when the only time view was by day
    if by not in _GROUPS:
        st.warning(f"`by={by}` in the URL is not one of {', '.join(_GROUPS)}; showing by model.")
        by = "model"
    st.query_params["by"] = by
    for other in _IN_GROUP.keys() - {by}:  # a group of another breakdown no longer applies
        st.query_params.pop(other, None)
    shown, groups, points = _breakdown_rows(span.lo, span.hi, view, by, step[0])
    across = by != "time"
    # Bars across, one group per row in the rows' order (most expensive first), each tall enough to read
    # its label; cost and cache savings side by side, since the savings are not part of the cost.
    _ui.draw(
        _html.switches("costs", _ui.here(), _html.Switch(
            "Break down by", "by", {g: f"time ({step[1]})" if g == "time" else g for g in _GROUPS}, by)),
        _ui.chart_html(points, "bar", x=by, across=across, order=["cost", "cache savings"], stack=False, title="USD",
                       height=min(max(200, 30 * len(shown) + 60), 900) if across else 260, width=960),
        _table(shown, groups, by),
        _html.note("A session with several tags counts under each, so the tags add up to more than the total.")
        if by == "tag" else "",
        _html.note("Cache savings count what reading from the prompt cache saved against the model's input price; "
                   "cache writes cost more than plain input and are priced in the cost column."))
    value = _ui.param(by) if by in _IN_GROUP else None
    return (by, value) if value is not None else None


def _top(span: _ui.TimeRange, view: str, group: tuple[str, str] | None) -> None:
    with st.container(key=_TOP_KEY):
        _ui.draw(_top_sessions_html(span, view, group))
    # A group's row loads the page anew, at its top, far above the sessions it asked for: scrolled to
    # them once (a live page reruns every few seconds, and the reader may have scrolled away since).
    if group is not None:
        _ui.scroll_once(_TOP_KEY, group)


def _top_sessions_html(span: _ui.TimeRange, view: str, group: tuple[str, str] | None) -> str:
    if group is None:
        head = _html.heading("Most expensive sessions")
    else:
        every = _ui.url("costs", **{k: v for k, v in _ui.here().items() if k != group[0]})
        head = (_html.heading(f"Most expensive sessions of {group[0]} {group[1]}")
                + f"<p>{_html.link(f'All sessions, of every {group[0]}', every)}</p>")
    rows, ids = _top_sessions(span.lo, span.hi, view, group)
    if not rows:
        return head + _html.note("No session started in this range." if group is None else
                                 f"No session of {group[0]} {group[1]} started in this range.")
    return head + _html.note("Click a row to open its session.") + _html.table(
        rows, links=[_ui.url("session", id=sid) for sid in ids],
        numeric=("with sub-agents", "cost", "turns", "LLM calls", "tokens", "sub-agent sessions", "unpriced calls"),
        tips={"session": "The session id's first characters.", "cost": "The session's own calls.",
              "with sub-agents": "Its cost and that of the sessions its sub-agents ran (their own rows too); –: it "
                                 "started none.",
              "unpriced calls": "Calls with no known price: the cost is a lower bound."})


def _per_route(span: _ui.TimeRange, view: str, first_ns: int, last_ns: int) -> None:
    step_ns, step = _ui.bucket(first_ns, last_ns, most=20)
    head = _html.heading(f"Cost per session by route (per {step})")
    per = _per_session(span.lo, span.hi, view, step_ns)
    if per.empty:
        _ui.draw(head, _html.note("No session started in this range."))
        return
    _ui.draw(head, _ui.chart_html(per, "line", series="route", title="USD per session", height=300, width=960),
             _html.note("Each point is the mean cost of the sessions of that route that started in the bucket."))


def render() -> None:
    st.title("Costs")
    view = _ui.origin_view()
    _ui.draw(_html.switches("costs", _ui.here(), _ui.range_switch(), _ui.origin_switch(view)))
    span = _ui.time_range("costs")
    costs = _costs(span.lo, span.hi, view)
    total = costs[costs["grp"] == "total"]
    if total.empty or int(total["calls"].iloc[0]) == 0:
        st.info(f"No LLM call of {_ui.ORIGIN_VIEWS[view].sessions} in {span.label}. Pick a wider range, **all**, "
                "or other sessions above; or record some sessions (`make demo`, or point an agent at this store).")
        return
    first_ns, last_ns = int(total["first_ns"].iloc[0]), int(total["last_ns"].iloc[0])
    _headline(total.iloc[0])
    group = _breakdown(span, view, _ui.bucket(first_ns, last_ns))
    _top(span, view, group)
    _per_route(span, view, first_ns, last_ns)


_ui.guarded(render, live=True)
