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

import hashlib
import json
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
    model_config = ConfigDict(extra="forbid")


class LoopLimits(_Section):
    repeat: int = Field(default=tracer.LoopGuard.repeat, ge=2)
    """loop.repeat: identical calls in a row."""
    window: int = Field(default=tracer.LoopGuard.window, ge=2)
    """loop.window: the last W calls looked at ..."""
    window_repeats: int = Field(default=tracer.LoopGuard.window_repeats, ge=2)
    """... and how many of them may be the same call."""
    cycle_repeats: int = Field(default=tracer.LoopGuard.cycle_repeats, ge=2)
    """loop.cycle: repetitions of a cycle of 2 to 4 calls."""
    no_progress: int = Field(default=4, ge=2)
    """loop.no_progress: the same result from one tool, in a row, for different arguments."""
    max_turns: int = Field(default=30, ge=1)
    """loop.turns: turns per session."""
    max_tokens_stops: int = Field(default=2, ge=1)
    """loop.max_tokens: ``max_tokens`` stops per session."""


class CostLimits(_Section):
    session_usd: float = Field(default=1.0, gt=0)
    """cost.budget: USD per session."""
    history: int = Field(default=20, ge=5)
    """cost.anomaly, cost.cache_drop: previous sessions a baseline needs."""
    baseline_sessions: int = Field(default=200, ge=5)
    """... and the most it uses (the trailing window)."""
    iqr_k: float = Field(default=3.0, gt=0)
    """cost.anomaly: flagged above the baseline's third quartile plus k interquartile ranges ..."""
    min_ratio: float = Field(default=3.0, ge=1)
    """... and at least this many times its median."""
    spike_ratio: float = Field(default=3.0, gt=1)
    """cost.token_spike: a turn's input tokens over the previous turn's, at least ..."""
    spike_tokens: int = Field(default=20_000, ge=1)
    """... and by at least this many tokens."""
    context_warning: float = Field(default=0.70, gt=0, le=1)
    """cost.context: window utilisation for a warning ..."""
    context_critical: float = Field(default=0.85, gt=0, le=1)
    """... and for a critical alert."""
    cache_drop: float = Field(default=0.3, gt=0, le=1)
    """cost.cache_drop: cache-hit ratio this far below the baseline's median ..."""
    cache_baseline_min: float = Field(default=0.4, ge=0, le=1)
    """... when the baseline's median is at least this ..."""
    cache_min_input_tokens: int = Field(default=4_000, ge=0)
    """... and the session read at least this many input tokens."""


class ReliabilityLimits(_Section):
    tool_error_rate: float = Field(default=0.5, gt=0, le=1)
    """reliability.tool_errors: failed share of a session's tool calls ..."""
    tool_error_min_calls: int = Field(default=4, ge=1)
    """... over at least this many calls ..."""
    tool_error_ignore: list[str] = ["not_found", "invalid_arguments", "not_allowed", "approval_rejected"]
    """... not counting these error types: answers about the request, not failures of the tool."""
    retry_storm: int = Field(default=5, ge=1)
    """reliability.retry_storm: failed model-call attempts per session."""
    latency_drift: float = Field(default=1.5, gt=1)
    """reliability.latency_drift: p95 over the baseline's p95, at least ..."""
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
    cost: CostLimits = CostLimits()
    reliability: ReliabilityLimits = ReliabilityLimits()
    safety: SafetyLimits = SafetyLimits()
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
        problems = "; ".join(f"{'.'.join(str(x) for x in e['loc'])}: "
                             f"{'unknown setting' if e['type'] == 'extra_forbidden' else e['msg']}"
                             for e in exc.errors()[:3])
        raise tracer.ConfigError(f"{p}: {problems}. See the defaults with `flightrec detect --print-config`.") from None
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
    for name, section in (("loops", config.loops), ("cost", config.cost), ("reliability", config.reliability),
                          ("safety", config.safety)):
        lines.append(f"{name}:")
        for key, info in type(section).model_fields.items():
            value = getattr(section, key)
            if isinstance(value, BaseModel | dict | list):
                dumped = yaml.safe_dump({key: json.loads(json.dumps(value, default=lambda m: m.model_dump()))},
                                        sort_keys=False, width=200)
                lines.append(f"  # {info.description or ''}")
                lines += ["  " + line for line in dumped.rstrip().splitlines()]
            else:
                lines.append(f"  {key}: {value}   # {info.description or ''}")
    lines.append("disabled: []   # detectors or families to skip")
    return "\n".join(lines) + "\n"


# -- findings ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scope:
    """The sessions a run looks at: ended ones that ended at or after ``since_ns``, or these ids."""

    since_ns: int = 0
    session_ids: tuple[str, ...] | None = None

    def where(self, alias: str = "s") -> tuple[str, list[Any]]:
        """A SQL condition on ``sessions`` (as ``alias``) and its parameters."""
        sql, params = f"{alias}.ended AND {alias}.end_ns >= ?", [self.since_ns]
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

_TARGET = "target AS (SELECT s.session_id, s.agent, s.end_ns FROM sessions s WHERE {where})"
_ROUTES = """routes AS (
    SELECT session_id, any_value(coalesce(json_extract_string(attributes, '$."flightrec.route"'),
                                          json_extract_string(attributes, '$."flightrec.scenario"'))) AS route
    FROM spans WHERE parent_span_id IS NULL {filter} GROUP BY session_id)"""
_CALLS = """calls AS (
    SELECT t.session_id, t.turn_index, t.tool_name, t.arguments, t.result, t.status, t.start_ns,
           md5(coalesce(t.arguments, '')) AS ah, md5(coalesce(t.result, '')) AS rh,
           row_number() OVER (PARTITION BY t.session_id ORDER BY t.start_ns) AS i
    FROM tool_calls t JOIN {source} USING (session_id))"""


def _candidates(key: str, n: int) -> str:
    """Sessions where some (tool, ``key``) occurs at least ``n`` times: the only ones a run or window
    of ``n`` can be in. Filtering first keeps the window sorts off every other session's calls
    (4 s down to 1 s for ``loop.no_progress`` over 100,000 sessions) and cannot change a result."""
    return f"""cand AS (
    SELECT DISTINCT t.session_id FROM tool_calls t JOIN target USING (session_id)
    GROUP BY t.session_id, t.tool_name, md5(coalesce(t.{key}, '')) HAVING count(*) >= {int(n)})"""


def _with(scope: Scope, *parts: str) -> tuple[str, list[Any]]:
    where, params = scope.where()
    ctes = [_TARGET.format(where=where)]
    for part in parts:
        ctes.append(part.format(filter="AND session_id IN (SELECT session_id FROM target)",
                                source="cand" if any(p.startswith("cand AS") for p in parts) else "target"))
    return "WITH " + ",\n".join(ctes), params


def _args(text: str | None) -> Any:
    try:
        return json.loads(text) if text else None
    except ValueError:
        return text


# -- loops -------------------------------------------------------------------------------------------


def _loop_repeat(store: tracer.Store, scope: Scope, config: DetectConfig) -> list[Finding]:
    n = config.loops.repeat
    head, params = _with(scope, _ROUTES, _candidates("arguments", n), _CALLS)
    rows = store.sql(f"""{head},
        runs AS (SELECT *, i - row_number() OVER (PARTITION BY session_id, tool_name, ah ORDER BY i) AS grp FROM calls)
        SELECT r.session_id, any_value(t.agent), any_value(o.route), r.tool_name, r.ah, any_value(r.arguments),
               count(*) AS n, list(DISTINCT r.turn_index ORDER BY r.turn_index), max(r.start_ns), min(r.i)
        FROM runs r JOIN target t USING (session_id) LEFT JOIN routes o USING (session_id)
        GROUP BY r.session_id, r.tool_name, r.ah, r.grp HAVING count(*) >= ?""", [*params, n])
    out = []
    for sid, agent, route, tool, ah, args, count, turns, seen, first in rows:
        out.append(Finding(
            "loop.repeat", "critical" if count >= 2 * n else "warning",
            f"{tool} called {count} times in a row with the same arguments", agent, route, sid, f"{tool}:{ah}",
            seen, turns, {"tool": tool, "arguments": _args(args), "repeats": count, "threshold": n,
                          "first_call": first}))
    return out


def _loop_window(store: tracer.Store, scope: Scope, config: DetectConfig) -> list[Finding]:
    w, n = config.loops.window, config.loops.window_repeats
    head, params = _with(scope, _ROUTES, _candidates("arguments", n), _CALLS)
    rows = store.sql(f"""{head},
        counted AS (SELECT *, count(*) OVER (PARTITION BY session_id, tool_name, ah ORDER BY i
                                              RANGE BETWEEN {w - 1} PRECEDING AND CURRENT ROW) AS cnt FROM calls)
        SELECT c.session_id, any_value(t.agent), any_value(o.route), c.tool_name, c.ah, any_value(c.arguments),
               max(c.cnt), list(DISTINCT c.turn_index ORDER BY c.turn_index), max(c.start_ns)
        FROM counted c JOIN target t USING (session_id) LEFT JOIN routes o USING (session_id)
        WHERE c.cnt >= ? GROUP BY c.session_id, c.tool_name, c.ah""", [*params, n])
    return [Finding("loop.window", "warning", f"{tool} called {cnt} times with the same arguments within {w} calls",
                    agent, route, sid, f"{tool}:{ah}", seen, turns,
                    {"tool": tool, "arguments": _args(args), "count": cnt, "window": w, "threshold": n})
            for sid, agent, route, tool, ah, args, cnt, turns, seen in rows]


def _loop_cycle(store: tracer.Store, scope: Scope, config: DetectConfig) -> list[Finding]:
    k = config.loops.cycle_repeats
    head, params = _with(scope, _ROUTES, _CALLS)
    found: dict[str, Finding] = {}
    for p in (2, 3, 4):
        rows = store.sql(f"""{head},
            sig AS (SELECT *, tool_name || ':' || ah AS s FROM calls),
            marked AS (SELECT *, s = lag(s, {p}) OVER w AND s <> lag(s, 1) OVER w AS m
                       FROM sig WINDOW w AS (PARTITION BY session_id ORDER BY i)),
            isl AS (SELECT *, i - row_number() OVER (PARTITION BY session_id ORDER BY i) AS grp FROM marked WHERE m)
            SELECT i2.session_id, any_value(t.agent), any_value(o.route), count(*) + {p} AS calls,
                   min(i2.i) - {p} AS first, list(DISTINCT i2.turn_index ORDER BY i2.turn_index), max(i2.start_ns),
                   (SELECT list(c.tool_name ORDER BY c.i) FROM calls c WHERE c.session_id = i2.session_id
                    AND c.i >= min(i2.i) - {p} AND c.i < min(i2.i)) AS cycle
            FROM isl i2 JOIN target t USING (session_id) LEFT JOIN routes o USING (session_id)
            GROUP BY i2.session_id, i2.grp HAVING count(*) >= {p * (k - 1)}""", params)
        for sid, agent, route, calls, first, turns, seen, cycle in rows:
            if sid in found:  # a cycle of 4 that is two cycles of 2 is reported once, as the shorter
                continue
            found[sid] = Finding(
                "loop.cycle", "warning", f"a cycle of {p} calls ({' → '.join(cycle)}) repeated {calls // p} times",
                agent, route, sid, "→".join(cycle), seen, turns,
                {"cycle": cycle, "period": p, "repeats": calls // p, "threshold": k, "first_call": first})
    return list(found.values())


def _loop_no_progress(store: tracer.Store, scope: Scope, config: DetectConfig) -> list[Finding]:
    n = config.loops.no_progress
    head, params = _with(scope, _ROUTES, _candidates("result", n), _CALLS)
    rows = store.sql(f"""{head},
        per_tool AS (SELECT *, row_number() OVER (PARTITION BY session_id, tool_name ORDER BY i) AS j FROM calls
                     WHERE result IS NOT NULL),
        runs AS (SELECT *, j - row_number() OVER (PARTITION BY session_id, tool_name, rh ORDER BY j) AS grp
                 FROM per_tool)
        SELECT r.session_id, any_value(t.agent), any_value(o.route), r.tool_name, r.rh, any_value(r.result),
               count(*), count(DISTINCT r.ah), list(DISTINCT r.turn_index ORDER BY r.turn_index), max(r.start_ns)
        FROM runs r JOIN target t USING (session_id) LEFT JOIN routes o USING (session_id)
        GROUP BY r.session_id, r.tool_name, r.rh, r.grp HAVING count(*) >= ? AND count(DISTINCT r.ah) > 1""",
                     [*params, n])
    return [Finding("loop.no_progress", "warning",
                    f"{tool} returned the same result {count} times in a row for {variants} different arguments",
                    agent, route, sid, f"{tool}:{rh}", seen, turns,
                    {"tool": tool, "result": (result or "")[:500], "repeats": count, "threshold": n})
            for sid, agent, route, tool, rh, result, count, variants, turns, seen in rows]


def _guard_stops(store: tracer.Store, scope: Scope, guard: str) -> list[tuple[Any, ...]]:
    """Sessions in which the agent's own ``guard`` fired: (session, agent, route, turns, seen, the event)."""
    head, params = _with(scope, _ROUTES)
    rows = store.sql(f"""{head}
        SELECT u.session_id, any_value(t.agent), any_value(o.route), list(u.turn_index), max(u.end_ns),
               list(u.events)
        FROM turns u JOIN target t USING (session_id) LEFT JOIN routes o USING (session_id)
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


def _loop_turns(store: tracer.Store, scope: Scope, config: DetectConfig) -> list[Finding]:
    n = config.loops.max_turns
    head, params = _with(scope, _ROUTES)
    rows = store.sql(f"""{head}
        SELECT s.session_id, s.agent, o.route, s.turns, s.end_ns FROM sessions s JOIN target USING (session_id)
        LEFT JOIN routes o USING (session_id) WHERE s.turns > ?""", [*params, n])
    return [Finding("loop.turns", "warning", f"{turns} turns, over the budget of {n}", agent, route, sid,
                    route or "", seen, [turns], {"turns": turns, "budget": n})
            for sid, agent, route, turns, seen in rows]


def _loop_max_tokens(store: tracer.Store, scope: Scope, config: DetectConfig) -> list[Finding]:
    n = config.loops.max_tokens_stops
    head, params = _with(scope, _ROUTES)
    rows = store.sql(f"""{head}
        SELECT c.session_id, any_value(t.agent), any_value(o.route), count(*), list(c.turn_index ORDER BY c.start_ns),
               max(c.end_ns)
        FROM llm_calls c JOIN target t USING (session_id) LEFT JOIN routes o USING (session_id)
        WHERE c.stop_reason = 'max_tokens' GROUP BY c.session_id HAVING count(*) >= ?""", [*params, n])
    return [Finding("loop.max_tokens", "warning", f"{count} replies cut off at max_tokens", agent, route, sid,
                    route or "", seen, turns, {"max_tokens_stops": count, "threshold": n})
            for sid, agent, route, count, turns, seen in rows]


# -- cost --------------------------------------------------------------------------------------------


def _cost_budget(store: tracer.Store, scope: Scope, config: DetectConfig) -> list[Finding]:
    budget = config.cost.session_usd
    head, params = _with(scope, _ROUTES)
    rows = store.sql(f"""{head}
        SELECT s.session_id, s.agent, o.route, s.cost_usd, s.turns, s.end_ns
        FROM sessions s JOIN target USING (session_id) LEFT JOIN routes o USING (session_id)
        WHERE s.cost_usd > ?""", [*params, budget])
    return [Finding("cost.budget", "critical", f"the session cost ${cost:.2f}, over its ${budget:.2f} budget",
                    agent, route, sid, route or "", seen, [], {"cost_usd": cost, "budget_usd": budget, "turns": turns})
            for sid, agent, route, cost, turns, seen in rows]


def _cost_guard(store: tracer.Store, scope: Scope, config: DetectConfig) -> list[Finding]:
    return [Finding("cost.guard", "warning",
                    f"stopped by its token budget: {fired.get('reason', 'the token budget guard fired')}",
                    agent, route, sid, route or "", seen, turns, {"guard": fired})
            for sid, agent, route, turns, seen, fired in _guard_stops(store, scope, "token_budget")]


_BASELINE = """
    hist AS (
        SELECT s.session_id, s.agent, r.route, s.end_ns, {value} AS v
        FROM sessions s LEFT JOIN routes_all r USING (session_id)
        WHERE s.ended AND {usable}),
    base AS (
        SELECT *,
            count(v) OVER rw AS n_r, median(v) OVER rw AS med_r, quantile_cont(v, 0.25) OVER rw AS q1_r,
            quantile_cont(v, 0.75) OVER rw AS q3_r
        FROM hist
        WINDOW rw AS (PARTITION BY agent, route ORDER BY end_ns ROWS BETWEEN {w} PRECEDING AND 1 PRECEDING))
"""


def _baseline_rows(store: tracer.Store, scope: Scope, config: DetectConfig, value: str,
                   usable: str) -> list[tuple[Any, ...]]:
    """Each target session's value, and the trailing baseline of its agent and route."""
    where, params = scope.where()
    sql = f"""WITH {_TARGET.format(where=where)},
        {_ROUTES.format(filter="").replace("routes AS", "routes_all AS")},
        {_BASELINE.format(value=value, usable=usable, w=config.cost.baseline_sessions)}
        SELECT b.session_id, b.agent, b.route, b.v, b.end_ns, b.n_r, b.med_r, b.q1_r, b.q3_r
        FROM base b JOIN target USING (session_id)"""
    return store.sql(sql, params)


def _pick_baseline(row: tuple[Any, ...], history: int) -> tuple[str, int, float, float, float] | None:
    """The baseline of the session's agent and route, or ``None`` before it has the history.

    There is no fallback to the agent's other routes: routes differ in cost by design (a long
    conversation costs ten quick lookups), and a mixed baseline would flag the expensive ones.
    """
    _, agent, route, _, _, n_r, med_r, q1_r, q3_r = row
    if n_r >= history:
        return f"agent {agent}" + (f", route {route}" if route else ""), n_r, med_r, q1_r, q3_r
    return None


def _cost_anomaly(store: tracer.Store, scope: Scope, config: DetectConfig) -> list[Finding]:
    c = config.cost
    out = []
    for row in _baseline_rows(store, scope, config, "s.cost_usd", "s.unpriced_calls = 0"):
        sid, agent, route, cost, seen = row[:5]
        base = _pick_baseline(row, c.history)
        if base is None or cost is None:
            continue
        label, n, med, q1, q3 = base
        fence = q3 + c.iqr_k * (q3 - q1)
        if cost > fence and cost >= c.min_ratio * med and cost > 0:
            out.append(Finding(
                "cost.anomaly", "warning",
                f"${cost:.4f}, {cost / med:.1f}× the median of {label} (${med:.4f} over the last {n} sessions)",
                agent, route, sid, route or "", seen, [],
                {"cost_usd": cost, "baseline": {"of": label, "sessions": n, "median_usd": med, "q1_usd": q1,
                                                "q3_usd": q3, "fence_usd": fence,
                                                "rule": f"above Q3 + {c.iqr_k} × IQR and ≥ {c.min_ratio}× the median"},
                 "ratio_to_median": cost / med if med else None}))
    return out


def _cost_token_spike(store: tracer.Store, scope: Scope, config: DetectConfig) -> list[Finding]:
    c = config.cost
    head, params = _with(scope, _ROUTES)
    rows = store.sql(f"""{head},
        ins AS (SELECT c.session_id, c.turn_index, c.end_ns,
                       coalesce(c.input_tokens, 0) + coalesce(c.cache_read_tokens, 0)
                       + coalesce(c.cache_write_tokens, 0)
                       AS tin
                FROM llm_calls c JOIN target USING (session_id) WHERE c.status = 'ok'),
        jumps AS (SELECT *, lag(tin) OVER (PARTITION BY session_id ORDER BY end_ns) AS prev FROM ins)
        SELECT j.session_id, any_value(t.agent), any_value(o.route), arg_max(j.turn_index, j.tin - j.prev),
               max(j.tin - j.prev), arg_max(j.prev, j.tin - j.prev), arg_max(j.tin, j.tin - j.prev), max(j.end_ns)
        FROM jumps j JOIN target t USING (session_id) LEFT JOIN routes o USING (session_id)
        WHERE j.prev > 0 AND j.tin >= ? * j.prev AND j.tin - j.prev >= ? GROUP BY j.session_id""",
                     [*params, c.spike_ratio, c.spike_tokens])
    return [Finding("cost.token_spike", "warning",
                    f"input tokens jumped from {prev:,} to {now:,} at turn {turn}", agent, route, sid, route or "",
                    seen, [turn], {"turn": turn, "previous_input_tokens": prev, "input_tokens": now,
                                   "ratio_threshold": c.spike_ratio, "tokens_threshold": c.spike_tokens})
            for sid, agent, route, turn, _, prev, now, seen in rows]


def _cost_context(store: tracer.Store, scope: Scope, config: DetectConfig) -> list[Finding]:
    c = config.cost
    head, params = _with(scope, _ROUTES)
    rows = store.sql(f"""{head}
        SELECT c.session_id, any_value(t.agent), any_value(o.route), max(c.ctx_utilisation),
               arg_max(c.turn_index, c.ctx_utilisation), arg_max(c.model, c.ctx_utilisation), max(c.end_ns)
        FROM llm_calls c JOIN target t USING (session_id) LEFT JOIN routes o USING (session_id)
        WHERE c.ctx_utilisation >= ? GROUP BY c.session_id""", [*params, c.context_warning])
    out = []
    for sid, agent, route, used, turn, model, seen in rows:
        severity: Severity = "critical" if used >= c.context_critical else "warning"
        out.append(Finding("cost.context", severity, f"context window {used:.0%} full at turn {turn} ({model})",
                           agent, route, sid, f"{route or ''}:{severity}", seen, [turn],
                           {"utilisation": used, "model": model, "warning_at": c.context_warning,
                            "critical_at": c.context_critical}))
    return out


def _cost_cache_drop(store: tracer.Store, scope: Scope, config: DetectConfig) -> list[Finding]:
    c = config.cost
    total = "(s.input_tokens + s.cache_read_tokens + s.cache_write_tokens)"
    out = []
    for row in _baseline_rows(store, scope, config, f"s.cache_read_tokens / {total}",
                              f"{total} >= {int(c.cache_min_input_tokens)}"):
        sid, agent, route, ratio, seen = row[:5]
        base = _pick_baseline(row, c.history)
        if base is None or ratio is None:
            continue
        label, n, med, _, _ = base
        if med >= c.cache_baseline_min and ratio <= med - c.cache_drop:
            out.append(Finding(
                "cost.cache_drop", "warning",
                f"cache hits {ratio:.0%} of input, against {med:.0%} for {label}: the prompt prefix changed?",
                agent, route, sid, route or "", seen, [],
                {"cache_hit_ratio": ratio, "baseline": {"of": label, "sessions": n, "median_ratio": med},
                 "drop_threshold": c.cache_drop}))
    return out


# -- reliability -------------------------------------------------------------------------------------


def _tool_errors(store: tracer.Store, scope: Scope, config: DetectConfig) -> list[Finding]:
    r = config.reliability
    head, params = _with(scope, _ROUTES)
    ignore = ", ".join("?" * len(r.tool_error_ignore)) or "NULL"
    rows = store.sql(f"""{head}
        SELECT t.session_id, any_value(s.agent), any_value(o.route),
               count(*) FILTER (WHERE t.status <> 'ok' AND coalesce(t.error_type, '') NOT IN ({ignore})) AS failed,
               count(*), max(t.end_ns),
               list(DISTINCT t.tool_name) FILTER (WHERE t.status <> 'ok'
                                                  AND coalesce(t.error_type, '') NOT IN ({ignore})) AS tools
        FROM tool_calls t JOIN target s USING (session_id) LEFT JOIN routes o USING (session_id)
        GROUP BY t.session_id HAVING count(*) >= ? AND failed >= ? * count(*) AND failed > 0""",
                     [*params, *r.tool_error_ignore, *r.tool_error_ignore, r.tool_error_min_calls, r.tool_error_rate])
    return [Finding("reliability.tool_errors", "warning", f"{errors} of {calls} tool calls failed ({', '.join(tools)})",
                    agent, route, sid, ",".join(sorted(tools)), seen, [],
                    {"failed": errors, "calls": calls, "tools": tools, "rate_threshold": r.tool_error_rate})
            for sid, agent, route, errors, calls, seen, tools in rows]


def _breaker(store: tracer.Store, scope: Scope, config: DetectConfig) -> list[Finding]:
    head, params = _with(scope, _ROUTES)
    rows = store.sql(f"""{head}
        SELECT u.session_id, any_value(t.agent), any_value(o.route), list(u.turn_index ORDER BY u.turn_index),
               max(u.end_ns), list(u.events)
        FROM turns u JOIN target t USING (session_id) LEFT JOIN routes o USING (session_id)
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
    head, params = _with(scope, _ROUTES)
    rows = store.sql(f"""{head}
        SELECT c.session_id, any_value(t.agent), any_value(o.route), count(*), list(DISTINCT c.error_type),
               list(DISTINCT c.turn_index ORDER BY c.turn_index), max(c.end_ns)
        FROM llm_calls c JOIN target t USING (session_id) LEFT JOIN routes o USING (session_id)
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
                  FROM llm_calls c JOIN sessions s USING (session_id) WHERE c.status = 'ok' AND s.ended)
        SELECT agent, model, count(*) FILTER (WHERE recent), quantile_cont(ms, 0.95) FILTER (WHERE recent),
               count(*) FILTER (WHERE NOT recent AND end_ns < (SELECT min(end_ns) FROM target)),
               quantile_cont(ms, 0.95) FILTER (WHERE NOT recent AND end_ns < (SELECT min(end_ns) FROM target)),
               min(end_ns) FILTER (WHERE recent), max(end_ns) FILTER (WHERE recent)
        FROM calls GROUP BY agent, model""", params)
    out = []
    for agent, model, n_now, p95_now, n_base, p95_base, first, last in rows:
        if n_now >= r.latency_min_calls and n_base >= r.latency_min_calls and p95_now >= r.latency_drift * p95_base:
            out.append(Finding(
                "reliability.latency_drift", "warning",
                f"{model} p95 latency {p95_now:.0f} ms, {p95_now / p95_base:.1f}× the baseline's {p95_base:.0f} ms",
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
    head, params = _with(scope, _ROUTES)
    combined = "|".join(f"(?:{p.removeprefix('(?i)')})" for p in patterns)
    rows = store.sql(f"""{head}
        SELECT t.session_id, any_value(s.agent), any_value(o.route), t.tool_name, md5(t.result), any_value(t.result),
               list(DISTINCT t.turn_index ORDER BY t.turn_index), max(t.end_ns)
        FROM tool_calls t JOIN target s USING (session_id) LEFT JOIN routes o USING (session_id)
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
    head, params = _with(scope, _ROUTES)
    for tool, rule in config.safety.approval_tools.items():
        rows = store.sql(f"""{head}
            SELECT t.session_id, any_value(s.agent), any_value(o.route), t.turn_index, t.arguments, t.end_ns,
                   TRY_CAST(json_extract_string(t.arguments, ?) AS DOUBLE) AS amount
            FROM tool_calls t JOIN target s USING (session_id) LEFT JOIN routes o USING (session_id)
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
    "loop.repeat": _loop_repeat, "loop.window": _loop_window, "loop.cycle": _loop_cycle,
    "loop.no_progress": _loop_no_progress, "loop.guard": _loop_guard, "loop.turns": _loop_turns,
    "loop.max_tokens": _loop_max_tokens,
    "cost.budget": _cost_budget, "cost.guard": _cost_guard, "cost.anomaly": _cost_anomaly,
    "cost.token_spike": _cost_token_spike,
    "cost.context": _cost_context, "cost.cache_drop": _cost_cache_drop,
    "reliability.tool_errors": _tool_errors, "reliability.breaker": _breaker,
    "reliability.retry_storm": _retry_storm, "reliability.latency_drift": _latency_drift,
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


def _dedupe(findings: list[Finding]) -> list[Finding]:
    """A loop that is N in a row is also N within a window: report the stronger finding only."""
    repeated = {(f.session_id, f.subject) for f in findings if f.detector == "loop.repeat"}
    return [f for f in findings if not (f.detector == "loop.window" and (f.session_id, f.subject) in repeated)]


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
    """Seconds per detector."""


def detect(store: tracer.Store, *, scope: Scope | None = None, config: DetectConfig | None = None,
           detectors: Iterable[str] | None = None) -> DetectResult:
    """Runs the detectors over the sessions in ``scope`` and folds what they find into the store's alerts.

    Args:
        store: A store open for writing.
        scope: Which ended sessions to look at (default: all).
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
    sessions = store.sql(f"SELECT count(*) FROM sessions s WHERE {where}", params)[0][0]
    findings: list[Finding] = []
    timings: dict[str, float] = {}
    if sessions:
        for name in names:
            t0 = time.perf_counter()
            findings += DETECTORS[name](store, scope, config)
            timings[name] = time.perf_counter() - t0
    findings = _dedupe(findings)
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
    """

    def __init__(self, db: str | os.PathLike[str] | None = None, *, config: DetectConfig | None = None,
                 publish: Callable[[list[Alert]], None] | None = None, interval_s: float = 1.0,
                 max_pending: int = 10_000) -> None:
        import queue
        import threading

        self.db_path = tracer.default_db_path(db)
        self.config = config or DetectConfig()
        self._publish = publish
        self._interval_s = interval_s
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
                    try:
                        ids.append(self._pending.get(timeout=max(deadline - time.monotonic(), 0.01)))
                    except queue.Empty:
                        pass
                while True:
                    try:
                        ids.append(self._pending.get_nowait())
                    except queue.Empty:
                        break
                try:
                    store = store or tracer.Store(self.db_path)
                    result = detect(store, scope=Scope(session_ids=tuple(dict.fromkeys(ids))), config=self.config)
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
        """Looks at what is pending, then stops the thread."""
        self.flush(timeout_s)
        self._closed.set()
        self._thread.join(timeout_s)


def serve_hook(db: str) -> OnlineDetector:
    """``flightrec serve``'s online detection: the default thresholds, new alerts to the console."""
    from ._sinks import ConsoleSink, Dispatcher

    dispatcher = Dispatcher([ConsoleSink()])
    return OnlineDetector(db, publish=dispatcher.publish)
