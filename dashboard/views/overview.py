"""Overview: sessions, completion and resolution rates, cost, tokens, latency and alerts over a chosen time range.

Production sessions by default: eval trials, replays and forks are a switch away, not traffic.
Every number is aggregated in DuckDB; the page only draws what comes back (one row per bucket).
"""

import pandas as pd
import streamlit as st

from dashboard import _html, _ui


def _of(view: str) -> tuple[str, list[object]]:
    """The condition on ``sessions s`` for the origin view, to AND to a WHERE clause."""
    clauses, params = _ui.where_in({"s.origin": _ui.origin_values(view)})
    return "".join(f" AND {c}" for c in clauses), params


def _calls_of(view: str) -> tuple[str, list[object]]:
    """The same for ``llm_calls``: the calls of the view's sessions (all calls for all)."""
    where, params = _of(view)
    return (f" AND session_id IN (SELECT session_id FROM sessions s WHERE true{where})", params) if where else ("", [])


@_ui.cached
def _extent(lo: int, hi: int, view: str) -> tuple[int, int, int]:
    """Sessions in the range, and the first and last start among them."""
    where, params = _of(view)
    row = _ui.frame("SELECT count(*) AS n, coalesce(min(start_ns), 0) AS first, coalesce(max(start_ns), 0) AS last "
                    f"FROM sessions s WHERE start_ns >= ? AND start_ns < ?{where}", [lo, hi, *params]).iloc[0]
    return int(row["n"]), int(row["first"]), int(row["last"])


@_ui.cached
def _totals(lo: int, hi: int, view: str) -> pd.Series:
    where, params = _of(view)
    calls_where, calls_params = _calls_of(view)
    sessions = _ui.frame(
        """SELECT count(*) AS sessions, count(*) FILTER (WHERE status = 'ok') AS ok,
                  count(*) FILTER (WHERE status <> 'running') AS ended,
                  sum(cost_usd) AS cost_usd, sum(unpriced_calls) AS unpriced_calls,
                  sum(input_tokens + output_tokens + cache_read_tokens + cache_write_tokens) AS tokens,
                  quantile_cont((end_ns - start_ns) / 1e6, 0.5) FILTER (WHERE status <> 'running') AS session_p50,
                  quantile_cont((end_ns - start_ns) / 1e6, 0.95) FILTER (WHERE status <> 'running') AS session_p95
           FROM sessions s WHERE start_ns >= ? AND start_ns < ?""" + where, [lo, hi, *params]).iloc[0]
    calls = _ui.frame(
        """SELECT quantile_cont((end_ns - start_ns) / 1e6, 0.5) AS llm_p50,
                  quantile_cont((end_ns - start_ns) / 1e6, 0.95) AS llm_p95
           FROM llm_calls WHERE start_ns >= ? AND start_ns < ?""" + calls_where, [lo, hi, *calls_params]).iloc[0]
    alerts_where, alerts_params = _ui.alerts_in(view)
    alerts = _ui.frame("SELECT count(*) AS open_alerts FROM alerts a WHERE status = 'open' "
                       "AND last_seen_ns >= ? AND last_seen_ns < ?" + (f" AND {alerts_where}" if alerts_where else ""),
                       [lo, hi, *alerts_params]).iloc[0]
    # A session's outcome is its newest record (``Store.outcomes``); one that gave only a score says
    # nothing of resolution, so it is counted as having an outcome but left out of the rate.
    outcomes = _ui.frame(
        """SELECT count(*) AS with_outcome, count(o.resolved) AS says_resolved,
                  count(*) FILTER (WHERE o.resolved) AS resolved
           FROM sessions s JOIN (SELECT session_id, arg_max(resolved, at_ns) AS resolved
                                 FROM session_outcomes GROUP BY session_id) o USING (session_id)
           WHERE s.start_ns >= ? AND s.start_ns < ?""" + where, [lo, hi, *params]).iloc[0]
    return pd.concat([sessions, calls, alerts, outcomes])


@_ui.cached
def _series(lo: int, hi: int, step_ns: int, view: str) -> dict[str, pd.DataFrame]:
    """Per bucket: the sessions that started in it, the LLM calls, and the alert observations, as each
    chart draws them (``_ui.chart``'s long form). Shaped here, once per query, so that a rerun of the
    page does no pandas work: melting seven frames was most of a warm run's script."""
    where, params = _of(view)
    calls_where, calls_params = _calls_of(view)
    seen_where, seen_params = _ui.observed_in(view)
    sessions = _ui.frame(
        """SELECT start_ns // ? * ? AS bucket, count(*) AS sessions,
                  count(*) FILTER (WHERE status = 'ok') AS ok,
                  count(*) FILTER (WHERE status <> 'running') AS ended,
                  sum(cost_usd) AS cost_usd,
                  sum(input_tokens + cache_read_tokens + cache_write_tokens) AS input_tokens,
                  sum(output_tokens) AS output_tokens,
                  quantile_cont((end_ns - start_ns) / 1e6, 0.5) FILTER (WHERE status <> 'running') AS p50,
                  quantile_cont((end_ns - start_ns) / 1e6, 0.95) FILTER (WHERE status <> 'running') AS p95
           FROM sessions s WHERE start_ns >= ? AND start_ns < ?""" + where + " GROUP BY 1 ORDER BY 1",
        [step_ns, step_ns, lo, hi, *params])
    calls = _ui.frame(
        """SELECT start_ns // ? * ? AS bucket,
                  quantile_cont((end_ns - start_ns) / 1e6, 0.5) AS p50,
                  quantile_cont((end_ns - start_ns) / 1e6, 0.95) AS p95
           FROM llm_calls WHERE start_ns >= ? AND start_ns < ?""" + calls_where + " GROUP BY 1 ORDER BY 1",
        [step_ns, step_ns, lo, hi, *calls_params])
    alerts = _ui.frame(
        """SELECT o.seen_ns // ? * ? AS bucket, a.severity, count(*) AS n
           FROM alert_observations o JOIN alerts a USING (fingerprint)
           WHERE o.seen_ns >= ? AND o.seen_ns < ?""" + (f" AND {seen_where}" if seen_where else "")
        + " GROUP BY ALL ORDER BY 1",
        [step_ns, step_ns, lo, hi, *seen_params])

    def at(frame: pd.DataFrame) -> pd.DataFrame:
        return frame.assign(time=pd.to_datetime(frame["bucket"], unit="ns", utc=True)).set_index("time")

    def long(data: pd.DataFrame, columns: dict[str, str]) -> pd.DataFrame:
        """``data``'s ``columns``, renamed to their values (as the legend shows them), one point a row."""
        return (data[list(columns)].rename(columns=columns).reset_index(names="time")
                .melt("time", var_name="series", value_name="value"))

    s = at(sessions)
    s = s.assign(other=s["sessions"] - s["ok"], success=s["ok"] / s["ended"].where(s["ended"] > 0))
    charts = {"sessions": long(s, {"ok": "ok", "other": "other"}), "cost": long(s, {"cost_usd": "cost"}),
              "llm_latency": long(at(calls), {"p50": "p50", "p95": "p95"}),
              "success": long(s, {"success": "success"}),
              "tokens": long(s, {"input_tokens": "input_tokens", "output_tokens": "output_tokens"}),
              "duration": long(s, {"p50": "p50", "p95": "p95"})}
    if not alerts.empty:
        # On the sessions' time axis, so that the charts line up.
        by_severity = at(alerts).pivot_table(index="time", columns="severity", values="n", aggfunc="sum")
        charts["alerts"] = long(by_severity.reindex(s.index.union(by_severity.index), fill_value=0),
                                {c: c for c in by_severity.columns})
    return charts


def _metrics(t: pd.Series) -> str:
    outcomes = int(t["with_outcome"])
    unpriced = int(t["unpriced_calls"] or 0)
    row1 = [
        _html.Metric("Sessions", f"{int(t['sessions']):,}"),
        _html.Metric("Completion rate", f"{t['ok'] / t['ended']:.1%}" if t["ended"] else "–",
                     help="Sessions that ended with status `ok`, over all that ended (running ones are left out). It "
                          "says the agent finished, not that the customer's problem was solved: that is the "
                          "resolution rate, where outcomes are recorded."),
        *([_resolution(t, outcomes)] if outcomes else []),
        _html.Metric("Cost", _ui.usd(t["cost_usd"] or 0.0) + (" +?" if unpriced else ""),
                     help=f"{unpriced:,} calls have no known price and are not counted; see Costs." if unpriced
                     else "Every call's model has a known price."),
        _html.Metric("Tokens", _ui.tokens(t["tokens"]), help="Input (cached or not) and output tokens."),
        _html.Metric("Open alerts", f"{int(t['open_alerts']):,}",
                     help="Open alerts last seen in this range, raised on these sessions."),
    ]
    row2 = [
        _html.Metric("LLM call p50", _ui.ms(t["llm_p50"]), help="Latency of every LLM call attempt, retries included."),
        _html.Metric("LLM call p95", _ui.ms(t["llm_p95"])),
        _html.Metric("Session p50", _ui.ms(t["session_p50"]), help="Wall time of the sessions that ended."),
        _html.Metric("Session p95", _ui.ms(t["session_p95"])),
        [("See the alerts", _ui.url("alerts", status="open", origin=_ui.param("origin"))),
         ("Where the money goes", _ui.url("costs", **_ui.shared_query()))],
    ]
    return _html.metrics(row1, row2)


def _resolution(t: pd.Series, outcomes: int) -> _html.Metric:
    """The share of sessions with an outcome whose outcome says resolved, beside the completion rate."""
    said = int(t["says_resolved"])
    return _html.Metric(
        "Resolution rate", f"{t['resolved'] / said:.1%}" if said else "–",
        note=f"of {said:,} with an outcome" if said == outcomes else f"of {said:,} ({outcomes:,} with an outcome)",
        help=f"Sessions whose outcome (the newest recorded: `flightrec outcome`, `Recorder.outcome` or an outcome "
             f"span) says the customer's problem was resolved, over the {said:,} whose outcome says whether it "
             "was" + (f"; {outcomes - said:,} more have only a score" if outcomes > said else "")
             + ". Sessions with no outcome are left out.")


def _charts(charts: dict[str, pd.DataFrame], step: str) -> str:
    alerts = (_html.note("No alert observed in this range.") if "alerts" not in charts else
              _ui.chart_html(charts["alerts"], "bar", order=charts["alerts"]["series"].unique().tolist()))
    return _html.panels(
        [(f"Sessions per {step}", _ui.chart_html(charts["sessions"], "bar", order=["ok", "other"],
                                                 colors=["#2e7d32", "#c62828"])),
         ("Cost (USD)", _ui.chart_html(charts["cost"], "bar", order=["cost"])),
         ("LLM call latency (ms)", _ui.chart_html(charts["llm_latency"], "line", order=["p50", "p95"])),
         ("Alerts raised", alerts)],
        [("Completion rate", _ui.chart_html(charts["success"], "line", order=["success"], title="ok / ended")),
         ("Tokens", _ui.chart_html(charts["tokens"], "bar", order=["input_tokens", "output_tokens"])),
         ("Session duration (ms)", _ui.chart_html(charts["duration"], "line", order=["p50", "p95"]))])


def render() -> None:
    st.title("Overview")
    view = _ui.origin_view()
    _ui.draw(_html.switches("overview", _ui.here(), _ui.range_switch(), _ui.origin_switch(view)))
    span = _ui.time_range("overview")
    shown = _ui.ORIGIN_VIEWS[view].sessions
    n, first, last = _extent(span.lo, span.hi, view)
    if n == 0:
        if _extent(0, 2**63 - 1, "all")[0] == 0:
            st.info("This store has no sessions yet. Record some (`make demo`, or point an agent at this store) "
                    "and they will show here.")
        else:
            st.info(f"No {shown} started in {span.label}. Pick a wider range, **all**, or other sessions above.")
        return
    step_ns, step = _ui.bucket(first, last)
    _ui.draw(_metrics(_totals(span.lo, span.hi, view)),
             _html.note(f"{span.label.capitalize()}, {shown}: from {_ui.when(first)} to {_ui.when(last)}, "
                        f"in buckets of {step}."),
             _charts(_series(span.lo, span.hi, step_ns, view), step))


_ui.guarded(render, live=True)
