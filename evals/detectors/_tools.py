"""Tool use: ``tools.hallucinated`` calls to tools the decision was not offered, with arguments
that fail the tool's schema, or by an id nothing the model was given contains (answered not
found); ``tools.overload`` sessions whose decisions are offered so many tools that the agent's
choices suffer; ``tools.diversity`` a route whose sessions use far fewer distinct tools than they
used to.

Every rule reads what any instrumentation records: the tools a decision was offered
(``llm_calls.tools_available``; where it is empty, only errors are read) and a tool call's error
type and message. Each tool call is matched to the decision before it in its session (an ASOF
join on time), so an agent that runs several calls per decision, or none, is judged the same way.
"""

from __future__ import annotations

import json
import re
from typing import Any

import tracer

from ._config import DetectConfig, ToolLimits
from ._scope import (
    NAMED,
    TARGET,
    Finding,
    Scope,
    json_value,
    recent_and_reference,
    route_history,
    route_label,
    scope_head,
)

_UNKNOWN_TYPES = ("unknown_tool", "tool_not_found", "unknowntoolerror", "toolnotfounderror")
_NOT_FOUND = r"(?i)\b(not found|does not exist|doesn't exist|no such)\b"
_ID_KEY = re.compile(r"(?i)(^|[_\-.])(id|ids|uuid|sku|number|no|code|ref|reference|email|e_?mail|account|handle)$|"
                     r"[a-z](Id|ID|Number|Email)$")
_ID_VALUE = re.compile(r"^(?=.*\d)(?=.*[A-Za-z])(?!\d{4}-\d{2}-\d{2})[A-Za-z0-9][A-Za-z0-9_\-.:/#@+]{3,79}$"
                       r"|^[^@\s]+@[^@\s]+$")
"""A value that looks like an id whatever its key: letters and digits (``A-1042``, ``cus_9f3``), not a
date; or an e-mail address. A bare number is an id only under a key that says so."""


def _regex(patterns: list[str]) -> str:
    """Several RE2 patterns as one (matched case-insensitively: their ``(?i)`` goes)."""
    return "|".join(f"(?:{p.removeprefix('(?i)')})" for p in patterns) or "$^"


def _judged(t: ToolLimits, llm: str, tools: str, pool: str, *, every: bool = True) -> tuple[str, list[Any]]:
    """CTEs over the sessions in ``pool``: ``decisions`` (the model calls that answered), ``judged``
    (each tool call with its decision and ``made_up``: ``unknown_tool``, ``bad_arguments`` or NULL,
    and ``repeated``: the same call made before in the session with the same answer) and ``unrun``
    (tools a decision named that it was not offered and that never ran).

    Without ``every``, ``judged`` holds only the calls that can be made up (those that failed, and
    those of a tool their decision named but was not offered): matching every call of a long
    history to its decision costs more than the rest of the detector, and the others are not read.
    """
    only = "" if every else """ AND (status <> 'ok' OR (session_id, turn_index, tool_name) IN (
                SELECT session_id, d_turn, tool_name FROM named))"""
    sql = f"""decisions AS (
            SELECT session_id, span_id AS decision, turn_index AS d_turn, end_ns AS d_end,
                   coalesce(tools_available, []) AS offered, coalesce(tools_chosen, []) AS chosen,
                   messages_ref, system_ref
            FROM {llm} WHERE status = 'ok' AND session_id IN (SELECT session_id FROM {pool})),
        named AS (
            SELECT session_id, decision, d_turn, d_end,
                   unnest(list_filter(chosen, lambda x: NOT list_contains(offered, x))) AS tool_name
            FROM decisions WHERE len(offered) > 0),
        calls AS (
            SELECT c.session_id, c.span_id, c.turn_index, c.tool_name, c.arguments, c.status, c.error_type,
                   c.error_message, c.start_ns, c.end_ns, c.args_key, c.outcome_key, d.decision,
                   coalesce(d.offered, []) AS offered, d.messages_ref, d.system_ref
            FROM (SELECT * FROM {tools} WHERE session_id IN (SELECT session_id FROM {pool}){only}) c
            ASOF LEFT JOIN decisions d ON d.session_id = c.session_id AND d.d_end <= c.start_ns),
        judged AS (
            SELECT *,
                   CASE WHEN len(offered) > 0 AND NOT list_contains(offered, tool_name) THEN 'unknown_tool'
                        WHEN status <> 'ok' AND (lower(coalesce(error_type, '')) IN {_UNKNOWN_TYPES}
                             OR regexp_matches(coalesce(error_message, ''), ?, 'i')) THEN 'unknown_tool'
                        WHEN status <> 'ok' AND (list_contains(?::VARCHAR[], error_type)
                             OR regexp_matches(coalesce(error_message, ''), ?, 'i')) THEN 'bad_arguments'
                   END AS made_up,
                   status = 'ok' AND outcome_key IS NOT NULL AND args_key IS NOT NULL
                       AND count(*) OVER (PARTITION BY session_id, args_key, outcome_key ORDER BY start_ns
                                          ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) > 1 AS repeated
            FROM calls),
        unrun AS (
            SELECT n.* FROM named n
            WHERE NOT EXISTS (SELECT 1 FROM calls c WHERE c.decision = n.decision AND c.tool_name = n.tool_name))"""
    return sql, [_regex(t.unknown_tool_patterns), t.schema_error_types, _regex(t.bad_argument_patterns)]


def _routes_in(pairs: set[tuple[str, str]], alias: str = "s") -> tuple[str, list[Any]]:
    return (" OR ".join(f"({alias}.agent IS NOT DISTINCT FROM ? AND coalesce({alias}.route, '') = ?)" for _ in pairs)
            or "false"), [v for pair in sorted(pairs, key=str) for v in pair]


def hallucinated(store: tracer.Store, scope: Scope, config: DetectConfig) -> list[Finding]:
    """Calls the model made up: a tool its decision was not offered (run or not), a call that
    failed because of its own arguments (an error type or message that says so; ``ToolLimits``),
    or one that asked for a thing by an id that nothing the model was given contains and was
    answered not found (an invented id; ``_invented``).

    One made-up call in a session is an ``info`` alert: models slip, and a good agent reads the
    error and asks again. It is a ``warning`` when a quarter of the session's calls were made up,
    or two of them, or when its route makes them up in a fifth of its recent sessions: then the
    tool's description, the prompt or the model is at fault, not chance. Ordinary failures (a
    service down; a record not found by an id the customer gave) are not made-up calls.
    """
    t = config.tools
    head, params = scope_head(scope)
    cte, cte_params = _judged(t, "llm_calls", "tool_calls", "target", every=False)
    rows = store.sql(f"""{head}, {cte},
        made AS (
            SELECT session_id, turn_index, tool_name,
                   coalesce(made_up, 'invented_id') AS kind, arguments, error_type, error_message, end_ns,
                   offered, messages_ref, system_ref
            FROM judged
            WHERE made_up IS NOT NULL
               OR (status <> 'ok' AND messages_ref IS NOT NULL AND arguments IS NOT NULL
                   AND (list_contains(?::VARCHAR[], error_type) OR regexp_matches(coalesce(error_message, ''), ?)))
            UNION ALL
            SELECT session_id, d_turn, tool_name, 'unknown_tool', NULL, NULL, 'named by the model, not offered',
                   d_end, NULL, NULL, NULL
            FROM unrun),
        sizes AS (SELECT session_id, count(*) AS calls FROM tool_calls
                  WHERE session_id IN (SELECT session_id FROM made) GROUP BY session_id)
        SELECT m.session_id, s.agent, s.route,
               coalesce(z.calls, 0) + (SELECT count(*) FROM unrun u WHERE u.session_id = m.session_id) AS calls,
               m.kind, m.tool_name, m.turn_index, m.arguments, m.error_type, m.error_message, m.end_ns, m.offered,
               m.messages_ref, m.system_ref
        FROM made m JOIN target s USING (session_id) LEFT JOIN sizes z USING (session_id)
        ORDER BY m.session_id, m.end_ns""", [*params, *cte_params, t.not_found_types, _NOT_FOUND])
    invented = _invented(store, [(i, r[7], r[12], r[13]) for i, r in enumerate(rows) if r[4] == "invented_id"])
    groups: dict[tuple[str, str, str], list[tuple[Any, ...]]] = {}
    for i, row in enumerate(rows):
        if row[4] == "invented_id" and i not in invented:
            continue
        groups.setdefault((row[0], row[4], row[5]), []).append((*row, invented.get(i)))
    if not groups:
        return []
    per_session: dict[str, int] = {}
    for (sid, _, _), calls in groups.items():
        per_session[sid] = per_session.get(sid, 0) + len(calls)
    rates = _route_rates(store, scope, config, {(c[0][1], c[0][2] or "") for c in groups.values()})
    out = []
    for (sid, kind, tool), made_calls in groups.items():
        agent, route, calls, offered = made_calls[0][1], made_calls[0][2], made_calls[0][3], made_calls[0][11]
        made = per_session[sid]
        sessions_with, sessions_of = rates.get((agent, route or ""), (0, 0))
        route_rate = sessions_with / sessions_of if sessions_of else 0.0
        severe = (made >= 2 or made >= t.hallucination_rate * max(calls, 1)
                  or (sessions_of >= 10 and route_rate >= t.route_rate))
        first_invented = made_calls[0][14]
        what = (f"{tool} called but not among the {len(offered)} tools offered" if kind == "unknown_tool" and offered
                else f"{tool}: a tool the agent does not have" if kind == "unknown_tool"
                else f"{tool} called with arguments that fail its schema" if kind == "bad_arguments"
                else f"{tool} asked for {first_invented[0]} {first_invented[1]!r}, which nothing the model was given "
                     "contains, and found nothing")
        out.append(Finding(
            "tools.hallucinated", "warning" if severe else "info",
            f"{what} ({made} of {calls} tool calls in the session made up; {sessions_with} of the route's last "
            f"{sessions_of} sessions had one)", agent, route, sid, f"{kind}:{tool}", max(c[10] for c in made_calls),
            sorted({c[6] for c in made_calls}),
            {"kind": kind, "tool": tool,
             "calls": [{"turn": c[6], "arguments": json_value(c[7]), "error_type": c[8],
                        "error": tracer.clip_text(c[9], 300) if c[9] else None,
                        "tools_offered": len(c[11]) if c[11] else None,
                        **({"invented": {"argument": c[14][0], "value": c[14][1]}} if c[14] else {})}
                       for c in made_calls],
             "tools_offered": offered, "made_up_in_session": made, "tool_calls_in_session": calls,
             "route": {"of": route_label(agent, route), "sessions": sessions_of, "with_made_up_calls": sessions_with,
                       "rate": route_rate, "counts": "unknown tools and schema failures (not invented ids)"},
             "rule": f"warning at {t.hallucination_rate:.0%} of a session's calls, 2 calls, or {t.route_rate:.0%} of "
                     f"the route's last {t.route_window} sessions; info for one"}))
    return out


def _invented(store: tracer.Store, calls: list[tuple[int, str | None, str | None, str | None]],
              ) -> dict[int, tuple[str, str]]:
    """Of the calls ``(i, arguments, messages_ref, system_ref)``, those with an identifying argument
    (its key names a thing, or its value looks like an id) whose value appears in neither the
    system prompt nor any message of the decision's request (the customer's words, earlier tool
    results): ``{i: (key, value)}``. One query for all of them: the requests' message chains walked
    back together."""
    wanted: list[tuple[int, str, str, str | None, str]] = []
    for i, arguments, messages_ref, system_ref in calls:
        try:
            args = json.loads(arguments or "null")
        except ValueError:
            continue
        if isinstance(args, dict) and messages_ref:
            wanted += [(i, k, messages_ref, system_ref, str(v)) for k, v in args.items()
                       if isinstance(v, str | int) and not isinstance(v, bool) and len(str(v)) >= 3
                       and (_ID_KEY.search(k) or _ID_VALUE.match(str(v)))]
    if not wanted:
        return {}
    unseen = store.sql("""WITH RECURSIVE wanted AS (
            SELECT unnest(?::INTEGER[]) AS w, unnest(?::VARCHAR[]) AS start, unnest(?::VARCHAR[]) AS sys,
                   unnest(?::VARCHAR[]) AS value),
        chain(start, node) AS (
            SELECT DISTINCT start, start FROM wanted
            UNION
            SELECT c.start, m.prev FROM chain c JOIN message_chain m ON m.node = c.node WHERE m.prev IS NOT NULL),
        bodies AS (SELECT c.start, t.body FROM chain c JOIN message_chain m ON m.node = c.node
                   JOIN content t ON t.hash = m.message)
        SELECT w FROM wanted x
        -- A chain whose messages are not in the store (pruned, or never written) proves nothing.
        WHERE EXISTS (SELECT 1 FROM bodies b WHERE b.start = x.start)
          AND NOT EXISTS (SELECT 1 FROM bodies b WHERE b.start = x.start AND contains(b.body, x.value))
          AND NOT EXISTS (SELECT 1 FROM content t WHERE t.hash = x.sys AND contains(t.body, x.value))""",
                       [list(range(len(wanted))), [w[2] for w in wanted], [w[3] for w in wanted],
                        [w[4] for w in wanted]])
    out: dict[int, tuple[str, str]] = {}
    for (w,) in sorted(unseen):
        i, key, _, _, value = wanted[w]
        out.setdefault(i, (key, value))
    return out


def _route_rates(store: tracer.Store, scope: Scope, config: DetectConfig,
                 routes: set[tuple[str, str]]) -> dict[tuple[str, str], tuple[int, int]]:
    """Of each route's newest ``route_window`` sessions: how many had a made-up call, and how many there were."""
    t = config.tools
    where, params = _routes_in(routes)
    cte, cte_params = _judged(t, "main.llm_calls", "main.tool_calls", "pool", every=False)
    rows = store.sql(f"""WITH pool AS (
            SELECT s.session_id, s.agent, coalesce(s.route, '') AS route FROM sessions s
            WHERE s.ended AND {scope.of_origins()} AND ({where})
            QUALIFY row_number() OVER (PARTITION BY s.agent, coalesce(s.route, '') ORDER BY s.end_ns DESC) <= ?),
        {cte},
        bad AS (SELECT session_id FROM judged WHERE made_up IS NOT NULL UNION SELECT session_id FROM unrun)
        SELECT agent, route, count(*) FILTER (WHERE session_id IN (SELECT session_id FROM bad)), count(*)
        FROM pool GROUP BY agent, route""", [*params, t.route_window, *cte_params])
    return {(agent, route): (bad, n) for agent, route, bad, n in rows}


def overload(store: tracer.Store, scope: Scope, config: DetectConfig) -> list[Finding]:
    """Sessions whose decisions are routinely offered more than ``max_tools`` tools, on an agent
    whose choices suffer for it.

    Many tools are not a failure in themselves (an agent with 40 tools that picks well raises
    nothing); the failure is the model choosing worse among them. So each decision of the agent's
    newest sessions is marked bad when a call it led to was made up (``tools.hallucinated``'s
    rule), refused as a bad request (``choice_error_types``), or repeated an earlier call of the
    session and got the same answer; and the session alerts when the agent's decisions with many
    tools are bad at least ``overload_bad_rate`` of the time and, where it also has decisions with
    few tools, ``overload_margin`` more often than those. Both rates are in the evidence.
    """
    t = config.tools
    head, params = scope_head(scope)
    rows = store.sql(f"""{head}
        SELECT c.session_id, s.agent, s.route, count(*) FILTER (WHERE len(c.tools_available) > ?), count(*),
               max(len(c.tools_available)), list(DISTINCT c.turn_index ORDER BY c.turn_index)
                   FILTER (WHERE len(c.tools_available) > ?), max(c.end_ns)
        FROM llm_calls c JOIN target s USING (session_id)
        WHERE c.status = 'ok' AND len(c.tools_available) > 0
        GROUP BY ALL HAVING count(*) FILTER (WHERE len(c.tools_available) > ?) >= ? * count(*)""",
                     [*params, t.max_tools, t.max_tools, t.max_tools, t.overload_share])
    if not rows:
        return []
    agents = {r[1] for r in rows}
    cte, cte_params = _judged(t, "main.llm_calls", "main.tool_calls", "pool")
    marks = ", ".join("?" * len(agents))
    accuracy = {agent: (many, bad_many, few, bad_few) for agent, many, bad_many, few, bad_few in store.sql(f"""
        WITH pool AS (
            SELECT s.session_id, s.agent FROM sessions s
            WHERE s.ended AND {scope.of_origins()} AND s.agent IN ({marks})
            QUALIFY row_number() OVER (PARTITION BY s.agent ORDER BY s.end_ns DESC) <= ?),
        {cte},
        bad AS (
            SELECT decision FROM judged
            WHERE made_up IS NOT NULL OR repeated OR (status <> 'ok' AND list_contains(?::VARCHAR[], error_type))
            UNION SELECT decision FROM unrun),
        graded AS (
            SELECT p.agent, len(d.offered) > ? AS many, d.decision IN (SELECT decision FROM bad) AS bad
            FROM decisions d JOIN pool p USING (session_id)
            WHERE len(d.offered) > 0 AND len(d.chosen) > 0)
        SELECT agent, count(*) FILTER (WHERE many), count(*) FILTER (WHERE many AND bad),
               count(*) FILTER (WHERE NOT many), count(*) FILTER (WHERE NOT many AND bad)
        FROM graded GROUP BY agent""", [*sorted(agents, key=str), t.route_window, *cte_params,
                                        t.choice_error_types, t.max_tools])}
    out = []
    for sid, agent, route, over, decisions, most, turns, seen in rows:
        many, bad_many, few, bad_few = accuracy.get(agent, (0, 0, 0, 0))
        if many < t.overload_min_decisions:
            continue
        rate_many = bad_many / many
        compared = few >= t.overload_min_decisions
        rate_few = bad_few / few if few else None
        if rate_many < t.overload_bad_rate or (compared and rate_many < (rate_few or 0.0) + t.overload_margin):
            continue
        versus = (f", against {rate_few:.0%} of {few} with {t.max_tools} or fewer" if compared else
                  f" (no decisions with {t.max_tools} or fewer tools to compare with)")
        out.append(Finding(
            "tools.overload", "warning",
            f"{over} of {decisions} decisions offered more than {t.max_tools} tools (up to {most}); the agent's "
            f"decisions with that many chose badly {rate_many:.0%} of {many} times{versus}",
            agent, route, sid, route or "", seen, turns,
            {"decisions": decisions, "overloaded_decisions": over, "most_tools_offered": most,
             "max_tools": t.max_tools,
             "choice_accuracy": {"of": f"agent {agent}, its last {t.route_window} sessions",
                                 "many_tools": {"decisions": many, "bad": bad_many, "bad_rate": rate_many},
                                 "few_tools": {"decisions": few, "bad": bad_few, "bad_rate": rate_few},
                                 "bad_means": "a made-up call, a call refused as a bad request "
                                              f"({', '.join(t.choice_error_types)}), or a repeat of an earlier call "
                                              "with the same answer"},
             "rule": f"{t.overload_share:.0%} of the session's decisions over {t.max_tools} tools, and the agent's "
                     f"bad-choice rate with many tools at least {t.overload_bad_rate:.0%} and {t.overload_margin:.0%} "
                     "above its rate with few (where it has both)"}))
    return out


def diversity(store: tracer.Store, scope: Scope, config: DetectConfig) -> list[Finding]:
    """A route whose recent sessions use far fewer distinct tools than before: the median number
    of distinct tools of its last ``diversity_recent`` sessions at most ``1 - diversity_drop`` of
    the median of up to ``diversity_reference`` sessions before them, or the most used tool's
    median share of the calls risen from at most ``1 - diversity_drop`` to ``diversity_top_share``
    (one tool crowding out the rest). Like ``cost.drift``, a window against the route's own
    history: medians, so that a few short sessions are not a collapse; a route needs half its
    reference window and ``diversity_min_tools`` distinct tools (median) before it is judged, so a
    young route, or one that only ever needs a tool or two, is left alone. The session judged must
    itself be collapsed, and so must the one before it."""
    t = config.tools
    where, params = scope.where()
    keep = 1 - t.diversity_drop
    rows = store.sql(f"""WITH {TARGET.format(where=where)},
        {route_history(scope, t.diversity_recent + t.diversity_reference + 1, which=NAMED)},
        used AS (
            SELECT session_id, count(DISTINCT tool_name) AS tools, max(n) / sum(n) AS top
            FROM (SELECT session_id, tool_name, count(*) AS n FROM tool_calls
                  WHERE session_id IN (SELECT session_id FROM history) GROUP BY ALL)
            GROUP BY session_id),
        hist AS (
            SELECT h.session_id, h.agent, h.route, h.end_ns, coalesce(u.tools, 0) AS tools, u.top
            FROM history h LEFT JOIN used u USING (session_id)),
        windows AS (
            SELECT *, count(*) OVER rec AS n_rec, median(tools) OVER rec AS tools_rec, median(top) OVER rec AS top_rec,
                   count(*) OVER ref AS n_ref, median(tools) OVER ref AS tools_ref, median(top) OVER ref AS top_ref
            FROM hist WINDOW {recent_and_reference(t.diversity_recent, t.diversity_reference)}),
        fell AS (
            SELECT *, n_rec = ? AND n_ref >= ? AND tools_ref >= ?
                      AND ((tools_rec <= ? * tools_ref AND tools <= ? * tools_ref)
                           OR (top_ref <= ? AND top_rec >= ? AND top >= ?)) AS down
            FROM windows),
        held AS (SELECT *, down AND coalesce(lag(down) OVER (PARTITION BY agent, route ORDER BY end_ns), FALSE)
                           AS held FROM fell)
        SELECT w.session_id, w.agent, nullif(w.route, ''), w.end_ns, w.tools, w.top, w.tools_rec, w.top_rec,
               w.tools_ref, w.top_ref, w.n_ref
        FROM held w JOIN target USING (session_id) WHERE w.held""",
                     [*params, t.diversity_recent, max(t.diversity_reference // 2, 3), t.diversity_min_tools,
                      keep, keep, keep, t.diversity_top_share, t.diversity_top_share])
    if not rows:
        return []
    out = []
    for sid, agent, route, seen, tools, top, tools_rec, top_rec, tools_ref, top_ref, n_ref in rows:
        narrowed = tools_rec <= keep * tools_ref
        what = (f"the last {t.diversity_recent} sessions used a median of {tools_rec:g} distinct tools, against "
                f"{tools_ref:g} over the {n_ref} before them" if narrowed else
                f"one tool took a median {top_rec:.0%} of the last {t.diversity_recent} sessions' calls, against "
                f"{top_ref:.0%} over the {n_ref} before them")
        out.append(Finding(
            "tools.diversity", "warning", f"{route_label(agent, route)} narrowed: {what} (this session: {tools})",
            agent, route, sid, route or "", seen, [],
            {"distinct_tools": tools, "top_tool_share": top,
             "recent": {"sessions": t.diversity_recent, "median_distinct_tools": tools_rec,
                        "median_top_tool_share": top_rec},
             "baseline": {"of": route_label(agent, route), "sessions": n_ref, "median_distinct_tools": tools_ref,
                          "median_top_tool_share": top_ref,
                          "rule": f"median distinct tools down by {t.diversity_drop:.0%} (from at least "
                                  f"{t.diversity_min_tools}), or the top tool's median share from at most "
                                  f"{keep:.0%} to {t.diversity_top_share:.0%}; held two sessions running"},
             "tools_before": _tools_of(store, agent, route, seen, t.diversity_recent + t.diversity_reference,
                                       t.diversity_recent),
             "tools_recent": _tools_of(store, agent, route, seen, t.diversity_recent, 0)}))
    return out


def _tools_of(store: tracer.Store, agent: str | None, route: str | None, until_ns: int, back: int,
              skip: int) -> dict[str, int]:
    """Calls per tool over a route's sessions ``skip`` to ``back`` before (and including) the one that
    ended at ``until_ns``."""
    rows = store.sql("""WITH w AS (
            SELECT session_id FROM sessions
            WHERE ended AND agent IS NOT DISTINCT FROM ? AND coalesce(route, '') = ? AND end_ns <= ?
            ORDER BY end_ns DESC LIMIT ? OFFSET ?)
        SELECT tool_name, count(*) FROM tool_calls WHERE session_id IN (SELECT session_id FROM w)
        GROUP BY tool_name ORDER BY count(*) DESC, tool_name""", [agent, route or "", until_ns, back - skip, skip])
    return dict(rows)

