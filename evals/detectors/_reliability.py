"""Reliability: ``reliability.tool_errors`` tools that kept failing (a failure a later call
recovered from does not count); ``reliability.breaker`` circuit-breaker openings;
``reliability.retry_storm`` many failed model-call attempts; ``reliability.latency_drift``
model-call p95 latency above its trailing baseline."""

from __future__ import annotations

import json

import tracer

from ._config import DetectConfig
from ._scope import TARGET, Finding, Scope, route_history, scope_head


def tool_errors(store: tracer.Store, scope: Scope, config: DetectConfig) -> list[Finding]:
    """Sessions whose tools kept failing. A failure that a later call of the same tool recovered
    from (a retry that then succeeded) is how a flaky dependency is meant to be handled: it does
    not count."""
    r = config.reliability
    head, params = scope_head(scope)
    ignore = ", ".join("?" * len(r.tool_error_ignore)) or "NULL"
    rows = store.sql(f"""{head},
        marked AS (
            SELECT t.*, t.status <> 'ok' AND coalesce(t.error_type, '') NOT IN ({ignore})
                        AND coalesce(max(t.start_ns) FILTER (WHERE t.status = 'ok')
                                     OVER (PARTITION BY t.session_id, t.tool_name), 0) <= t.start_ns AS failed
            FROM tool_calls t JOIN target USING (session_id))
        SELECT m.session_id, any_value(s.agent), any_value(s.route), count(*) FILTER (WHERE m.failed) AS failed,
               count(*), max(m.end_ns), list(DISTINCT m.tool_name ORDER BY m.tool_name) FILTER (WHERE m.failed) AS tools
        FROM marked m JOIN target s USING (session_id)
        GROUP BY m.session_id HAVING count(*) >= ? AND failed >= ? * count(*) AND failed > 0""",
                     [*params, *r.tool_error_ignore, r.tool_error_min_calls, r.tool_error_rate])
    return [Finding("reliability.tool_errors", "warning",
                    f"{errors} of {calls} tool calls failed for good ({', '.join(tools)})",
                    agent, route, sid, ",".join(sorted(tools)), seen, [],
                    {"failed": errors, "calls": calls, "tools": tools, "rate_threshold": r.tool_error_rate})
            for sid, agent, route, errors, calls, seen, tools in rows]


def breaker(store: tracer.Store, scope: Scope, config: DetectConfig) -> list[Finding]:
    head, params = scope_head(scope)
    rows = store.sql(f"""{head}
        SELECT u.session_id, any_value(t.agent), any_value(t.route), list(u.turn_index ORDER BY u.turn_index),
               max(u.end_ns), list(u.events ORDER BY u.turn_index)
        FROM turns u JOIN target t USING (session_id)
        WHERE u.events LIKE '%guard_fired%' AND u.events LIKE '%circuit_breaker%' GROUP BY u.session_id""", params)
    out = []
    for sid, agent, route, turns, seen, events in rows:
        fired = [e["attributes"] for ev in events for e in json.loads(ev)
                 if e.get("name") == "guard_fired" and e.get("attributes", {}).get("guard") == "circuit_breaker"]
        reasons = [f.get("reason", "") for f in fired]
        tools = sorted({reason.split(" ", 1)[0] for reason in reasons if reason})
        out.append(Finding("reliability.breaker", "warning",
                           f"circuit breaker opened {len(fired)} time(s): {'; '.join(reasons)[:200]}", agent, route,
                           sid, ",".join(tools), seen, turns, {"openings": fired, "tools": tools}))
    return out


def retry_storm(store: tracer.Store, scope: Scope, config: DetectConfig) -> list[Finding]:
    n = config.reliability.retry_storm
    head, params = scope_head(scope)
    rows = store.sql(f"""{head}
        SELECT c.session_id, any_value(t.agent), any_value(t.route), count(*),
               list(DISTINCT c.error_type ORDER BY c.error_type), list(DISTINCT c.turn_index ORDER BY c.turn_index),
               max(c.end_ns)
        FROM llm_calls c JOIN target t USING (session_id)
        WHERE c.status <> 'ok' GROUP BY c.session_id HAVING count(*) >= ?""", [*params, n])
    return [Finding("reliability.retry_storm", "warning",
                    f"{count} failed model-call attempts ({', '.join(str(e) for e in errors)})", agent, route, sid,
                    route or "", seen, turns, {"failed_attempts": count, "error_types": errors, "threshold": n})
            for sid, agent, route, count, errors, turns, seen in rows]


def latency_drift(store: tracer.Store, scope: Scope, config: DetectConfig) -> list[Finding]:
    r = config.reliability
    where, params = scope.where()
    pool = config.baseline.pool
    rows = store.sql(f"""WITH {TARGET.format(where=where)}, {route_history(scope, pool, newest=pool)},
        calls AS (SELECT h.agent, c.model, (c.end_ns - c.start_ns) / 1e6 AS ms, c.end_ns,
                         c.session_id IN (SELECT session_id FROM target) AS recent
                  FROM llm_calls c JOIN history h USING (session_id) WHERE c.status = 'ok')
        SELECT agent, model, count(*) FILTER (WHERE recent), quantile_cont(ms, 0.95) FILTER (WHERE recent),
               count(*) FILTER (WHERE NOT recent AND end_ns < (SELECT min(end_ns) FROM target)),
               quantile_cont(ms, 0.95) FILTER (WHERE NOT recent AND end_ns < (SELECT min(end_ns) FROM target)),
               min(end_ns) FILTER (WHERE recent), max(end_ns) FILTER (WHERE recent)
        FROM calls GROUP BY agent, model""", params)
    out = []
    for agent, model, n_now, p95_now, n_base, p95_base, first, last in rows:
        if (n_now >= r.latency_min_calls and n_base >= r.latency_min_calls and p95_now >= r.latency_drift * p95_base
                and p95_now - p95_base >= r.latency_drift_min_ms):
            out.append(Finding(
                "reliability.latency_drift", "warning",
                f"{model} p95 latency {p95_now:.0f} ms, "
                # A baseline of 0 ms: calls whose spans start and end at once (some producers' clocks).
                + (f"{p95_now / p95_base:.1f}× the baseline's {p95_base:.0f} ms" if p95_base > 0 else
                   f"against a baseline of {p95_base:.0f} ms"),
                agent, None, None, str(model), last, [],
                {"model": model, "p95_ms": p95_now, "calls": n_now, "baseline": {"p95_ms": p95_base, "calls": n_base,
                 "of": "every earlier call of the agent and model"}, "ratio_threshold": r.latency_drift},
                observation=f"{first}-{last}"))
    return out
