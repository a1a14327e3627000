"""Overview: sessions, success rate, cost, tokens, latency and alerts over a chosen time range.

Every number is aggregated in DuckDB; the page only draws what comes back (one row per bucket).
"""

import datetime as dt
import time

import pandas as pd
import streamlit as st

from dashboard import _ui

_NS = 1_000_000_000
_RANGES = {"1h": ("last hour", 3600), "24h": ("24 h", 86_400), "7d": ("7 d", 7 * 86_400),
           "30d": ("30 d", 30 * 86_400), "all": ("all", None), "custom": ("custom", None)}
_DEFAULT_RANGE = "all"
# A store recorded in a couple of minutes (the demo) and one recorded over months both get a
# chart of a few dozen points: the bucket is the smallest of these that keeps under _MAX_BUCKETS.
_STEPS_S = (1, 5, 15, 60, 300, 900, 3600, 3 * 3600, 6 * 3600, 86_400, 7 * 86_400)
_MAX_BUCKETS = 60


def _step_label(step_s: int) -> str:
    if step_s < 60:
        return f"{step_s} s"
    if step_s < 3600:
        return f"{step_s // 60} min"
    if step_s < 86_400:
        return f"{step_s // 3600} h"
    return f"{step_s // 86_400} d"


@_ui.cached
def _extent(lo: int, hi: int) -> tuple[int, int, int]:
    """Sessions in the range, and the first and last start among them."""
    row = _ui.frame("SELECT count(*) AS n, coalesce(min(start_ns), 0) AS first, coalesce(max(start_ns), 0) AS last "
                    "FROM sessions WHERE start_ns >= ? AND start_ns < ?", [lo, hi]).iloc[0]
    return int(row["n"]), int(row["first"]), int(row["last"])


@_ui.cached
def _totals(lo: int, hi: int) -> pd.Series:
    sessions = _ui.frame(
        """SELECT count(*) AS sessions, count(*) FILTER (WHERE status = 'ok') AS ok,
                  count(*) FILTER (WHERE status <> 'running') AS ended,
                  sum(cost_usd) AS cost_usd, sum(unpriced_calls) AS unpriced_calls,
                  sum(input_tokens + output_tokens + cache_read_tokens + cache_write_tokens) AS tokens,
                  quantile_cont((end_ns - start_ns) / 1e6, 0.5) FILTER (WHERE status <> 'running') AS session_p50,
                  quantile_cont((end_ns - start_ns) / 1e6, 0.95) FILTER (WHERE status <> 'running') AS session_p95
           FROM sessions WHERE start_ns >= ? AND start_ns < ?""", [lo, hi]).iloc[0]
    calls = _ui.frame(
        """SELECT quantile_cont((end_ns - start_ns) / 1e6, 0.5) AS llm_p50,
                  quantile_cont((end_ns - start_ns) / 1e6, 0.95) AS llm_p95
           FROM llm_calls WHERE start_ns >= ? AND start_ns < ?""", [lo, hi]).iloc[0]
    alerts = _ui.frame("SELECT count(*) AS open_alerts FROM alerts WHERE status = 'open' "
                       "AND last_seen_ns >= ? AND last_seen_ns < ?", [lo, hi]).iloc[0]
    return pd.concat([sessions, calls, alerts])


@_ui.cached
def _series(lo: int, hi: int, step_ns: int) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Per bucket: the sessions that started in it, the LLM calls, and the alert observations."""
    sessions = _ui.frame(
        """SELECT start_ns // ? * ? AS bucket, count(*) AS sessions,
                  count(*) FILTER (WHERE status = 'ok') AS ok,
                  count(*) FILTER (WHERE status <> 'running') AS ended,
                  sum(cost_usd) AS cost_usd,
                  sum(input_tokens + cache_read_tokens + cache_write_tokens) AS input_tokens,
                  sum(output_tokens) AS output_tokens,
                  quantile_cont((end_ns - start_ns) / 1e6, 0.5) FILTER (WHERE status <> 'running') AS p50,
                  quantile_cont((end_ns - start_ns) / 1e6, 0.95) FILTER (WHERE status <> 'running') AS p95
           FROM sessions WHERE start_ns >= ? AND start_ns < ? GROUP BY 1 ORDER BY 1""",
        [step_ns, step_ns, lo, hi])
    calls = _ui.frame(
        """SELECT start_ns // ? * ? AS bucket,
                  quantile_cont((end_ns - start_ns) / 1e6, 0.5) AS p50,
                  quantile_cont((end_ns - start_ns) / 1e6, 0.95) AS p95
           FROM llm_calls WHERE start_ns >= ? AND start_ns < ? GROUP BY 1 ORDER BY 1""",
        [step_ns, step_ns, lo, hi])
    alerts = _ui.frame(
        """SELECT o.seen_ns // ? * ? AS bucket, a.severity, count(*) AS n
           FROM alert_observations o JOIN alerts a USING (fingerprint)
           WHERE o.seen_ns >= ? AND o.seen_ns < ? GROUP BY ALL ORDER BY 1""",
        [step_ns, step_ns, lo, hi])
    return sessions, calls, alerts


def _pick_range() -> tuple[int, int, str]:
    """The range the user picked (or the URL named), as [lo, hi) in ns; it is written back to the
    URL so that the view can be shared."""
    choice = _ui.param("range") or _DEFAULT_RANGE
    if choice not in _RANGES:
        st.warning(f"`range={choice}` in the URL is not one of {', '.join(_RANGES)}; showing all.")
        choice = _DEFAULT_RANGE
    left, right = st.columns([3, 2])
    key = left.segmented_control("Range", list(_RANGES), format_func=lambda k: _RANGES[k][0], default=choice,
                                 key="overview_range") or choice
    now = time.time_ns()
    st.query_params["range"] = key
    if key == "custom":
        today = dt.datetime.now(dt.UTC).date()
        picked = right.date_input("From – to (UTC)", value=(_date(_ui.param("from"), today - dt.timedelta(days=7)),
                                                             _date(_ui.param("to"), today)), key="overview_dates")
        start, end = (picked[0], picked[-1]) if isinstance(picked, tuple) and picked else (today, today)
        st.query_params.update({"from": start.isoformat(), "to": end.isoformat()})
        lo = int(dt.datetime.combine(start, dt.time(), dt.UTC).timestamp()) * _NS
        hi = int(dt.datetime.combine(end + dt.timedelta(days=1), dt.time(), dt.UTC).timestamp()) * _NS
        return lo, hi, f"{start} to {end}"
    for stale in ("from", "to"):
        st.query_params.pop(stale, None)
    seconds = _RANGES[key][1]
    # "all" also reaches past now: a collector's clock may run ahead of the dashboard's.
    return (0, 2**63 - 1, "all time") if seconds is None else (now - seconds * _NS, now, f"the {_RANGES[key][0]}")


def _date(text: str | None, default: dt.date) -> dt.date:
    try:
        return dt.date.fromisoformat(text) if text else default
    except ValueError:
        st.warning(f"`{text}` in the URL is not a date (YYYY-MM-DD); it was ignored.")
        return default


def _metrics(t: pd.Series) -> None:
    row1 = st.columns(5)
    row1[0].metric("Sessions", f"{int(t['sessions']):,}")
    row1[1].metric("Success rate", f"{t['ok'] / t['ended']:.1%}" if t["ended"] else "–",
                   help="Sessions that ended with status `ok`, over all that ended (running ones are left out).")
    unpriced = int(t["unpriced_calls"] or 0)
    row1[2].metric("Cost", _ui.usd(t["cost_usd"] or 0.0) + (" +?" if unpriced else ""),
                   help=f"{unpriced:,} calls have no known price and are not counted; see Costs." if unpriced
                   else "Every call's model has a known price.")
    row1[3].metric("Tokens", _ui.tokens(t["tokens"]), help="Input (cached or not) and output tokens.")
    row1[4].metric("Open alerts", f"{int(t['open_alerts']):,}", help="Open alerts last seen in this range.")
    row2 = st.columns(5)
    row2[0].metric("LLM call p50", _ui.ms(t["llm_p50"]), help="Latency of every LLM call attempt, retries included.")
    row2[1].metric("LLM call p95", _ui.ms(t["llm_p95"]))
    row2[2].metric("Session p50", _ui.ms(t["session_p50"]), help="Wall time of the sessions that ended.")
    row2[3].metric("Session p95", _ui.ms(t["session_p95"]))
    with row2[4]:
        _ui.link("alerts", "See the alerts", status="open")
        _ui.link("costs", "Where the money goes")


def _charts(sessions: pd.DataFrame, calls: pd.DataFrame, alerts: pd.DataFrame, step: str) -> None:
    def at(frame: pd.DataFrame) -> pd.DataFrame:
        return frame.assign(time=pd.to_datetime(frame["bucket"], unit="ns", utc=True)).set_index("time")

    s = at(sessions)
    s = s.assign(other=s["sessions"] - s["ok"], success=s["ok"] / s["ended"].where(s["ended"] > 0))
    left, right = st.columns(2)
    with left:
        st.subheader(f"Sessions per {step}")
        st.bar_chart(s[["ok", "other"]], color=["#2e7d32", "#c62828"], height=220)
        st.subheader("Cost (USD)")
        st.bar_chart(s[["cost_usd"]].rename(columns={"cost_usd": "cost"}), height=220)
        st.subheader("LLM call latency (ms)")
        st.line_chart(at(calls)[["p50", "p95"]], height=220)
        st.subheader("Alerts raised")
        if alerts.empty:
            st.caption("No alert observed in this range.")
        else:
            # On the sessions' time axis, so that the charts line up.
            by_severity = at(alerts).pivot_table(index="time", columns="severity", values="n", aggfunc="sum")
            st.bar_chart(by_severity.reindex(s.index.union(by_severity.index), fill_value=0), height=220)
    with right:
        st.subheader("Success rate")
        st.line_chart(s[["success"]], height=220, y_label="ok / ended")
        st.subheader("Tokens")
        st.bar_chart(s[["input_tokens", "output_tokens"]], height=220)
        st.subheader("Session duration (ms)")
        st.line_chart(s[["p50", "p95"]], height=220)


def render() -> None:
    st.title("Overview")
    lo, hi, label = _pick_range()
    n, first, last = _extent(lo, hi)
    if n == 0:
        if _extent(0, 2**63 - 1)[0] == 0:
            st.info("This store has no sessions yet. Record some (`make demo`, or point an agent at this store) "
                    "and they will show here.")
        else:
            st.info(f"No session started in {label}. Pick a wider range, or **all**.")
        return
    step_s = next((s for s in _STEPS_S if (last - first) / (s * _NS) < _MAX_BUCKETS), _STEPS_S[-1])
    _metrics(_totals(lo, hi))
    st.caption(f"{label.capitalize()}: sessions from {_ui.when(first)} to {_ui.when(last)}, "
               f"in buckets of {_step_label(step_s)}.")
    _charts(*_series(lo, hi, step_s * _NS), _step_label(step_s))


_ui.guarded(render, live=True)
