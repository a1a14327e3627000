"""Detectors: loops, cost blow-ups, unreliable tools and unsafe content, found in the store with
SQL (the work stays in DuckDB), each finding an alert with its evidence.

Every detector is a small function over the same inputs: the store, the sessions to look at
(``Scope``) and the thresholds (``DetectConfig``, loaded from YAML; ``flightrec detect
--print-config`` shows the defaults). Each returns ``Finding``s; ``detect`` turns them into alerts
and folds them into the store, where an alert is deduplicated by its fingerprint (detector and
subject), so that running it again over the same history changes nothing.

Families and detectors (``name``: what it flags):

- loops: ``loop.repeat`` the same tool with the same arguments N times in a row;
  ``loop.window`` N times within the last W calls; ``loop.cycle`` a cycle of 2 to 4 calls
  repeated k times; ``loop.no_progress`` a tool returning the same result again and again for
  different arguments; ``loop.guard`` a session the agent's in-process loop guard
  (``tracer.LoopGuard``) stopped; ``loop.turns`` a session over its turn budget; ``loop.max_tokens``
  repeated ``max_tokens`` stops.
- cost: ``cost.budget`` a session over an absolute budget; ``cost.guard`` a session its own token
  budget stopped (an agent-side guard caught a blow-up: worth knowing it happens); ``cost.anomaly`` a session far above
  the trailing baseline of its agent and route (median and interquartile range of the previous
  sessions, with a minimum history; the alert explains the baseline); ``cost.token_spike`` a turn
  whose input jumps; ``cost.context`` context-window utilisation at or above 70% (warning) or 85%
  (critical); ``cost.cache_drop`` a cache-hit ratio far below the baseline (cache-busting).
- reliability: ``reliability.tool_errors`` a tool error rate over a threshold;
  ``reliability.breaker`` circuit-breaker openings; ``reliability.retry_storm`` many failed model
  attempts; ``reliability.latency_drift`` model-call p95 latency above its trailing baseline.
- safety: ``safety.injection`` tool results carrying prompt-injection markers (patterns, and
  imperative text aimed at the assistant); ``safety.unapproved`` an irreversible tool call above
  its approval threshold with no approval on record.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import os
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

import tracer

from ._alerts import Alert, Severity

# -- configuration ---------------------------------------------------------------------------------


class _Section(BaseModel):
    # The docstring under each field is its description, so that --print-config can explain it.
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)


class LoopLimits(_Section):
    repeat: int = Field(default=tracer.LoopRules.repeat, ge=2)
    """loop.calls: identical answers in a row (the same call, or a near-identical one, answered the same
    once volatile fields are normalised) that make a loop when no answer changes afterwards ..."""
    wait_polls: int = Field(default=tracer.LoopRules.wait_polls, ge=1)
    """... identical answers to one call that are still waiting, not a loop, when the answer then changes
    (a job polled until it is done) ..."""
    retries: int = Field(default=tracer.LoopRules.retries, ge=1)
    """... identical failures that are still a retry, not a loop, when the call then succeeds ..."""
    poll_budget: int = Field(default=tracer.LoopRules.poll_budget, ge=2)
    """... and calls with the same arguments per session, whatever they return (a poll with no end)."""
    max_tokens_stops: int = Field(default=3, ge=1)
    """loop.max_tokens: replies cut off at max_tokens in one session."""

    def rules(self) -> tracer.LoopRules:
        return tracer.LoopRules(repeat=self.repeat, wait_polls=self.wait_polls, retries=self.retries,
                                poll_budget=self.poll_budget)


class BaselineLimits(_Section):
    """How a session is judged against the history of its agent and route (cost, tokens, steps, latency)."""

    window: int = Field(default=200, ge=5)
    """The most previous sessions of the route a baseline uses (the trailing window)."""
    min_sessions: int = Field(default=3, ge=1)
    """Previous sessions of the route needed before its sessions are judged at all (the centre is their median)."""
    history: int = Field(default=20, ge=3)
    """Previous sessions of the route needed for its own spread; with fewer it borrows a wider one ..."""
    borrow_agent: float = Field(default=1.25, ge=1)
    """... the spread of the agent's other sessions around their routes' medians, this many times wider ..."""
    borrow_store: float = Field(default=1.5, ge=1)
    """... else the whole store's, this many times wider ..."""
    cold_spread: float = Field(default=1.0, gt=0)
    """... else this spread (natural log units) when the store itself is new."""
    z: float = Field(default=3.5, gt=0)
    """A session is flagged this many robust standard deviations (1.4826 × MAD, on a log scale) above the median ..."""
    min_spread: float = Field(default=0.1, gt=0)
    """... with a spread of at least this (log units): a route of identical sessions does not flag a 5% rise ..."""
    upper_margin: float = Field(default=1.25, ge=1)
    """... and above the route's 90th percentile times this: a route with a legitimate costly mode keeps it."""


class CostLimits(_Section):
    ratio: float = Field(default=2.0, ge=1)
    """cost.anomaly: a session's cost at least this many times its route's median (and beyond the baseline's band)."""
    tokens_ratio: float = Field(default=2.0, ge=1)
    """cost.tokens: the same for total tokens, for sessions whose cost is unknown (unpriced models)."""
    price_ratio: float = Field(default=2.0, ge=1)
    """cost.price: the price paid per token this many times the route's usual (a pricier model, no cache)."""
    jump_ratio: float = Field(default=3.0, ge=1)
    """cost.token_jump: the most tokens one turn added (input growth plus output), this many times the usual ..."""
    jump_min_tokens: int = Field(default=5_000, ge=0)
    """... and by at least this many tokens."""
    drift_recent: int = Field(default=10, ge=3)
    """cost.drift: the route's last N sessions ..."""
    drift_reference: int = Field(default=50, ge=5)
    """... against the M sessions before them ..."""
    drift_ratio: float = Field(default=1.8, gt=1)
    """... whose median they exceed by this factor (and so does the session flagged)."""
    context_warning: float | None = Field(default=None, gt=0, le=1)
    """context.window: window utilisation for a warning (off by default: long sessions fill the window) ..."""
    context_critical: float = Field(default=0.85, gt=0, le=1)
    """... and for a critical alert: the next turns may not fit."""
    cache_drop: float = Field(default=0.3, gt=0, le=1)
    """cost.cache_drop: cache-hit ratio this far below the route's median ..."""
    cache_baseline_min: float = Field(default=0.4, ge=0, le=1)
    """... when that median is at least this ..."""
    cache_min_input_tokens: int = Field(default=4_000, ge=0)
    """... and the session read at least this many input tokens."""


class StepLimits(_Section):
    ratio: float = Field(default=3.0, ge=1)
    """steps.anomaly: steps (distinct tool calls, and turns without one) this many times the route's median
    (the seeds' "3× more steps than usual") ..."""
    min_extra: int = Field(default=4, ge=0)
    """... and at least this many more."""


class Budget(_Section):
    """Absolute limits for an agent, or one of its routes. None applies unless set."""

    agent: str | None = None
    """The agent; every agent when omitted."""
    route: str | None = None
    """The route; every route when omitted."""
    session_usd: float | None = Field(default=None, gt=0)
    """cost.budget: USD per session."""
    tokens: int | None = Field(default=None, ge=1)
    """cost.budget: tokens per session (input, cache and output)."""
    turns: int | None = Field(default=None, ge=1)
    """steps.budget: turns per session."""
    tool_calls: int | None = Field(default=None, ge=1)
    """steps.budget: tool calls per session."""


class ReliabilityLimits(_Section):
    tool_error_rate: float = Field(default=0.5, gt=0, le=1)
    """reliability.tool_errors: share of a session's tool calls that failed and were never retried successfully ..."""
    tool_error_min_calls: int = Field(default=4, ge=1)
    """... over at least this many calls ..."""
    tool_error_ignore: list[str] = ["not_found", "invalid_arguments", "not_allowed", "approval_rejected"]
    """... not counting these error types: answers about the request, not failures of the tool."""
    retry_storm: int = Field(default=5, ge=1)
    """reliability.retry_storm: failed model-call attempts per session."""
    latency_ratio: float = Field(default=3.0, ge=1)
    """reliability.latency: a session's wall time at least this many times its route's median ..."""
    latency_min_s: float = Field(default=30.0, ge=0)
    """... and at least this many seconds longer."""
    latency_drift: float = Field(default=1.5, gt=1)
    """reliability.latency_drift: model-call p95 over the baseline's p95, at least ..."""
    latency_drift_min_ms: float = Field(default=500.0, ge=0)
    """... and at least this many milliseconds more ..."""
    latency_min_calls: int = Field(default=50, ge=5)
    """... with at least this many calls on each side."""


class ApprovalRule(_Section):
    amount_argument: str
    """The argument that holds the amount."""
    above: float
    """Amounts above this need an approval."""
    pending_marker: str = "pending_approval"
    """Text in the result that means the call only asked for approval (nothing was done)."""


_INJECTION = (
    r"(?i)\b(ignore|disregard|forget|override)\b[^.\n]{0,40}\b(instructions|rules|system prompt|guidelines)\b",
    r"(?i)\b(you are now|new instructions|from now on,? you)\b",
    r"(?i)\b(before|instead of) (answering|replying|responding)\b[^.\n]{0,20}\b(call|run|use|execute|send)\b",
    r"(?i)\b(assistant|ai|agent|model)\s*[:,]\s*(please\s+)?(call|run|execute|send|issue|transfer|refund)\b",
    r"(?i)<\s*/?\s*(system|instructions?|admin)\s*>",
    r"(?i)\bimmediately (call|run|execute|issue|send)\b",
)


class SafetyLimits(_Section):
    injection_patterns: list[str] = list(_INJECTION)
    """safety.injection: regular expressions (RE2 syntax) for prompt-injection markers in tool results."""
    approval_tools: dict[str, ApprovalRule] = {"issue_refund": ApprovalRule(amount_argument="amount_cents",
                                                                            above=20_000)}
    """safety.unapproved: irreversible tools and the amount above which they need an approval."""


class DetectConfig(_Section):
    """Every detector's thresholds. A YAML file gives any subset; the rest keep their defaults."""

    loops: LoopLimits = LoopLimits()
    baseline: BaselineLimits = BaselineLimits()
    cost: CostLimits = CostLimits()
    steps: StepLimits = StepLimits()
    reliability: ReliabilityLimits = ReliabilityLimits()
    safety: SafetyLimits = SafetyLimits()
    budgets: list[Budget] = []
    """Absolute budgets per agent and route; the most specific match applies. None by default."""
    disabled: list[str] = []
    """Detectors to skip, by name (``loop.window``) or family (``cost``)."""


def load_config(path: str | os.PathLike[str] | None) -> DetectConfig:
    """The detectors' thresholds: the defaults, overridden by a YAML file when given.

    Raises:
        tracer.ConfigError: the file is missing, is not YAML, or has an unknown or bad value.
    """
    if path is None:
        return DetectConfig()
    p = Path(path)
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise tracer.ConfigError(f"cannot read the detector config {p}: {exc.strerror}.") from None
    except yaml.YAMLError as exc:
        raise tracer.ConfigError(f"{p} is not valid YAML: {exc}.") from None
    try:
        config = DetectConfig.model_validate(raw)
    except ValidationError as exc:
        raise tracer.ConfigError(f"{p}: {tracer.validation_problems(exc, most=3)}. See the defaults with "
                                 "`flightrec detect --print-config`.") from None
    unknown = [d for d in config.disabled if d not in DETECTORS and d not in FAMILIES_OF.values()]
    if unknown:
        raise tracer.ConfigError(f"{p}: disabled: unknown detector(s) {', '.join(unknown)}; "
                                 f"known: {', '.join(DETECTORS)}.")
    for pattern in config.safety.injection_patterns:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise tracer.ConfigError(f"{p}: safety.injection_patterns: {pattern!r} is not a regular expression "
                                     f"({exc}).") from None
    return config


def config_yaml(config: DetectConfig | None = None) -> str:
    """The thresholds as YAML, with each one's meaning as a comment: a starting point for a config file."""
    config = config or DetectConfig()
    lines = ["# flightrec detector thresholds (flightrec detect --config FILE). Omit what you keep."]
    for name in DetectConfig.model_fields:
        section = getattr(config, name)
        if not isinstance(section, _Section):
            continue
        lines.append(f"{name}:" + (f"   # {type(section).__doc__.splitlines()[0]}" if type(section).__doc__ else ""))
        for key, field_info in type(section).model_fields.items():
            value = getattr(section, key)
            if isinstance(value, BaseModel | dict | list):
                dumped = yaml.safe_dump({key: json.loads(json.dumps(value, default=lambda m: m.model_dump()))},
                                        sort_keys=False, width=200)
                lines.append(f"  # {' '.join((field_info.description or '').split())}")
                lines += ["  " + line for line in dumped.rstrip().splitlines()]
            else:
                lines.append(f"  {key}: {'null' if value is None else value}   "
                             f"# {' '.join((field_info.description or '').split())}")
    lines.append("# Absolute budgets, none by default; the most specific entry (agent and route, then agent, then")
    lines.append("# route, then neither) applies. Each limit is optional:")
    lines.append("#   - {agent: research, route: due_diligence, session_usd: 5.0, tokens: 2000000, turns: 40, "
                 "tool_calls: 120}")
    lines.append("budgets: " + (yaml.safe_dump([b.model_dump(exclude_none=True) for b in config.budgets],
                                               default_flow_style=True, width=200).strip() if config.budgets else "[]"))
    lines.append("disabled: []   # detectors (loop.calls) or families (cost) to skip")
    return "\n".join(lines) + "\n"


# -- findings ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scope:
    """The sessions a run looks at: ended ones that ended at or after ``since_ns``, or these ids, of
    the ``origins`` given.

    Production only by default: eval trials misbehave on purpose (that is what their cases test),
    and replays and forks are experiments on recorded sessions, so an alert about one would page
    someone for nothing. The baselines a session is judged against are built from sessions of the
    same origins, so that an eval run's or a fork's costs never move production's medians.
    """

    since_ns: int = 0
    session_ids: tuple[str, ...] | None = None
    rows_from_ns: int = 0
    """No row of a session in scope starts before this; ``detect`` sets it from the sessions' own
    starts. The per-session detectors read only the rows from then on (see ``_with``)."""
    origins: tuple[str, ...] | None = ("production",)
    """The ``sessions.origin`` values looked at (``tracer.ORIGINS``); ``None``: every session."""

    def __post_init__(self) -> None:
        unknown = [o for o in self.origins or () if o not in tracer.ORIGINS]
        if unknown or self.origins == ():
            raise tracer.ConfigError(f"origin {', '.join(unknown) or '(none)'}: not a session origin; "
                                     f"use one or more of {', '.join(tracer.ORIGINS)}, or all.")

    def of_origins(self, alias: str = "s") -> str:
        """A SQL condition on ``sessions`` (as ``alias``) that keeps the sessions of the scope's origins
        (the history a baseline is built from). The values are checked, so they are inlined."""
        if self.origins is None:
            return "true"
        return f"{alias}.origin IN ({', '.join(repr(o) for o in self.origins)})"

    def where(self, alias: str = "s") -> tuple[str, list[Any]]:
        """A SQL condition on ``sessions`` (as ``alias``) and its parameters."""
        sql, params = f"{alias}.ended AND {alias}.end_ns >= ? AND {self.of_origins(alias)}", [self.since_ns]
        if self.session_ids is not None:
            sql += f" AND {alias}.session_id IN ({', '.join('?' * len(self.session_ids)) or 'NULL'})"
            params += list(self.session_ids)
        return sql, params


@dataclass
class Finding:
    """One observation: becomes (or adds to) an alert."""

    detector: str
    severity: Severity
    title: str
    agent: str | None
    route: str | None
    session_id: str | None
    subject: str
    """What the alert is about, beyond the detector, agent and route (a tool and its arguments …)."""
    seen_ns: int
    turns: list[int] = field(default_factory=list)
    evidence: dict[str, Any] = field(default_factory=dict)
    observation: str | None = None
    """The observation's key; the session id unless the detector watches something else."""


Detector = Callable[[tracer.Store, Scope, DetectConfig], list[Finding]]

_TARGET = "target AS (SELECT s.session_id, s.agent, s.route, s.end_ns FROM sessions s WHERE {where})"
_PER_SESSION_TABLES = ("spans", "llm_calls", "tool_calls", "turns")


def _with(scope: Scope) -> tuple[str, list[Any]]:
    """The ``WITH`` head of a per-session detector: ``target``, the sessions in scope, and each table
    it reads cut down to those sessions' rows, under the table's own name (``main.x`` is the table).

    Joining a whole table on session id costs as much as the table, however few sessions a run
    covers; the constant bound on ``start_ns`` (rows are stored about in time order) lets DuckDB
    skip the older row groups and segments by their min/max, so a run's cost follows its sessions.
    """
    where, params = scope.where()
    ctes = [_TARGET.format(where=where)]
    ctes += [f"{t} AS (SELECT * FROM main.{t} WHERE start_ns >= {int(scope.rows_from_ns)} "
             "AND session_id IN (SELECT session_id FROM target))" for t in _PER_SESSION_TABLES]
    return "WITH " + ",\n".join(ctes), params


def _args(text: str | None) -> Any:
    try:
        return json.loads(text) if text else None
    except ValueError:
        return text


# -- loops -------------------------------------------------------------------------------------------


def _loop_calls(store: tracer.Store, scope: Scope, config: DetectConfig) -> list[Finding]:
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
    head, params = _with(scope)
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
                {"kind": loop.kind, "tools": list(loop.tools), "arguments": _args(first[4]),
                 "result": (first[6] or first[5] or "")[:500], "calls": len(loop.calls), "wasted": loop.wasted,
                 "repeats": loop.repeats, "answer_changed_after": loop.progressed,
                 "first_call": loop.calls[0] + 1, "rules": dataclasses.asdict(rules)}))
    return out


def _guard_stops(store: tracer.Store, scope: Scope, guard: str) -> list[tuple[Any, ...]]:
    """Sessions in which the agent's own ``guard`` fired: (session, agent, route, turns, seen, the event)."""
    head, params = _with(scope)
    rows = store.sql(f"""{head}
        SELECT u.session_id, any_value(t.agent), any_value(t.route), list(u.turn_index), max(u.end_ns),
               list(u.events)
        FROM turns u JOIN target t USING (session_id)
        WHERE u.events LIKE '%guard_fired%' AND contains(u.events, ?) GROUP BY u.session_id""",
                     [*params, f'"{guard}"'])
    out = []
    for sid, agent, route, turns, seen, events in rows:
        fired = next((e["attributes"] for ev in events for e in json.loads(ev) if e.get("name") == "guard_fired"
                      and e.get("attributes", {}).get("guard") == guard), None)
        if fired is not None:
            out.append((sid, agent, route, turns, seen, fired))
    return out


def _loop_guard(store: tracer.Store, scope: Scope, config: DetectConfig) -> list[Finding]:
    return [Finding("loop.guard", "warning", f"the agent's loop guard stopped it: {fired.get('reason', '')}",
                    agent, route, sid, route or "", seen, turns, {"guard": fired})
            for sid, agent, route, turns, seen, fired in _guard_stops(store, scope, "loop")]


def _loop_max_tokens(store: tracer.Store, scope: Scope, config: DetectConfig) -> list[Finding]:
    n = config.loops.max_tokens_stops
    head, params = _with(scope)
    rows = store.sql(f"""{head}
        SELECT c.session_id, any_value(t.agent), any_value(t.route), count(*), list(c.turn_index ORDER BY c.start_ns),
               max(c.end_ns)
        FROM llm_calls c JOIN target t USING (session_id)
        WHERE c.stop_reason = 'max_tokens' GROUP BY c.session_id HAVING count(*) >= ?""", [*params, n])
    return [Finding("loop.max_tokens", "warning", f"{count} replies cut off at max_tokens", agent, route, sid,
                    route or "", seen, turns, {"max_tokens_stops": count, "threshold": n})
            for sid, agent, route, count, turns, seen in rows]


# -- budgets -----------------------------------------------------------------------------------------


def _budget_for(budgets: list[Budget], agent: str | None, route: str | None) -> Budget | None:
    """The most specific budget that applies: agent and route, then agent, then route, then any."""
    fits = [b for b in budgets if b.agent in (None, agent) and b.route in (None, route)]
    return max(fits, key=lambda b: (b.agent is not None, b.route is not None), default=None)


def _budgets(store: tracer.Store, scope: Scope, config: DetectConfig) -> list[Finding]:
    """Sessions over the budget set for their agent and route (cost and tokens; turns and tool calls)."""
    if not config.budgets:
        return []
    head, params = _with(scope)
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


# -- baselines ---------------------------------------------------------------------------------------


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
    SELECT t.session_id, count(DISTINCT coalesce(t.shape_key, t.span_id)) AS steps
    FROM tool_calls t JOIN sessions s USING (session_id) WHERE s.agent IN (SELECT agent FROM target)
    GROUP BY t.session_id)"""
"""The distinct things a session's tools were asked: its call shapes. A hundred pages of one
listing are one, a poll is one, five parcels are five; repeating one call is a loop's business."""

_JUMPS = """jumps AS (
    SELECT session_id, max(greatest(tin - coalesce(prev, tin), 0) + tout) AS jump FROM (
        SELECT c.session_id, coalesce(c.input_tokens, 0) + coalesce(c.cache_read_tokens, 0)
                             + coalesce(c.cache_write_tokens, 0) AS tin, coalesce(c.output_tokens, 0) AS tout,
               lag(tin) OVER (PARTITION BY c.session_id ORDER BY c.end_ns) AS prev
        FROM llm_calls c JOIN sessions s USING (session_id)
        WHERE c.status = 'ok' AND s.agent IN (SELECT agent FROM target))
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
    the whole history, not only the sessions before: they describe how much an agent's sessions vary
    around their routes, which one session more or less hardly moves.)
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
    return f"""WITH {_TARGET.format(where=where)},
        {_JUMPS}, {_WORK},
        hist AS (
            SELECT s.session_id, s.agent, coalesce(s.route, '') AS route, s.end_ns, {values}
            FROM sessions s LEFT JOIN jumps j USING (session_id) LEFT JOIN work w USING (session_id)
            WHERE s.ended AND s.agent IN (SELECT agent FROM target) AND {scope.of_origins()}),
        logged AS (SELECT *, {xs} FROM hist),
        own AS (SELECT *, {own} FROM logged WINDOW rw AS (PARTITION BY agent, route ORDER BY end_ns {frame})),
        dev AS (SELECT *, {devs} FROM own),
        by_agent AS (SELECT agent, {pooled} FROM dev GROUP BY agent),
        by_store AS (SELECT {pooled} FROM dev)
        SELECT p.session_id, p.agent, nullif(p.route, ''), p.end_ns, {cols}
        FROM dev p JOIN target t USING (session_id) JOIN by_agent a ON a.agent = p.agent
        CROSS JOIN by_store g""", params


@dataclass(frozen=True)
class _Judged:
    """A session's value against its baseline."""

    session_id: str
    agent: str | None
    route: str | None
    value: float
    seen_ns: int
    median: float
    """The route's median, in the value's own units."""
    threshold: float
    """The value beyond which a session is flagged, in the value's own units."""
    sessions: int
    """Previous sessions of the route in the baseline."""
    spread_from: str
    """Where the spread came from: the route, the agent, the store or the cold-start default."""


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


def _of(agent: str | None, route: str | None) -> str:
    return f"agent {agent}" + (f", route {route}" if route else "")


def _baselines(store: tracer.Store, scope: Scope, config: DetectConfig) -> list[Finding]:
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
                        f"{_of(agent, route)}: the prompt prefix changed?", agent, route, sid, route or "", seen, [],
                        {"cache_hit_ratio": value, "baseline": {"of": _of(agent, route), "sessions": n,
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
                f"{_of(agent, route)} (flagged above {money}{threshold:{m.fmt}}; {n} earlier sessions)", agent, route,
                sid, route or "", seen, [],
                {"value": value, "unit": m.unit, "ratio_to_median": value / usual,
                 "baseline": {"of": _of(agent, route), "sessions": n, "median": usual, "threshold": threshold,
                              "spread_from": source}}))
    return out


# -- cost --------------------------------------------------------------------------------------------


def _cost_guard(store: tracer.Store, scope: Scope, config: DetectConfig) -> list[Finding]:
    return [Finding("cost.guard", "warning",
                    f"stopped by its token budget: {fired.get('reason', 'the token budget guard fired')}",
                    agent, route, sid, route or "", seen, turns, {"guard": fired})
            for sid, agent, route, turns, seen, fired in _guard_stops(store, scope, "token_budget")]


def _cost_drift(store: tracer.Store, scope: Scope, config: DetectConfig) -> list[Finding]:
    """A route whose recent sessions cost several times what it cost before: a slow drift, or a
    step change, that no single session stands out in. The whole recent window must have risen
    (its 20th percentile by the square root of the ratio, its median by the ratio), and have been
    so for the session before too: a few costly sessions among ordinary ones are
    ``cost.anomaly``'s, not a drift."""
    c = config.cost
    where, params = scope.where()
    rows = store.sql(f"""WITH {_TARGET.format(where=where)},
        hist AS (SELECT s.session_id, s.agent, coalesce(s.route, '') AS route, s.end_ns, ln(s.cost_usd) AS x
                 FROM sessions s
                 WHERE s.ended AND s.agent IN (SELECT agent FROM target) AND s.unpriced_calls = 0 AND s.cost_usd > 0
                   AND {scope.of_origins()}),
        windows AS (
            SELECT *, count(*) OVER rec AS n_rec, quantile_cont(x, [0.2, 0.5]) OVER rec AS q_rec,
                   count(*) OVER ref AS n_ref, median(x) OVER ref AS med_ref
            FROM hist WINDOW
                rec AS (PARTITION BY agent, route ORDER BY end_ns ROWS BETWEEN {c.drift_recent - 1} PRECEDING
                        AND CURRENT ROW),
                ref AS (PARTITION BY agent, route ORDER BY end_ns
                        ROWS BETWEEN {c.drift_recent + c.drift_reference - 1} PRECEDING
                        AND {c.drift_recent} PRECEDING)),
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
                    f"{_of(agent, route)} drifted: the last {c.drift_recent} sessions' median cost "
                    f"{tracer.format_usd(rec)} is {rec / ref:.1f}× the {tracer.format_usd(ref)} of the {n_ref} before "
                    f"them (this session {tracer.format_usd(cost)})",
                    agent, route, sid, route or "", seen, [],
                    {"cost_usd": cost, "recent_median_usd": rec, "reference_median_usd": ref,
                     "recent_sessions": c.drift_recent, "reference_sessions": n_ref, "ratio_threshold": c.drift_ratio})
            for sid, agent, route, cost, seen, rec, ref, n_ref in rows]


def _context_window(store: tracer.Store, scope: Scope, config: DetectConfig) -> list[Finding]:
    c = config.cost
    head, params = _with(scope)
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


# -- reliability -------------------------------------------------------------------------------------


def _tool_errors(store: tracer.Store, scope: Scope, config: DetectConfig) -> list[Finding]:
    """Sessions whose tools kept failing. A failure that a later call of the same tool recovered
    from (a retry that then succeeded) is how a flaky dependency is meant to be handled: it does
    not count."""
    r = config.reliability
    head, params = _with(scope)
    ignore = ", ".join("?" * len(r.tool_error_ignore)) or "NULL"
    rows = store.sql(f"""{head},
        marked AS (
            SELECT t.*, t.status <> 'ok' AND coalesce(t.error_type, '') NOT IN ({ignore})
                        AND coalesce(max(t.start_ns) FILTER (WHERE t.status = 'ok')
                                     OVER (PARTITION BY t.session_id, t.tool_name), 0) <= t.start_ns AS failed
            FROM tool_calls t JOIN target USING (session_id))
        SELECT m.session_id, any_value(s.agent), any_value(s.route), count(*) FILTER (WHERE m.failed) AS failed,
               count(*), max(m.end_ns), list(DISTINCT m.tool_name) FILTER (WHERE m.failed) AS tools
        FROM marked m JOIN target s USING (session_id)
        GROUP BY m.session_id HAVING count(*) >= ? AND failed >= ? * count(*) AND failed > 0""",
                     [*params, *r.tool_error_ignore, r.tool_error_min_calls, r.tool_error_rate])
    return [Finding("reliability.tool_errors", "warning",
                    f"{errors} of {calls} tool calls failed for good ({', '.join(tools)})",
                    agent, route, sid, ",".join(sorted(tools)), seen, [],
                    {"failed": errors, "calls": calls, "tools": tools, "rate_threshold": r.tool_error_rate})
            for sid, agent, route, errors, calls, seen, tools in rows]


def _breaker(store: tracer.Store, scope: Scope, config: DetectConfig) -> list[Finding]:
    head, params = _with(scope)
    rows = store.sql(f"""{head}
        SELECT u.session_id, any_value(t.agent), any_value(t.route), list(u.turn_index ORDER BY u.turn_index),
               max(u.end_ns), list(u.events)
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


def _retry_storm(store: tracer.Store, scope: Scope, config: DetectConfig) -> list[Finding]:
    n = config.reliability.retry_storm
    head, params = _with(scope)
    rows = store.sql(f"""{head}
        SELECT c.session_id, any_value(t.agent), any_value(t.route), count(*), list(DISTINCT c.error_type),
               list(DISTINCT c.turn_index ORDER BY c.turn_index), max(c.end_ns)
        FROM llm_calls c JOIN target t USING (session_id)
        WHERE c.status <> 'ok' GROUP BY c.session_id HAVING count(*) >= ?""", [*params, n])
    return [Finding("reliability.retry_storm", "warning",
                    f"{count} failed model-call attempts ({', '.join(str(e) for e in errors)})", agent, route, sid,
                    route or "", seen, turns, {"failed_attempts": count, "error_types": errors, "threshold": n})
            for sid, agent, route, count, errors, turns, seen in rows]


def _latency_drift(store: tracer.Store, scope: Scope, config: DetectConfig) -> list[Finding]:
    r = config.reliability
    where, params = scope.where()
    rows = store.sql(f"""WITH {_TARGET.format(where=where)},
        calls AS (SELECT s.agent, c.model, (c.end_ns - c.start_ns) / 1e6 AS ms, c.end_ns,
                         c.session_id IN (SELECT session_id FROM target) AS recent
                  FROM llm_calls c JOIN sessions s USING (session_id)
                  WHERE c.status = 'ok' AND s.ended AND {scope.of_origins()})
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


# -- safety ------------------------------------------------------------------------------------------


def _injection(store: tracer.Store, scope: Scope, config: DetectConfig) -> list[Finding]:
    patterns = config.safety.injection_patterns
    if not patterns:
        return []
    head, params = _with(scope)
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


def _unapproved(store: tracer.Store, scope: Scope, config: DetectConfig) -> list[Finding]:
    out = []
    head, params = _with(scope)
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
                               {"tool": tool, "arguments": _args(args), "above": rule.above}))
    return out


DETECTORS: dict[str, Detector] = {
    "loop.calls": _loop_calls, "loop.guard": _loop_guard, "loop.max_tokens": _loop_max_tokens,
    "cost.anomaly": _baselines, "cost.tokens": _baselines, "cost.token_jump": _baselines, "cost.price": _baselines,
    "cost.drift": _cost_drift, "cost.cache_drop": _baselines, "cost.guard": _cost_guard,
    "cost.budget": _budgets, "steps.anomaly": _baselines, "steps.budget": _budgets, "context.window": _context_window,
    "reliability.tool_errors": _tool_errors, "reliability.breaker": _breaker,
    "reliability.retry_storm": _retry_storm, "reliability.latency": _baselines,
    "reliability.latency_drift": _latency_drift,
    "safety.injection": _injection, "safety.unapproved": _unapproved,
}
"""Every detector by name, in the order they run."""

FAMILIES_OF = {name: {"loop": "loops"}.get(name.split(".")[0], name.split(".")[0]) for name in DETECTORS}
"""Each detector's family."""


# -- running -----------------------------------------------------------------------------------------


def _alert(f: Finding) -> Alert:
    key = "\x1f".join([f.detector, f.agent or "", f.route or "", f.subject])
    fingerprint = hashlib.sha256(key.encode()).hexdigest()
    return Alert(
        alert_id=fingerprint[:10], fingerprint=fingerprint, detector=f.detector, family=FAMILIES_OF[f.detector],
        severity=f.severity, title=f.title, agent=f.agent, route=f.route, session_id=f.session_id, turns=f.turns,
        session_ids=[f.session_id] if f.session_id else [], evidence=f.evidence, status="open",
        first_seen_ns=f.seen_ns, last_seen_ns=f.seen_ns, count=1)


class DetectResult(BaseModel):
    """What one detection run found."""

    sessions: int
    """Sessions looked at."""
    findings: int
    """Observations made (an alert may gather several)."""
    alerts: list[Alert]
    """Alerts that are new or were seen again in this run."""
    seconds: float
    """Wall time."""
    by_detector: dict[str, float]
    """Seconds per detector (detectors that share one pass over the store: their names, joined by ", ")."""


def detect(store: tracer.Store, *, scope: Scope | None = None, config: DetectConfig | None = None,
           detectors: Iterable[str] | None = None) -> DetectResult:
    """Runs the detectors over the sessions in ``scope`` and folds what they find into the store's alerts.

    Args:
        store: A store open for writing.
        scope: Which ended sessions to look at (default: every production session that ended).
        config: Thresholds (default: ``DetectConfig()``).
        detectors: Names to run (default: all that the config does not disable).

    Blocking: runs in the calling thread; safe to call again over the same history (idempotent).
    """
    scope = scope or Scope()
    config = config or DetectConfig()
    names = list(detectors) if detectors is not None else [
        n for n in DETECTORS if n not in config.disabled and FAMILIES_OF[n] not in config.disabled]
    started = time.perf_counter()
    where, params = scope.where()
    sessions, first_ns = store.sql(f"SELECT count(*), min(start_ns) FROM sessions s WHERE {where}", params)[0]
    scope = dataclasses.replace(scope, rows_from_ns=max(scope.rows_from_ns, first_ns or 0))
    findings: list[Finding] = []
    timings: dict[str, float] = {}
    if sessions:
        # Detectors that share a pass over the store (the baselines, the budgets) run it once.
        passes: dict[Detector, list[str]] = {}
        for name in names:
            passes.setdefault(DETECTORS[name], []).append(name)
        for run, wanted in passes.items():
            t0 = time.perf_counter()
            findings += [f for f in run(store, scope, config) if f.detector in wanted]
            timings[", ".join(wanted)] = time.perf_counter() - t0
    alerts = store.record_alerts((_alert(f), f.observation or f.session_id or str(f.seen_ns)) for f in findings)
    return DetectResult(sessions=sessions, findings=len(findings), alerts=alerts,
                        seconds=time.perf_counter() - started, by_detector=timings)


def parse_duration(text: str) -> float:
    """Seconds in ``30s``, ``15m``, ``24h``, ``7d`` or ``2w``.

    Raises:
        tracer.ConfigError: anything else.
    """
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", text)
    if m is None:
        raise tracer.ConfigError(f"--since {text!r}: use a number and a unit, for example 30m, 24h or 7d.")
    return float(m[1]) * {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[m[2]]


class OnlineDetector:
    """Runs the detectors on sessions as they end, on its own thread, and publishes what is new.

    Pass it to the recorder (``tracer.Recorder(db, on_sessions_ended=OnlineDetector(db))``) or to
    ``flightrec serve``: the exporter hands it the ids of sessions it has just committed, and it
    never blocks the exporter (ids wait in a bounded queue; if it falls behind, the oldest are
    dropped and counted, and ``flightrec detect`` finds them later).

    Args:
        db: The store the sessions are written to (this process must be its writer).
        config: Thresholds.
        publish: Called with each run's new or repeated alerts (``Dispatcher.publish``).
        interval_s: How long ended sessions gather before a run, so that one run covers many.
        origins: The origins of the sessions it judges (``Scope.origins``; default production).
    """

    def __init__(self, db: str | os.PathLike[str] | None = None, *, config: DetectConfig | None = None,
                 publish: Callable[[list[Alert]], None] | None = None, interval_s: float = 1.0,
                 max_pending: int = 10_000, origins: tuple[str, ...] | None = Scope.origins) -> None:
        import queue
        import threading

        self.db_path = tracer.default_db_path(db)
        self.config = config or DetectConfig()
        self._publish = publish
        self._interval_s = interval_s
        self._origins = Scope(origins=origins).origins  # checked here, not on the thread
        self._pending: queue.Queue[str] = queue.Queue(max_pending)
        self._idle = threading.Condition()
        self._busy = 0
        self._closed = threading.Event()
        self.runs = self.alerts = self.dropped = self.errors = 0
        self._thread = threading.Thread(target=self._loop, name="flightrec-detect", daemon=True)
        self._thread.start()

    def __call__(self, session_ids: list[str]) -> None:
        import queue

        for sid in session_ids:
            try:
                self._pending.put_nowait(sid)
            except queue.Full:
                self.dropped += 1
            else:
                with self._idle:
                    self._busy += 1

    def _loop(self) -> None:
        import logging
        import queue

        log = logging.getLogger("flightrec.detect")
        store: tracer.Store | None = None
        try:
            while not self._closed.is_set() or not self._pending.empty():
                try:
                    ids = [self._pending.get(timeout=0.1)]
                except queue.Empty:
                    continue
                deadline = time.monotonic() + self._interval_s
                while time.monotonic() < deadline and not self._closed.is_set():
                    try:  # a short wait, so that close() is heard within 0.1 s
                        ids.append(self._pending.get(timeout=min(max(deadline - time.monotonic(), 0.01), 0.1)))
                    except queue.Empty:
                        pass
                while True:
                    try:
                        ids.append(self._pending.get_nowait())
                    except queue.Empty:
                        break
                try:
                    store = store or tracer.Store(self.db_path)
                    result = detect(store, scope=Scope(session_ids=tuple(dict.fromkeys(ids)), origins=self._origins),
                                    config=self.config)
                    self.runs += 1
                    self.alerts += len(result.alerts)
                    if result.alerts and self._publish is not None:
                        self._publish(result.alerts)
                except Exception:  # detection must never take the agent down with it
                    self.errors += 1
                    log.warning("flightrec: online detection failed for %d sessions", len(ids), exc_info=True)
                finally:
                    with self._idle:
                        self._busy -= len(ids)
                        self._idle.notify_all()
        finally:
            if store is not None:
                store.close()

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Waits until every session handed over so far has been looked at; false on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: self._busy <= 0, timeout=timeout_s)

    def close(self, timeout_s: float = 30.0) -> None:
        """Looks at what is pending at once (without waiting out the interval), then stops the thread."""
        self._closed.set()
        self._thread.join(timeout_s)


SERVE_INTERVAL_S = 10.0
"""How long ``flightrec serve`` gathers ended sessions before one detection run. A run costs about
0.3 s of CPU on a 63,000-span store however few sessions it covers (its queries scan the tables):
run every second, detection took about a fifth of the collector's CPU under load
(benchmarks/RESULTS.md §22). Every 10 s, an alert comes up to about 10 s after its session ended."""


def serve_hook(db: str) -> OnlineDetector:
    """``flightrec serve``'s online detection: the default thresholds, new alerts to the console,
    one run every ``SERVE_INTERVAL_S`` while sessions end."""
    from ._sinks import ConsoleSink, Dispatcher

    dispatcher = Dispatcher([ConsoleSink()])
    return OnlineDetector(db, publish=dispatcher.publish, interval_s=SERVE_INTERVAL_S)
