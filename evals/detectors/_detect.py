"""Detectors: loops, cost blow-ups, unreliable tools and unsafe content, found in the store with
SQL (the work stays in DuckDB), each finding an alert with its evidence.

Every detector is a small function over the same inputs: the store, the sessions to look at
(``Scope``) and the thresholds (``DetectConfig``, loaded from YAML; ``flightrec detect
--print-config`` shows the defaults). Each returns ``Finding``s; ``detect`` turns them into alerts
and folds them into the store, where an alert is deduplicated by its fingerprint (detector and
subject), so that running it again over the same history changes nothing.

The detectors live by family: ``_loops`` (loop.*), ``_cost`` (budgets, cost.guard, cost.drift,
context.window), ``_baselines`` (the detectors that judge a session against its route's history,
in one pass), ``_reliability`` (reliability.*), ``_safety`` (safety.*), ``_tools`` (tools.*: made-up
calls, too many tools, a route's tools narrowing), ``_approvals`` (approval.*, family approvals:
sessions waiting for a person) and ``_scores`` (score.drop, family quality: the online scores of
sessions). ``DETECTORS`` below names them all,
in the order they run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import time
from collections.abc import Iterable
from pathlib import Path

import yaml
from pydantic import BaseModel, ValidationError

import tracer

from ._alerts import Alert
from ._approvals import expired, waiting
from ._baselines import baselines
from ._config import DetectConfig
from ._cost import budgets, context_window, cost_drift, cost_guard
from ._loops import loop_calls, loop_guard, loop_max_tokens
from ._reliability import breaker, latency_drift, retry_storm, tool_errors
from ._safety import duplicate_effect, injection, unapproved
from ._scope import Detector, Finding, Scope
from ._scores import score_drop
from ._tools import diversity, hallucinated, overload

DETECTORS: dict[str, Detector] = {
    "loop.calls": loop_calls, "loop.guard": loop_guard, "loop.max_tokens": loop_max_tokens,
    "cost.anomaly": baselines, "cost.tokens": baselines, "cost.token_jump": baselines, "cost.price": baselines,
    "cost.drift": cost_drift, "cost.cache_drop": baselines, "cost.guard": cost_guard,
    "cost.budget": budgets, "steps.anomaly": baselines, "steps.budget": budgets, "context.window": context_window,
    "reliability.tool_errors": tool_errors, "reliability.breaker": breaker,
    "reliability.retry_storm": retry_storm, "reliability.latency": baselines,
    "reliability.latency_drift": latency_drift,
    "safety.injection": injection, "safety.unapproved": unapproved, "safety.duplicate_effect": duplicate_effect,
    "tools.hallucinated": hallucinated, "tools.overload": overload, "tools.diversity": diversity,
    "approval.waiting": waiting, "approval.expired": expired,
    "score.drop": score_drop,
}
"""Every detector by name, in the order they run."""

_FAMILY_OF_PREFIX = {"loop": "loops", "score": "quality", "approval": "approvals"}
FAMILIES_OF = {name: _FAMILY_OF_PREFIX.get(name.split(".")[0], name.split(".")[0]) for name in DETECTORS}
"""Each detector's family."""


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
    patterns = {"safety.injection_patterns": config.safety.injection_patterns,
                "safety.irreversible_patterns": config.safety.irreversible_patterns,
                "safety.replay_markers": config.safety.replay_markers,
                "tools.unknown_tool_patterns": config.tools.unknown_tool_patterns,
                "tools.bad_argument_patterns": config.tools.bad_argument_patterns}
    for setting, values in patterns.items():
        for pattern in values:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise tracer.ConfigError(f"{p}: {setting}: {pattern!r} is not a regular expression ({exc}).") from None
    return config


# -- running -----------------------------------------------------------------------------------------


def _alert(f: Finding) -> Alert:
    key = "\x1f".join([f.detector, f.agent or "", f.route or "", f.subject])
    fingerprint = hashlib.sha256(key.encode()).hexdigest()
    return Alert(
        alert_id=fingerprint[:10], fingerprint=fingerprint, detector=f.detector, family=FAMILIES_OF[f.detector],
        severity=f.severity, title=f.title, agent=f.agent, route=f.route, session_id=f.session_id, turns=f.turns,
        session_ids=f.session_ids or ([f.session_id] if f.session_id else []), evidence=f.evidence, status="open",
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
    scope = dataclasses.replace(scope, rows_from_ns=max(scope.rows_from_ns, first_ns or 0),
                                now_ns=time.time_ns() if scope.now_ns is None else scope.now_ns)
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
