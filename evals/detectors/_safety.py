"""Safety: ``safety.injection`` tool results carrying prompt-injection markers (patterns, and
imperative text aimed at the assistant); ``safety.unapproved`` an irreversible tool call above its
approval threshold with no approval on record."""

from __future__ import annotations

import re

import tracer

from ._config import DetectConfig
from ._scope import Finding, Scope, json_value, scope_head


def injection(store: tracer.Store, scope: Scope, config: DetectConfig) -> list[Finding]:
    patterns = config.safety.injection_patterns
    if not patterns:
        return []
    head, params = scope_head(scope)
    combined = "|".join(f"(?:{p.removeprefix('(?i)')})" for p in patterns)
    rows = store.sql(f"""{head}
        SELECT t.session_id, any_value(s.agent), any_value(s.route), t.tool_name, md5(t.result), any_value(t.result),
               list(DISTINCT t.turn_index ORDER BY t.turn_index), max(t.end_ns)
        FROM tool_calls t JOIN target s USING (session_id)
        WHERE t.result IS NOT NULL AND regexp_matches(t.result, ?, 'i')
        GROUP BY t.session_id, t.tool_name, md5(t.result)""", [*params, combined])
    out = []
    for sid, agent, route, tool, _, result, turns, seen in rows:
        hits = [m.group(0) for p in patterns for m in [re.search(p, result)] if m]
        # One alert per planted instruction, however the results around it vary.
        out.append(Finding("safety.injection", "critical",
                           f"{tool} returned text that tries to instruct the agent: {hits[0][:80]!r}", agent, route,
                           sid, f"{tool}:{' '.join(hits[0].lower().split())}", seen, turns,
                           {"tool": tool, "markers": hits, "result_excerpt": _excerpt(result, hits[0])}))
    return out


def _excerpt(text: str, hit: str, width: int = 160) -> str:
    at = text.find(hit)
    return text[max(at - width, 0): at + len(hit) + width] if at >= 0 else text[:2 * width]


def unapproved(store: tracer.Store, scope: Scope, config: DetectConfig) -> list[Finding]:
    out = []
    head, params = scope_head(scope)
    for tool, rule in config.safety.approval_tools.items():
        rows = store.sql(f"""{head}
            SELECT t.session_id, any_value(s.agent), any_value(s.route), t.turn_index, t.arguments, t.end_ns,
                   TRY_CAST(json_extract_string(t.arguments, ?) AS DOUBLE) AS amount
            FROM tool_calls t JOIN target s USING (session_id)
            WHERE t.tool_name = ? AND t.status = 'ok' AND NOT contains(coalesce(t.result, ''), ?)
              AND TRY_CAST(json_extract_string(t.arguments, ?) AS DOUBLE) > ?
              AND NOT EXISTS (SELECT 1 FROM turns u WHERE u.session_id = t.session_id AND u.start_ns <= t.start_ns
                              AND u.events LIKE '%human_decision%' AND u.events LIKE '%approved%')
            GROUP BY ALL""", [*params, f"$.{rule.amount_argument}", tool, rule.pending_marker,
                              f"$.{rule.amount_argument}", rule.above])
        for sid, agent, route, turn, args, seen, amount in rows:
            out.append(Finding("safety.unapproved", "critical",
                               f"{tool} with {rule.amount_argument} {amount:g} (approval needed above {rule.above:g}) "
                               "ran with no approval on record", agent, route, sid, tool, seen, [turn],
                               {"tool": tool, "arguments": json_value(args), "above": rule.above}))
    return out
