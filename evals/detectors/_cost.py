"""Cost and steps against fixed limits: ``cost.budget`` and ``steps.budget`` a session over the
budget set for its agent and route; ``cost.guard`` a session its own token budget stopped (an
agent-side guard caught a blow-up: worth knowing it happens); ``cost.drift`` a route whose recent
sessions all cost several times what it cost before; ``context.window`` context-window
utilisation at the warning or critical threshold."""

from __future__ import annotations

import math

import tracer

from ._alerts import Severity
from ._config import Budget, DetectConfig
from ._scope import (
    NAMED,
    TARGET,
    Finding,
    Scope,
    guard_stops,
    recent_and_reference,
    route_history,
    route_label,
    scope_head,
)


def _budget_for(budgets: list[Budget], agent: str | None, route: str | None) -> Budget | None:
    """The most specific budget that applies: agent and route, then agent, then route, then any."""
    fits = [b for b in budgets if b.agent in (None, agent) and b.route in (None, route)]
    return max(fits, key=lambda b: (b.agent is not None, b.route is not None), default=None)


def budgets(store: tracer.Store, scope: Scope, config: DetectConfig) -> list[Finding]:
    """Sessions over the budget set for their agent and route (cost and tokens; turns and tool calls)."""
    if not config.budgets:
        return []
    head, params = scope_head(scope)
    rows = store.sql(f"""{head}
        SELECT s.session_id, s.agent, s.route, s.cost_usd, s.unpriced_calls,
               s.input_tokens + s.output_tokens + s.cache_read_tokens + s.cache_write_tokens, s.turns, s.tool_calls,
               s.end_ns
        FROM sessions s JOIN target USING (session_id)""", params)
    out = []
    for sid, agent, route, cost, unpriced, tokens, turns, tool_calls, seen in rows:
        b = _budget_for(config.budgets, agent, route)
        if b is None:
            continue
        where = f"agent {b.agent or 'any'}" + (f", route {b.route}" if b.route else "")
        over = [(name, value, limit) for name, value, limit in (
            ("cost_usd", cost if not unpriced else None, b.session_usd), ("tokens", tokens, b.tokens))
            if limit is not None and value is not None and value > limit]
        if over:
            out.append(Finding("cost.budget", "critical", "over budget: " + ", ".join(
                f"{name} {value:,.4g} > {limit:,.4g}" for name, value, limit in over) + f" ({where})", agent, route,
                sid, route or "", seen, [], {name: {"value": value, "budget": limit} for name, value, limit in over}))
        over = [(name, value, limit) for name, value, limit in (("turns", turns, b.turns),
                                                                ("tool_calls", tool_calls, b.tool_calls))
                if limit is not None and value > limit]
        if over:
            out.append(Finding("steps.budget", "warning", "over budget: " + ", ".join(
                f"{value} {name.replace('_', ' ')} > {limit}" for name, value, limit in over) + f" ({where})", agent,
                route, sid, route or "", seen, [],
                {name: {"value": value, "budget": limit} for name, value, limit in over}))
    return out


def cost_guard(store: tracer.Store, scope: Scope, config: DetectConfig) -> list[Finding]:
    return [Finding("cost.guard", "warning",
                    f"stopped by its token budget: {fired.get('reason', 'the token budget guard fired')}",
                    agent, route, sid, route or "", seen, turns, {"guard": fired})
            for sid, agent, route, turns, seen, fired in guard_stops(store, scope, "token_budget")]


_PRICED = "s.unpriced_calls = 0 AND s.cost_usd > 0"
"""Sessions whose cost is known: ``cost.drift`` compares only those."""


def cost_drift(store: tracer.Store, scope: Scope, config: DetectConfig) -> list[Finding]:
    """A route whose recent sessions cost several times what it cost before: a slow drift, or a
    step change, that no single session stands out in. The whole recent window must have risen
    (its 20th percentile by the square root of the ratio, its median by the ratio), and have been
    so for the session before too: a few costly sessions among ordinary ones are
    ``cost.anomaly``'s, not a drift."""
    c = config.cost
    where, params = scope.where()
    rows = store.sql(f"""WITH {TARGET.format(where=where)},
        {route_history(scope, c.drift_recent + c.drift_reference + 1, which=f"{NAMED} AND {_PRICED}")},
        hist AS (SELECT h.session_id, h.agent, h.route, h.end_ns, ln(s.cost_usd) AS x
                 FROM history h JOIN sessions s USING (session_id)),
        windows AS (
            SELECT *, count(*) OVER rec AS n_rec, quantile_cont(x, [0.2, 0.5]) OVER rec AS q_rec,
                   count(*) OVER ref AS n_ref, median(x) OVER ref AS med_ref
            FROM hist WINDOW {recent_and_reference(c.drift_recent, c.drift_reference)}),
        shifted AS (
            SELECT *, n_rec = ? AND n_ref >= ? AND q_rec[2] - med_ref >= ? AND q_rec[1] - med_ref >= ? AS up
            FROM windows),
        held AS (SELECT *, up AND coalesce(lag(up) OVER (PARTITION BY agent, route ORDER BY end_ns), FALSE) AS held
                 FROM shifted)
        SELECT w.session_id, w.agent, nullif(w.route, ''), exp(w.x), w.end_ns, exp(w.q_rec[2]), exp(w.med_ref),
               w.n_ref
        FROM held w JOIN target USING (session_id)
        WHERE w.held AND w.x - w.med_ref >= ?""",
                     [*params, c.drift_recent, max(c.drift_reference // 2, 3), math.log(c.drift_ratio),
                      math.log(c.drift_ratio) / 2, math.log(c.drift_ratio)])
    return [Finding("cost.drift", "warning",
                    f"{route_label(agent, route)} drifted: the last {c.drift_recent} sessions' median cost "
                    f"{tracer.format_usd(rec)} is {rec / ref:.1f}× the {tracer.format_usd(ref)} of the {n_ref} "
                    f"before them (this session {tracer.format_usd(cost)})",
                    agent, route, sid, route or "", seen, [],
                    {"cost_usd": cost, "recent_median_usd": rec, "reference_median_usd": ref,
                     "recent_sessions": c.drift_recent, "reference_sessions": n_ref, "ratio_threshold": c.drift_ratio})
            for sid, agent, route, cost, seen, rec, ref, n_ref in rows]


def context_window(store: tracer.Store, scope: Scope, config: DetectConfig) -> list[Finding]:
    c = config.cost
    head, params = scope_head(scope)
    rows = store.sql(f"""{head}
        SELECT c.session_id, any_value(t.agent), any_value(t.route), max(c.ctx_utilisation),
               arg_max(c.turn_index, c.ctx_utilisation), arg_max(c.model, c.ctx_utilisation), max(c.end_ns)
        FROM llm_calls c JOIN target t USING (session_id)
        WHERE c.ctx_utilisation >= ? GROUP BY c.session_id""", [*params, c.context_warning or c.context_critical])
    out = []
    for sid, agent, route, used, turn, model, seen in rows:
        severity: Severity = "critical" if used >= c.context_critical else "warning"
        out.append(Finding("context.window", severity, f"context window {used:.0%} full at turn {turn} ({model})",
                           agent, route, sid, f"{route or ''}:{severity}", seen, [turn],
                           {"utilisation": used, "model": model, "warning_at": c.context_warning,
                            "critical_at": c.context_critical}))
    return out
