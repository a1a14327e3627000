"""Sessions against the history of their agent and route, in one pass over the store:
``cost.anomaly`` the cost, ``cost.tokens`` the tokens of an unpriced model, ``cost.token_jump``
the most one turn added, ``cost.price`` the price paid per token, ``cost.cache_drop`` the cache-hit
ratio, ``steps.anomaly`` the steps, ``reliability.latency`` the wall time. Each baseline is the
route's trailing median with a robust spread (borrowed from the agent or the store while the route
is young); the alert explains it."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import tracer

from ._config import BaselineLimits, DetectConfig
from ._scope import NAMED, TARGET, Finding, Scope, route_history, route_label


@dataclass(frozen=True)
class _Metric:
    """A per-session value that is judged against the history of its agent and route."""

    detector: str
    value: str
    """SQL over the session ``s`` (and its largest one-turn input growth ``j.jump``); NULL where it does not apply."""
    what: str
    unit: str
    fmt: str
    """How a value reads: a format spec, after a ``$`` when the unit is dollars."""
    log: bool = True
    """Judged on a log scale (skewed, multiplicative values); the cache-hit ratio is not."""


_TOTAL_IN = "(s.input_tokens + s.cache_read_tokens + s.cache_write_tokens)"
_METRICS = (
    _Metric("cost.anomaly", "CASE WHEN s.unpriced_calls = 0 AND s.cost_usd > 0 THEN s.cost_usd END",
            "the session cost", "usd", ".4f"),
    # Tokens stand in for cost where the model has no known price.
    _Metric("cost.tokens", f"CASE WHEN s.unpriced_calls > 0 THEN {_TOTAL_IN} + s.output_tokens END",
            "the session used tokens:", "tokens", ",.0f"),
    _Metric("cost.token_jump", "CASE WHEN j.jump > 0 THEN j.jump END", "one turn added tokens:", "tokens", ",.0f"),
    # A pricier model (or the cache gone) shows as the price of a token, whatever the session's length.
    _Metric("cost.price", f"CASE WHEN s.unpriced_calls = 0 AND s.cost_usd > 0 THEN s.cost_usd * 1e6 / "
            f"nullif({_TOTAL_IN} + s.output_tokens, 0) END", "it paid per million tokens", "usd_per_mtok", ".2f"),
    _Metric("steps.anomaly", "coalesce(w.steps, 0) + greatest(s.turns - s.tool_calls, 0)",
            "steps (distinct tool calls, and turns without one):", "steps", ".0f"),
    _Metric("reliability.latency", "CASE WHEN s.end_ns > s.start_ns THEN (s.end_ns - s.start_ns) / 1e9 END",
            "the session took seconds:", "s", ",.1f"),
    _Metric("cost.cache_drop", f"CASE WHEN {_TOTAL_IN} >= {{cache_min}} THEN s.cache_read_tokens / {_TOTAL_IN} END",
            "cache hits", "ratio", ".0%", log=False),
)

_WORK = """work AS (
    SELECT session_id, count(DISTINCT coalesce(shape_key, span_id)) AS steps
    FROM tool_calls WHERE session_id IN (SELECT session_id FROM history) GROUP BY session_id)"""
"""The distinct things a session's tools were asked: its call shapes. A hundred pages of one
listing are one, a poll is one, five parcels are five; repeating one call is a loop's business."""

_JUMPS = """jumps AS (
    SELECT session_id, max(greatest(tin - coalesce(prev, tin), 0) + tout) AS jump FROM (
        SELECT c.session_id, coalesce(c.input_tokens, 0) + coalesce(c.cache_read_tokens, 0)
                             + coalesce(c.cache_write_tokens, 0) AS tin, coalesce(c.output_tokens, 0) AS tout,
               lag(tin) OVER (PARTITION BY c.session_id ORDER BY c.end_ns) AS prev
        FROM llm_calls c WHERE c.status = 'ok' AND c.session_id IN (SELECT session_id FROM history))
    GROUP BY session_id)"""
"""The most tokens one model call added to the session: its input's growth over the call before it
(a huge tool result, a document pasted in) plus its output (a runaway generation)."""


def _baseline_sql(scope: Scope, config: DetectConfig) -> tuple[str, list[Any]]:
    """Every metric's value for each target session, with the baselines it is judged against, in
    one pass: the windows over a route's previous sessions are sorted once for all of them.

    Per metric ``i``: the route's previous ``window`` sessions give ``n_r``, the median, the MAD
    and the 90th percentile; each session's distance from its own route's median (``d``), pooled
    over the agent's sessions and over the store's, gives the spread that a young route borrows
    (their median, so that the costly sessions the detectors exist for do not widen it). (The pooled spreads take
    the agent's newest ``pool`` sessions (``route_history``), not only the sessions before: they describe how much
    an agent's sessions vary around their routes, which one session more or less hardly moves. Each is measured
    against its route's sessions before it among those read, so the sessions read do not grow with the agent's
    routes: a whole window for each of them would read ``window`` more sessions a route.)
    """
    b = config.baseline
    where, params = scope.where()
    frame = f"ROWS BETWEEN {b.window} PRECEDING AND 1 PRECEDING"
    k = range(len(_METRICS))
    values = ", ".join(f"{m.value.format(cache_min=int(config.cost.cache_min_input_tokens))} AS v{i}"
                       for i, m in enumerate(_METRICS))
    xs = ", ".join(f"CASE WHEN v{i} > 0 THEN ln(v{i}) END AS x{i}" if m.log else f"v{i} AS x{i}"
                   for i, m in enumerate(_METRICS))
    own = ", ".join(f"count(x{i}) OVER rw AS n{i}, quantile_cont(x{i}, [0.5, 0.9]) OVER rw AS q{i}, "
                    f"mad(x{i}) OVER rw AS mad{i}" for i in k)
    devs = ", ".join(f"CASE WHEN n{i} >= {b.min_sessions} THEN abs(x{i} - q{i}[1]) END AS d{i}" for i in k)
    pooled = ", ".join(f"count(d{i}) AS n{i}, median(d{i}) AS m{i}" for i in k)
    cols = ", ".join(f"p.v{i}, p.n{i}, p.q{i}[1], p.mad{i}, p.q{i}[2], a.n{i}, a.m{i}, g.n{i}, g.m{i}" for i in k)
    return f"""WITH {TARGET.format(where=where)},
        {route_history(scope, b.window, newest=b.pool, which=NAMED)}, {_JUMPS}, {_WORK},
        hist AS (
            SELECT s.session_id, s.agent, h.route, s.end_ns, h.newest AS pooled, {values}
            FROM history h JOIN sessions s USING (session_id) LEFT JOIN jumps j USING (session_id)
            LEFT JOIN work w USING (session_id)),
        logged AS (SELECT *, {xs} FROM hist),
        own AS (SELECT *, {own} FROM logged WINDOW rw AS (PARTITION BY agent, route ORDER BY end_ns {frame})),
        dev AS (SELECT *, {devs} FROM own),
        by_agent AS (SELECT agent, {pooled} FROM dev WHERE pooled GROUP BY agent),
        by_store AS (SELECT {pooled} FROM dev WHERE pooled)
        SELECT p.session_id, p.agent, nullif(p.route, ''), p.end_ns, {cols}
        FROM dev p JOIN target t USING (session_id) JOIN by_agent a ON a.agent = p.agent
        CROSS JOIN by_store g""", params


_MAD_TO_SD = 1.4826
"""A normal distribution's standard deviation is 1.4826 times its median absolute deviation."""


def _judge(row: tuple[Any, ...], b: BaselineLimits, ratio: float, min_extra: float = 0.0) -> tuple[float, str] | None:
    """The value above which a session is far from its baseline, and where the spread came from;
    ``None`` when the route has too little history to judge.

    On a log scale (costs, tokens and steps are skewed: a multiplicative band fits them), with the
    route's median as the centre and a robust spread (1.4826 × MAD). A route with fewer than
    ``history`` sessions borrows a wider spread: the agent's (each session's distance from its own
    route's median), then the store's, then ``cold_spread``. The threshold is ``z`` spreads above
    the median, at least ``ratio`` times it and ``min_extra`` more, and above the route's 90th
    percentile by ``upper_margin``, so that a route with a legitimate costly mode keeps it.
    """
    _, n_r, med, mad_r, hi, n_a, mad_a, n_g, mad_g = row
    if n_r < b.min_sessions or med is None:
        return None
    if n_r >= b.history:
        spread, source = _MAD_TO_SD * mad_r, "route"
    elif n_a >= b.history:
        spread, source = _MAD_TO_SD * mad_a * b.borrow_agent, "agent"
    elif n_g >= b.history:
        spread, source = _MAD_TO_SD * mad_g * b.borrow_store, "store"
    else:
        spread, source = b.cold_spread, "default"
    limit = max(med + b.z * max(spread, b.min_spread), med + math.log(ratio), hi + math.log(b.upper_margin))
    return max(math.exp(limit), math.exp(med) + min_extra), source


def baselines(store: tracer.Store, scope: Scope, config: DetectConfig) -> list[Finding]:
    """``cost.anomaly``, ``cost.tokens``, ``cost.token_jump``, ``steps.anomaly``,
    ``reliability.latency`` and ``cost.cache_drop``: each session against its route's history."""
    c, b = config.cost, config.baseline
    rules = {"cost.anomaly": (c.ratio, 0.0), "cost.tokens": (c.tokens_ratio, 0.0), "cost.price": (c.price_ratio, 0.0),
             "cost.token_jump": (c.jump_ratio, c.jump_min_tokens),
             "steps.anomaly": (config.steps.ratio, config.steps.min_extra),
             "reliability.latency": (config.reliability.latency_ratio, config.reliability.latency_min_s)}
    sql, params = _baseline_sql(scope, config)
    out = []
    for row in store.sql(sql, params):
        sid, agent, route, seen = row[:4]
        for i, m in enumerate(_METRICS):
            stats = row[4 + 9 * i: 13 + 9 * i]
            value, n, med = stats[0], stats[1], stats[2]
            if value is None:
                continue
            if m.detector == "cost.cache_drop":
                if n >= b.history and med >= c.cache_baseline_min and value <= med - c.cache_drop:
                    out.append(Finding(
                        m.detector, "warning", f"cache hits {value:.0%} of input, against {med:.0%} for "
                        f"{route_label(agent, route)}: the prompt prefix changed?", agent, route, sid, route or "",
                        seen, [],
                        {"cache_hit_ratio": value, "baseline": {"of": route_label(agent, route), "sessions": n,
                                                                "median_ratio": med}, "drop_threshold": c.cache_drop}))
                continue
            judged = _judge(stats, b, *rules[m.detector])
            if judged is None or value <= judged[0]:
                continue
            threshold, source = judged
            usual = math.exp(med)
            money = "$" if m.unit.startswith("usd") else ""
            out.append(Finding(
                m.detector, "warning",
                f"{m.what} {money}{value:{m.fmt}}, {value / usual:.1f}× the usual {money}{usual:{m.fmt}} of "
                f"{route_label(agent, route)} (flagged above {money}{threshold:{m.fmt}}; {n} earlier sessions)", agent,
                route, sid, route or "", seen, [],
                {"value": value, "unit": m.unit, "ratio_to_median": value / usual,
                 "baseline": {"of": route_label(agent, route), "sessions": n, "median": usual, "threshold": threshold,
                              "spread_from": source}}))
    return out
