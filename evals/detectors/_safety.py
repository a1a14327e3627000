"""Safety: ``safety.injection`` tool results carrying prompt-injection markers (patterns, and
imperative text aimed at the assistant); ``safety.unapproved`` an irreversible tool call above its
approval threshold with no approval on record; ``safety.duplicate_effect`` the same irreversible call
executed twice in a session (or across its resume)."""

from __future__ import annotations

import re
from typing import Any

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


def duplicate_effect(store: tracer.Store, scope: Scope, config: DetectConfig) -> list[Finding]:
    """The same irreversible call executed twice in a session: the same tool with the same
    canonical arguments (``args_key``), or under the same idempotency key, both done.

    A call is irreversible when it carries an idempotency key (the agent says so), or its tool is
    in ``irreversible_tools`` or its name matches ``irreversible_patterns`` (``issue_…``,
    ``send_…``, ``refund…``, ``pay…``, ``charge…``, ``transfer…``), and not in
    ``read_only_tools``. It is done when it succeeded and its result is not an idempotent replay
    nor a request for approval (``replay_markers``): a resumed session that asks again under the
    same key and gets the first result back did nothing twice. A call with a key whose result is
    unknown (content mode ``none``) is taken to be protected by its key. A resumed session keeps
    its id, so a repeat across the resume is found the same way; the evidence says which runs
    (traces) the calls were in.
    """
    s = config.safety
    head, params = scope_head(scope)
    rows = store.sql(f"""{head},
        done AS (
            SELECT t.session_id, g.agent, g.route, t.span_id, t.trace_id, t.turn_index, t.tool_name, t.arguments,
                   t.args_key, nullif(t.idempotency_key, '') AS idem, t.end_ns, t.result
            FROM tool_calls t JOIN target g USING (session_id)
            WHERE t.status = 'ok' AND NOT list_contains(?::VARCHAR[], t.tool_name)
              AND (coalesce(t.idempotency_key, '') <> '' OR list_contains(?::VARCHAR[], t.tool_name)
                   OR regexp_matches(t.tool_name, ?, 'i'))
              AND NOT (t.result IS NULL AND coalesce(t.idempotency_key, '') <> '')
              AND NOT regexp_matches(coalesce(t.result, ''), ?, 'i'))
        -- Only calls that share their arguments or their key with another: the rest are done once.
        SELECT * FROM done
        QUALIFY (args_key IS NOT NULL AND count(*) OVER (PARTITION BY session_id, tool_name, args_key) > 1)
             OR (idem IS NOT NULL AND count(*) OVER (PARTITION BY session_id, idem) > 1)
        ORDER BY session_id, end_ns""",
                     [*params, s.read_only_tools, s.irreversible_tools,
                      "|".join(f"(?:{p.removeprefix('(?i)')})" for p in s.irreversible_patterns) or "$^",
                      "|".join(f"(?:{p.removeprefix('(?i)')})" for p in s.replay_markers) or "$^"])
    # Calls that share arguments or a key are one side effect: join them into groups (a key seen
    # with two argument sets, or one argument set under two keys, still makes one group).
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            x = parent[x]
        return x

    for sid, _, _, span, _, _, tool, _, args_key, key, _, _ in rows:
        for link in (f"a:{sid}:{tool}:{args_key}" if args_key else None, f"k:{sid}:{key}" if key else None):
            if link:
                parent[find(span)] = find(link)
    groups: dict[str, list[tuple[Any, ...]]] = {}
    for row in rows:
        if row[8] or row[9]:
            groups.setdefault(find(row[3]), []).append(row)
    # A side effect done again is mostly asked for with the same argument text: parse each text once.
    parsed: dict[str, Any] = {}

    def arguments(text: str | None) -> Any:
        if text is None:
            return None
        if text not in parsed:
            parsed[text] = json_value(text)
        return parsed[text]

    out = []
    for calls in groups.values():
        if len(calls) < 2:
            continue
        sid, agent, route, _, _, _, tool, args, args_key, key, _, _ = calls[0]
        runs = len({c[4] for c in calls})
        where = " across a resume" if runs > 1 else ""
        out.append(Finding(
            "safety.duplicate_effect", "critical",
            f"{tool} was executed {len(calls)} times in one session with the same "
            f"{'idempotency key' if key and len({c[8] for c in calls}) > 1 else 'arguments'}{where}: an irreversible "
            "side effect done twice", agent, route, sid, tool, max(c[10] for c in calls),
            sorted({c[5] for c in calls}),
            {"tool": tool, "executions": len(calls), "runs": runs, "arguments": arguments(args),
             "idempotency_keys": sorted({c[9] for c in calls if c[9]}),
             "calls": [{"turn": c[5], "trace_id": c[4], "span_id": c[3], "arguments": arguments(c[7]),
                        "result": tracer.clip_text(c[11], 200)} for c in calls],
             "irreversible_because": ("it carries an idempotency key" if key else
                                      f"{tool} is listed or its name matches safety.irreversible_patterns")},
            observation=f"{sid}:{args_key or key}"))
    return out
