"""Scoring after deploy: a policy samples production sessions as they end, and a worker scores them
with dataset-free scorers, on its own thread, beside the writer (an embedded recorder's, or
``flightrec serve``'s through ``serve_hook``).

The policy is a YAML file (``flightrec.scoring.yaml`` in the working directory, ``$FLIGHTREC_SCORING``,
or ``flightrec serve --scoring FILE``)::

    sample: 0.1                 # the share of production sessions scored as they end
    alerted: true               # and every session that raised an alert
    routes:                     # per agent and route; the most specific rule wins
      - {agent: support, route: refund, sample: 0.5}
    scorers:                    # any scorer spec of a dataset, plus usual_steps (below)
      - {type: recovers_after_error}
      - {type: guards, none: true}
      - {type: usual_steps, slack: 2}
      - {type: judge, rubric: ['Never promises a refund before "issue_refund" succeeded']}
    judge_budget_usd_per_hour: 1.0
    cpu_share: 0.25             # the most of one core the worker takes beside the writer
    review:
      sample: 0.02              # the share of scored sessions put in the review queue
      failed: true              # and every session a scorer failed
      categories: [wrong tool, wrong answer, policy breach, loop, tone, other]

Sampling is decided by a hash of the session id, so a rate holds over many sessions, the same
session is always in or out, and two collectors of one lake agree. ``usual_steps`` is the one
scorer that needs the store: it compares a session's tool calls with the median of its agent and
route's recent production sessions, so it needs no expected answer and adapts to agents that poll
or page. Scores are stored per session and scorer with the scorer's version (a hash of its spec)
and reason (``session_scores``). A judge that calls a real model is kept within its hourly budget:
past it, its score is stored as skipped, with the reason, and the next hour it judges again.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from statistics import median
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

import tracer

from .detectors import SessionWorker

POLICY_FILE = "flightrec.scoring.yaml"
"""The scoring policy looked for in the working directory."""
POLICY_ENV = "FLIGHTREC_SCORING"
SAMPLE_ENV = "FLIGHTREC_SCORE_SAMPLE"
"""A sampling rate that overrides the policy's ``sample`` (``flightrec serve --score-sample``)."""
DEFAULT_CATEGORIES = ("wrong tool", "wrong answer", "policy breach", "loop", "gave up", "tone", "other")
DEFAULT_SCORERS: tuple[dict[str, Any], ...] = (
    {"type": "recovers_after_error"},
    {"type": "guards", "none": True},
    {"type": "usual_steps"},
)
"""What a policy scores with when it names no scorers: none of them needs an expected answer or a model."""
USUAL_HISTORY = 200
"""Recent production sessions of a route whose tool calls make its usual (``usual_steps``)."""

SERVE_INTERVAL_S = 5.0
"""How long ``flightrec serve`` gathers ended sessions before a scoring run."""


class RouteRule(BaseModel):
    """A sampling rate for the sessions of one agent, one route, or both."""

    model_config = ConfigDict(extra="forbid")

    agent: str | None = None
    route: str | None = None
    sample: float = Field(ge=0.0, le=1.0)


class ReviewPolicy(BaseModel):
    """Which scored sessions go to the review queue, and the failure categories a reviewer picks from."""

    model_config = ConfigDict(extra="forbid")

    sample: float = Field(default=0.0, ge=0.0, le=1.0)
    """The share of scored sessions queued at random."""
    failed: bool = True
    """Queue every session that a scorer failed."""
    alerted: bool = True
    """Queue every session that raised an alert."""
    categories: list[str] = Field(default_factory=lambda: list(DEFAULT_CATEGORIES), min_length=1)


class ScoringPolicy(BaseModel):
    """What online scoring samples, what it scores with, and what it may spend."""

    model_config = ConfigDict(extra="forbid")

    sample: float = Field(default=0.1, ge=0.0, le=1.0)
    """The share of production sessions scored as they end."""
    alerted: bool = True
    """Also score every production session that raised an alert."""
    routes: list[RouteRule] = []
    scorers: list[dict[str, Any]] = Field(default_factory=lambda: [dict(s) for s in DEFAULT_SCORERS], min_length=1)
    judge_budget_usd_per_hour: float = Field(default=1.0, ge=0.0)
    queue: int = Field(default=10_000, ge=1)
    """Ended sessions that may wait for the worker; more are dropped and counted (``flightrec eval score``
    scores them later)."""
    cpu_share: float = Field(default=0.25, gt=0.0, le=1.0)
    """The most of one core the worker takes (it rests in proportion after each run): scoring shares the
    writer's process, so past this share sessions wait in the queue, and beyond it are dropped and counted,
    rather than slowing ingest."""
    review: ReviewPolicy = Field(default_factory=ReviewPolicy)

    def rate(self, agent: str | None, route: str | None) -> float:
        """The sampling rate of a session: the rule naming both its agent and route, else one naming
        either, else ``sample``."""
        best: tuple[int, float] = (0, self.sample)
        for r in self.routes:
            if (r.agent is not None and r.agent != agent) or (r.route is not None and r.route != route):
                continue
            rank = (r.agent is not None) + (r.route is not None)
            if rank > best[0]:
                best = (rank, r.sample)
        return best[1]


def sampled(session_id: str, rate: float, salt: str = "score") -> bool:
    """Whether a session is in a sample of ``rate``: decided by a hash of its id, so it is the same
    everywhere and every time, and a rate holds over many sessions."""
    if rate >= 1.0:
        return True
    digest = hashlib.sha256(f"{salt}:{session_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") < rate * 2**64


def load_scoring_policy(path: str | os.PathLike[str] | None = None) -> ScoringPolicy:
    """The scoring policy: ``path``, else ``$FLIGHTREC_SCORING``, else ``flightrec.scoring.yaml`` here,
    else the defaults; ``$FLIGHTREC_SCORE_SAMPLE`` overrides its ``sample``. Every scorer is built
    once here, so that a typo fails now, not on the worker.

    Raises:
        tracer.ConfigError: the file is missing or not YAML, or a setting or scorer is wrong.
    """
    named = path or os.environ.get(POLICY_ENV) or None
    file = Path(named) if named else (Path(POLICY_FILE) if Path(POLICY_FILE).is_file() else None)
    data: Any = {}
    if file is not None:
        try:
            data = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
        except (OSError, UnicodeDecodeError) as exc:
            raise tracer.ConfigError(f"cannot read the scoring policy {file}: {exc}. Give the path of a YAML "
                                     f"file (see `{POLICY_FILE}` in the README).") from None
        except yaml.YAMLError as exc:
            raise tracer.ConfigError(f"the scoring policy {file} is not YAML: {exc}".rstrip() + ".") from None
        if not isinstance(data, dict):
            raise tracer.ConfigError(f"the scoring policy {file} must be a mapping (sample, routes, scorers, …), "
                                     f"not a {type(data).__name__}.")
    rate = os.environ.get(SAMPLE_ENV)
    if rate:
        data = {**data, "sample": rate}
    where = file or "the default scoring policy"
    try:
        policy = ScoringPolicy.model_validate(data)
    except ValidationError as exc:
        raise tracer.ConfigError(f"{where}: {tracer.validation_problems(exc)}. Its settings are: "
                                 f"{', '.join(ScoringPolicy.model_fields)}.") from None
    for spec in policy.scorers:
        _build(spec, where)
    return policy


class _UsualSteps(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: str
    slack: float = Field(default=2.0, ge=1.0)
    """Passes while the session's tool calls are at most the route's median times this."""
    min_history: int = Field(default=20, ge=1)
    """Sessions the route needs before it has a usual; until then the session is not judged (passes)."""
    weight: float = Field(default=1.0, gt=0.0)
    name: str | None = None


@dataclass(frozen=True)
class _PolicyScorer:
    label: str
    version: str
    """The first 12 hex digits of the SHA-256 of its spec."""
    weight: float
    judge: bool
    """It calls a model, within the policy's hourly budget."""
    score: Callable[[tracer.Store, Any, Mapping[str, Any]], Any]
    """``(store, trajectory, session) -> Score``."""


def _build(spec: Mapping[str, Any], where: object, judge_client: Any = None) -> _PolicyScorer:
    from ._errors import ScorerError
    from ._scorers import SCORER_TYPES, build_scorer

    version = hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:12]
    if isinstance(spec, Mapping) and spec.get("type") == "usual_steps":
        try:
            p = _UsualSteps.model_validate(spec)
        except ValidationError as exc:
            raise tracer.ConfigError(f"{where}: scorer usual_steps: {tracer.validation_problems(exc)}; fields are: "
                                     "slack, min_history, weight, name.") from None
        return _PolicyScorer(p.name or "usual_steps", version, p.weight, False,
                             lambda store, t, s: _usual_steps(p, store, t, s))
    try:
        scorer = build_scorer(spec, judge_client=judge_client)
    except ScorerError as exc:
        raise tracer.ConfigError(f"{where}: {exc} (or usual_steps, which only online scoring has)") from None
    params = SCORER_TYPES[spec["type"]].params.model_validate({k: v for k, v in spec.items() if k != "type"})
    return _PolicyScorer(params.label(), version, params.weight, spec["type"] == "judge",
                         lambda store, t, s: scorer(t))


def _usual_steps(p: _UsualSteps, store: tracer.Store, t: Any, session: Mapping[str, Any]) -> Any:
    from ._scorers import Score

    label = p.name or "usual_steps"
    history = [r[0] for r in store.sql(
        "SELECT tool_calls FROM sessions WHERE origin = 'production' AND ended AND agent IS NOT DISTINCT FROM ? "
        "AND route IS NOT DISTINCT FROM ? AND session_id <> ? ORDER BY start_ns DESC LIMIT ?",
        [session["agent"], session["route"], t.session_id, USUAL_HISTORY])]
    steps = len(t.tool_calls)
    where = f"route {session['route'] or '(none)'} of {session['agent'] or 'an unnamed agent'}"
    if len(history) < p.min_history:
        return Score(scorer=label, value=1.0, passed=True, weight=p.weight,
                     reason=f"{steps} tool calls; the {where} has {len(history)} sessions, fewer than the "
                            f"{p.min_history} a usual needs, so this is not judged")
    usual = median(history)
    allowed = max(usual, 1) * p.slack
    value = 1.0 if steps <= usual else min(1.0, max(usual, 1) / steps)
    verdict = "within" if steps <= allowed else "over"
    return Score(scorer=label, value=value, passed=steps <= allowed, weight=p.weight,
                 reason=f"{steps} tool calls against the {where}'s median of {usual:g} over its last "
                        f"{len(history)} sessions: {verdict} {p.slack:g}× that")


class Scoring:
    """A policy's scorers and the judge's budget: what ``OnlineScorer`` runs on its thread, and
    ``flightrec eval score`` over history.

    Args:
        policy: What to sample and score with (default ``load_scoring_policy()``).
        clock: Seconds now, for the judge's hourly budget (tests pass their own).
        judge_client: Makes the client judge scorers talk through (``evals.build_scorer``'s; default the real
            API when ``$FLIGHTREC_JUDGE_MODEL`` and a key are set, else the simulated judge).
    """

    def __init__(self, policy: ScoringPolicy | None = None, *, clock: Callable[[], float] = time.time,
                 judge_client: Callable[[], Any] | None = None) -> None:
        self.policy = policy or load_scoring_policy()
        self.scorers = [_build(s, "the scoring policy", judge_client) for s in self.policy.scorers]
        self._clock = clock
        self._spent: deque[tuple[float, float]] = deque()
        """(when, USD) of the judge's calls in the last hour."""
        self._alerts_seen_ns = 0
        self.scored = self.skipped_for_budget = 0

    def run(self, store: tracer.Store, session_ids: Iterable[str]) -> int:
        """Scores the production sessions among ``session_ids`` that the policy samples, and every one that
        raised an alert since the last run (once); returns how many it scored. Runs in the caller's thread."""
        ids = list(dict.fromkeys(session_ids))
        alerted: set[str] = set()
        if self.policy.alerted or self.policy.review.alerted:
            rows = store.sql("SELECT max(last_seen_ns), list(DISTINCT sid) FROM alerts, unnest(session_ids) AS u(sid) "
                             "WHERE last_seen_ns > ?", [self._alerts_seen_ns])
            if rows and rows[0][0] is not None:
                self._alerts_seen_ns = rows[0][0]
                alerted = set(rows[0][1])
        candidates = list(dict.fromkeys([*ids, *sorted(alerted)]))
        if not candidates:
            return 0
        # A sub-agent's session is judged through its parent's (its words are not the customer's answer).
        sessions = {r[0]: {"agent": r[1], "route": r[2]} for r in store.sql(
            "SELECT session_id, agent, route FROM sessions WHERE origin = 'production' AND ended "
            "AND parent_session_id IS NULL AND session_id IN (SELECT unnest(?))", [candidates])}
        if alerted and self.policy.review.alerted:
            store.queue_reviews([s for s in sorted(alerted) if s in sessions], "alert")
        scored = {r[0] for r in store.sql("SELECT DISTINCT session_id FROM session_scores WHERE session_id IN "
                                          "(SELECT unnest(?))", [sorted(alerted)])} if alerted else set()
        picked = {s for s in ids if s in sessions and sampled(s, self.policy.rate(sessions[s]["agent"],
                                                                                   sessions[s]["route"]))}
        todo = [s for s in candidates if s in picked or (
            s in sessions and s in alerted and self.policy.alerted and s not in scored)]
        rows: list[tracer.SessionScore] = []
        for sid in todo:
            try:
                rows += self._score(store, sid, sessions[sid], "sample" if sid in picked else "alert")
            except tracer.UnknownSessionError:  # deleted meanwhile (retention, a request)
                continue
            self.scored += 1
        store.record_scores(rows)  # one transaction a run: a transaction costs more than a session's scores
        review = self.policy.review
        failed = list(dict.fromkeys(r.session_id for r in rows if r.passed is False)) if review.failed else []
        store.queue_reviews(failed, "score")
        if review.sample:
            store.queue_reviews([s for s in todo if s not in failed and sampled(s, review.sample, salt="review")],
                                "sample")
        return len(todo)

    def _score(self, store: tracer.Store, session_id: str, session: Mapping[str, Any],
               chosen_by: str) -> list[tracer.SessionScore]:
        """A session's scores by every scorer of the policy (a skipped or failing one says why)."""
        from ._trajectory import trajectory_of

        t = trajectory_of(store, session_id)
        now_ns = time.time_ns()
        rows: list[tracer.SessionScore] = []
        for p in self.scorers:
            skipped = None
            if p.judge and (spent := self._spent_last_hour()) >= self.policy.judge_budget_usd_per_hour:
                self.skipped_for_budget += 1
                skipped = (f"skipped: the judge's budget of {tracer.format_usd(self.policy.judge_budget_usd_per_hour)} "
                           f"an hour is spent ({tracer.format_usd(spent)} in the last hour); raise "
                           "judge_budget_usd_per_hour in the scoring policy to judge more")
            else:
                try:
                    score = p.score(store, t, session)
                except Exception as exc:  # one scorer that fails must not lose the others' scores
                    skipped = f"the scorer failed: {type(exc).__name__}: {exc}"
            if skipped is not None:
                rows.append(tracer.SessionScore(session_id=session_id, scorer=p.label, version=p.version, value=None,
                                                passed=None, weight=p.weight, reason=skipped, scored_ns=now_ns,
                                                chosen_by=chosen_by))
                continue
            if score.cost_usd:
                self._spent.append((self._clock(), score.cost_usd))
            rows.append(tracer.SessionScore(session_id=session_id, scorer=p.label, version=p.version,
                                            value=score.value, passed=score.passed, weight=score.weight,
                                            reason=score.reason, scored_ns=now_ns, cost_usd=score.cost_usd,
                                            chosen_by=chosen_by))
        return rows

    def _spent_last_hour(self) -> float:
        hour_ago = self._clock() - 3600
        while self._spent and self._spent[0][0] < hour_ago:
            self._spent.popleft()
        return sum(c for _, c in self._spent)


class OnlineScorer(SessionWorker):
    """Scores production sessions as they end, as a policy says, on its own thread.

    Pass it to the recorder (``tracer.Recorder(db, on_sessions_ended=OnlineScorer(db))``), or let
    ``flightrec serve`` run it (``serve_hook``). It never blocks the writer (``SessionWorker``): ids
    wait in a bounded queue (``policy.queue``); past it, they are dropped and counted, and
    ``flightrec eval score`` scores them later. It takes at most ``policy.cpu_share`` of a core.

    Args:
        db: The store the sessions are written to (this process writes it).
        policy: What to sample and score with (default ``load_scoring_policy()``).
        interval_s: How long ended sessions gather before a run.
        clock: Seconds now, for the judge's hourly budget.
    """

    what = "online scoring"

    def __init__(self, db: str | os.PathLike[str] | None = None, *, policy: ScoringPolicy | None = None,
                 interval_s: float = 1.0, clock: Callable[[], float] = time.time) -> None:
        self.scoring = Scoring(policy, clock=clock)
        super().__init__(db, interval_s=interval_s, max_pending=self.scoring.policy.queue,
                         cpu_share=self.scoring.policy.cpu_share)

    def run(self, store: tracer.Store, session_ids: list[str]) -> None:
        self.scoring.run(store, session_ids)


def serve_hook(db: str) -> OnlineScorer | None:
    """``flightrec serve``'s online scoring: on when a policy is given (``--scoring``, ``$FLIGHTREC_SCORING``,
    ``flightrec.scoring.yaml`` here, or ``--score-sample``), off otherwise (``None``)."""
    if not (os.environ.get(POLICY_ENV) or os.environ.get(SAMPLE_ENV) or Path(POLICY_FILE).is_file()):
        return None
    return OnlineScorer(db, interval_s=SERVE_INTERVAL_S)
