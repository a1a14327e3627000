"""Loops: ``loop.calls`` a tool called again and again with nothing gained (the rules of
``tracer.find_loops``, which the in-process ``tracer.LoopGuard`` applies too: repeats, cycles, a
poll with no end, the same answer to different arguments); ``loop.guard`` a session the agent's
own loop guard stopped; ``loop.max_tokens`` replies cut off at ``max_tokens`` again and again."""

from __future__ import annotations

import dataclasses
import itertools

import tracer

from ._alerts import Severity
from ._config import DetectConfig
from ._scope import Finding, Scope, guard_stops, json_value, scope_head


def loop_calls(store: tracer.Store, scope: Scope, config: DetectConfig) -> list[Finding]:
    """``tracer.find_loops`` over each session that could hold a loop.

    The rules live in one place (``tracer._loops``), shared with the in-process ``LoopGuard``;
    SQL only narrows the sessions, with the keys the store keeps for every tool call. A call can
    be wasted only if the previous call of its shape, or the same call asked before, got the same
    answer (the rules then also ask for similar arguments), and any loop needs
    ``min(repeat - 1, wait_polls, retries)`` wasted calls in a row, or one call asked more than
    ``min(repeat, wait_polls, retries)`` times with one answer (the waiting budgets apply when the
    answer then changes); so a session is looked at when it has such a run or such a call, or a
    call past the polling budget, or rows stored before the keys existed.
    """
    limits = config.loops
    stall = min(limits.repeat - 1, limits.wait_polls, limits.retries)
    asked = min(limits.repeat, limits.wait_polls, limits.retries)
    head, params = scope_head(scope)
    rows = store.sql(f"""{head},
        calls AS (
            SELECT t.session_id, t.args_key, t.shape_key, t.outcome_key,
                   row_number() OVER (PARTITION BY t.session_id ORDER BY t.start_ns, t.end_ns) AS i
            FROM tool_calls t JOIN target USING (session_id)),
        marked AS (
            SELECT *, outcome_key = lag(outcome_key) OVER s OR outcome_key = lag(outcome_key) OVER a
                      OR (outcome_key IS NULL AND lag(i) OVER a IS NOT NULL AND lag(outcome_key) OVER a IS NULL)
                      AS wasted
            FROM calls WINDOW s AS (PARTITION BY session_id, shape_key ORDER BY i),
                              a AS (PARTITION BY session_id, args_key ORDER BY i)),
        runs AS (SELECT session_id, i - row_number() OVER (PARTITION BY session_id ORDER BY i) AS g
                 FROM marked WHERE wasted),
        cand AS (
            SELECT session_id FROM runs GROUP BY session_id, g HAVING count(*) >= ?
            UNION SELECT session_id FROM calls GROUP BY session_id, args_key, outcome_key HAVING count(*) > ?
            UNION SELECT session_id FROM calls GROUP BY session_id, args_key HAVING count(*) > ?
            UNION SELECT session_id FROM calls WHERE shape_key IS NULL)
        SELECT t.session_id, s.agent, s.route, t.tool_name, t.arguments, t.result,
               CASE WHEN t.status <> 'ok' THEN coalesce(t.error_type, 'error') || ': ' || coalesce(t.error_message, '')
               END, t.turn_index, t.end_ns
        FROM tool_calls t JOIN (SELECT DISTINCT session_id FROM cand) USING (session_id)
        JOIN target s USING (session_id)
        ORDER BY t.session_id, t.start_ns, t.end_ns""", [*params, stall, asked, limits.poll_budget])
    rules = limits.rules()
    out = []
    for sid, calls in itertools.groupby(rows, key=lambda r: r[0]):
        calls = list(calls)
        _, agent, route = calls[0][:3]
        for loop in tracer.find_loops([tracer.LoopCall(c[3], c[4], c[5], c[6]) for c in calls], rules):
            first = calls[loop.calls[0]]
            turns = sorted({calls[i][7] for i in loop.calls if calls[i][7] is not None})
            severity: Severity = "critical" if loop.wasted >= 2 * (limits.repeat - 1) else "warning"
            out.append(Finding(
                "loop.calls", severity, loop.reason, agent, route, sid,
                f"{loop.kind}:{'→'.join(loop.tools)}", max(calls[i][8] for i in loop.calls), turns,
                {"kind": loop.kind, "tools": list(loop.tools), "arguments": json_value(first[4]),
                 "result": (first[6] or first[5] or "")[:500], "calls": len(loop.calls), "wasted": loop.wasted,
                 "repeats": loop.repeats, "answer_changed_after": loop.progressed,
                 "first_call": loop.calls[0] + 1, "rules": dataclasses.asdict(rules)}))
    return out


def loop_guard(store: tracer.Store, scope: Scope, config: DetectConfig) -> list[Finding]:
    return [Finding("loop.guard", "warning", f"the agent's loop guard stopped it: {fired.get('reason', '')}",
                    agent, route, sid, route or "", seen, turns, {"guard": fired})
            for sid, agent, route, turns, seen, fired in guard_stops(store, scope, "loop")]


def loop_max_tokens(store: tracer.Store, scope: Scope, config: DetectConfig) -> list[Finding]:
    n = config.loops.max_tokens_stops
    head, params = scope_head(scope)
    rows = store.sql(f"""{head}
        SELECT c.session_id, any_value(t.agent), any_value(t.route), count(*), list(c.turn_index ORDER BY c.start_ns),
               max(c.end_ns)
        FROM llm_calls c JOIN target t USING (session_id)
        WHERE c.stop_reason = 'max_tokens' GROUP BY c.session_id HAVING count(*) >= ?""", [*params, n])
    return [Finding("loop.max_tokens", "warning", f"{count} replies cut off at max_tokens", agent, route, sid,
                    route or "", seen, turns, {"max_tokens_stops": count, "threshold": n})
            for sid, agent, route, count, turns, seen in rows]
