"""The demo: every scenario over several seeds, some sessions misbehaving, into one trace store.

The plan is fixed by the session count and a base seed, so two demos with the same arguments
record the same trajectories. Besides the scenarios' own defaults, the plan mixes in:

- misbehaviours (loop, wrong tool, hallucinated argument, runaway context, ignored rule);
- model API faults (429, 500, 529, timeouts, latency), which the client's retries absorb;
- streamed replies;
- crashes right after a refund is paid, each followed by a resume (no refund is paid twice);
- a too-tight time limit, so the wall-clock guard fires;
- a human who approves, rejects, or leaves waiting the refunds held for approval.

Once, in the first round of scenarios, the demo plants the failures that take a production's
history to show, each through the agent's own code, for the detectors to find in the spans:

- an e-mail receipt sent by an agent whose idempotency keys are made per turn, which crashes
  right after the send and is resumed: the resume sends it again (``safety.duplicate_effect``);
- an approval requested six hours before the demo's clock by a session nobody has decided since
  (``approval.waiting``): the agent's wall clock for that session reads six hours earlier;
- an approval that nobody decides, swept a day later (the sweep's wall clock reads 25 hours on):
  it expires and the agent escalates (``approval.expired``).

And the last sessions after the first round run a build of the agent wired to every integration
(24 tools instead of 8), among which the simulated model mixes up arguments (``tools.overload``).
A demo of the full 200 sessions also has a busy route: after the first round every fourth session
is a lost parcel, and its last ten run a build that dropped ``get_order``, so the agent hands each
case over at once and the route's tool mix collapses against its history (``tools.diversity``).

Sessions run on a few threads that share one recorder (the tracer keeps each thread's session
apart), because much of a session's time is spent waiting on backoff and latency.
"""

from __future__ import annotations

import collections
import dataclasses
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel

import tracer

from ._agent import Agent, AgentConfig, SessionOutcome
from ._errors import SimulatedCrash
from ._policy import MISBEHAVIOURS
from ._scenarios import SCENARIOS, Scenario
from ._tools import ToolOutcome
from ._world import World

DEFAULT_SESSIONS = 200
DEFAULT_WORKERS = 4
_FAULT_MIX = (("429",), ("500@1",), ("529@0x2",), ("timeout@1",), ("429%25",), ("latency:20@0",), ("529%10",))
_CRASHABLE = frozenset({"refund_under_threshold", "duplicate_charge", "lost_package", "ambiguous_request"})
_DUPLICATED = "email_receipt"
"""The scenario whose first session sends its e-mail twice (idempotency keys per turn, a crash, a resume)."""
_HUMAN_AWAY = {"email_unknown_recipient": "away", "approval_timeout": "expire"}
"""Scenarios whose first session's approval waits for hours, or expires."""
_INTEGRATED = 12
"""The last sessions of the plan (after its first round) that run with ``integration_tools``."""
_BUSY = "lost_package"
"""The busy route of a full demo, whose last ``_COLLAPSED`` sessions run without ``get_order``."""
_BUSY_EVERY = 4
_COLLAPSED = 10
_AWAY_S = 6 * 3600.0
"""How long before the demo's clock the ``away`` approval was requested: past the 4 h alert."""
_SWEEP_AFTER_S = 25 * 3600.0
"""When the ``expire`` sweep runs after the request: past the 24 h approval timeout."""


@dataclass(frozen=True)
class PlannedSession:
    """One session of the demo, and what is done to it."""

    index: int
    scenario: Scenario
    seed: int
    misbehave: tuple[str, ...] | None
    """``None`` keeps the scenario's default."""
    faults: tuple[str, ...] | None
    stream: bool
    crash_after: str | None
    """Crash right after this tool's side effect, then resume."""
    human: Literal["approve", "reject", "wait", "away", "expire"]
    """What the human does if the session waits for an approval: decide, leave it waiting, leave it
    waiting since hours before the demo's clock (``away``), or let it expire (``expire``)."""
    time_limit_s: float | None
    """A tighter wall-clock limit than the default, to make the guard fire."""
    idempotency_scope: Literal["session", "turn"] = "session"
    """``turn``: the agent's idempotency keys are broken (``AgentConfig.idempotency_scope``)."""
    integration_tools: bool = False
    """The agent is offered every integration's tools too (``AgentConfig.integration_tools``)."""
    withheld_tools: tuple[str, ...] = ()
    """Tools the build does not offer (``AgentConfig.withheld_tools``)."""


def plan(sessions: int = DEFAULT_SESSIONS, *, seed: int = 0) -> list[PlannedSession]:
    """The demo's sessions: scenarios round-robin, seeds counting up, the extras mixed in by index."""
    out = []
    kinds = tuple(MISBEHAVIOURS)
    busy = sessions >= DEFAULT_SESSIONS
    turn = 0  # the round-robin's position: the busy route's extra sessions are not in it
    for i in range(sessions):
        if busy and i >= len(SCENARIOS) and i % _BUSY_EVERY == _BUSY_EVERY - 1:
            scenario, trial = next(s for s in SCENARIOS if s.name == _BUSY), seed + i
        else:
            scenario, trial = SCENARIOS[turn % len(SCENARIOS)], seed + turn // len(SCENARIOS)
            turn += 1
        misbehave = faults = None
        time_limit = None
        if not scenario.misbehave and not scenario.faults:
            if i % 8 == 5:
                misbehave = (kinds[(i // 8) % len(kinds)],)
            elif i % 7 == 3:
                faults = _FAULT_MIX[(i // 7) % len(_FAULT_MIX)]
            elif i % 50 == 21:
                faults, time_limit = ("latency:40%100",), 0.03
        crash = "issue_refund" if scenario.name in _CRASHABLE and i % 3 == 0 and misbehave is None else None
        human: Literal["approve", "reject", "wait", "away", "expire"] = ("approve", "reject", "wait")[i % 3]
        first = i < len(SCENARIOS)
        if first and scenario.name in _HUMAN_AWAY:
            human = _HUMAN_AWAY[scenario.name]  # type: ignore[assignment]
        keys: Literal["session", "turn"] = "session"
        if first and scenario.name == _DUPLICATED:
            crash, keys = "send_email", "turn"
        integrated = not first and i >= sessions - _INTEGRATED
        out.append(PlannedSession(i, scenario, trial, misbehave, faults, i % 4 == 1, crash,
                                  human, time_limit, keys, integrated))
    if busy:
        route = [p.index for p in out if p.scenario.name == _BUSY]
        for i in route[-_COLLAPSED:]:
            out[i] = dataclasses.replace(out[i], withheld_tools=("get_order",))
    return out


class DemoReport(BaseModel):
    """What a demo recorded, as the trace store has it (plus what the agent knows about guards)."""

    sessions: int
    """Sessions recorded."""
    statuses: dict[str, int]
    """Sessions by final status."""
    turns: int
    """Turns, over all sessions."""
    llm_calls: int
    """Model call attempts, retries included."""
    llm_errors: int
    """Attempts that failed and were retried (or ended a session)."""
    tool_calls: int
    """Tool executions."""
    tool_errors: int
    """Tool executions that failed (the model was told how to recover)."""
    input_tokens: int
    """Uncached input tokens."""
    cache_read_tokens: int
    """Input tokens read from the prompt cache."""
    cache_write_tokens: int
    """Input tokens written to the prompt cache."""
    output_tokens: int
    """Output tokens."""
    cost_usd: float
    """Cost of the calls with a known price."""
    guards: dict[str, int]
    """Guards fired, by guard."""
    misbehaving: int
    """Sessions with a misbehaviour switched on."""
    with_faults: int
    """Sessions with model API faults injected."""
    crashes_resumed: int
    """Sessions crashed after a refund and resumed."""
    duplicate_refunds: int
    """The same refund (session, order, amount) paid more than once; 0 unless idempotency broke."""
    duplicate_emails: int
    """The same e-mail (session, address, subject) sent more than once: the planted broken-key session's."""
    approvals: dict[str, int]
    """Held refunds and e-mails: approved, rejected, still waiting, expired."""
    calls_verified: int
    """Stored calls rebuilt to their recorded hash (whole store)."""
    calls_stored: int
    """Stored calls checked (whole store)."""
    dropped_spans: int
    """Spans the recorder could not write."""
    seconds: float
    """Wall-clock time, store writing and checks included."""


@dataclass(frozen=True)
class _Played:
    item: PlannedSession
    outcome: SessionOutcome
    crashed: bool
    held: Literal["approved", "rejected", "waiting", "expired"] | None
    """What became of a refund held for approval, if one was."""


class _ShiftedWallClock:
    """Seconds since the epoch, ``offset_s`` off: the hours the demo cannot wait through."""

    def __init__(self, offset_s: float) -> None:
        self._offset_s = offset_s

    def now(self) -> float:
        return time.time() + self._offset_s

    def sleep(self, seconds: float) -> None:
        time.sleep(max(seconds, 0.0))


def _play(item: PlannedSession, world: World, recorder: tracer.Recorder) -> _Played:
    config = AgentConfig(stream=item.stream, time_limit_s=item.time_limit_s or AgentConfig().time_limit_s,
                         idempotency_scope=item.idempotency_scope, integration_tools=item.integration_tools,
                         withheld_tools=item.withheld_tools)
    wall_clock = _ShiftedWallClock(-_AWAY_S) if item.human == "away" else None

    def crash(name: str, outcome: ToolOutcome) -> None:
        session = tracer.current_session()
        if name == item.crash_after and session is not None and not outcome.is_error and outcome.approval is None:
            raise SimulatedCrash(session.id, name)

    agent = Agent(world, recorder, config=config, wall_clock=wall_clock)
    crashed = False
    try:
        out = Agent(world, recorder, config=config, wall_clock=wall_clock,
                    after_tool=crash if item.crash_after else None).run(
            item.scenario, seed=item.seed, misbehave=item.misbehave, faults=item.faults)
    except SimulatedCrash as exc:
        out, crashed = agent.resume(exc.session_id), True
    if out.status != "waiting_human":
        return _Played(item, out, crashed, None)
    if item.human == "approve":
        return _Played(item, agent.approve(out.session_id, note="approved in the demo"), crashed, "approved")
    if item.human == "reject":
        return _Played(item, agent.reject(out.session_id, note="refunds of this size need a photo of the damage"),
                       crashed, "rejected")
    if item.human == "expire":
        sweep = Agent(world, recorder, config=config, wall_clock=_ShiftedWallClock(_SWEEP_AFTER_S))
        expired = sweep.expire_approval(out.session_id)
        if expired is not None:
            return _Played(item, expired, crashed, "expired")
    return _Played(item, out, crashed, "waiting")


def run_demo(db: str, world_path: str, *, sessions: int = DEFAULT_SESSIONS, workers: int = DEFAULT_WORKERS,
             seed: int = 0, progress: Callable[[SessionOutcome], None] | None = None) -> DemoReport:
    """Records the demo's sessions into ``db`` (its world in ``world_path``) and reports on them.

    Blocking. ``progress`` is called on the calling thread after each session.
    """
    started = time.perf_counter()
    recorder = tracer.Recorder(db)
    played: list[_Played] = []
    with World(world_path) as world:
        try:
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="demo") as pool:
                futures = [pool.submit(_play, item, world, recorder) for item in plan(sessions, seed=seed)]
                for future in as_completed(futures):
                    played.append(future.result())
                    if progress is not None:
                        progress(played[-1].outcome)
        finally:
            recorder.shutdown()
        paid = [r for p in played for r in world.refunds(p.outcome.session_id)]
        sent = [e for p in played for e in world.emails(p.outcome.session_id)]
    sums: collections.Counter[str] = collections.Counter()
    cost = 0.0
    with tracer.Store(db, read_only=True) as store:
        for p in played:
            s = store.get_session(p.outcome.session_id)
            for key in _SUMS:
                sums[key] += getattr(s, key)
            cost += s.cost_usd_known_part
        verified = store.verify_requests()
    return DemoReport(
        sessions=len(played), statuses=dict(collections.Counter(p.outcome.status for p in played).most_common()),
        **{key: sums[key] for key in _SUMS}, cost_usd=round(cost, 6),
        guards=dict(collections.Counter(g.guard for p in played for g in p.outcome.guards).most_common()),
        misbehaving=sum(1 for p in played if p.item.misbehave or p.item.scenario.misbehave),
        with_faults=sum(1 for p in played if p.item.faults or p.item.scenario.faults),
        crashes_resumed=sum(p.crashed for p in played),
        duplicate_refunds=len(paid) - len({(r["session_id"], r["order_id"], r["amount_cents"]) for r in paid}),
        duplicate_emails=len(sent) - len({(e["session_id"], e["to_address"], e["subject"]) for e in sent}),
        approvals=dict(collections.Counter(p.held for p in played if p.held)),
        calls_verified=verified.exact, calls_stored=verified.total, dropped_spans=recorder.stats.dropped,
        seconds=round(time.perf_counter() - started, 2),
    )


_SUMS = ("turns", "llm_calls", "llm_errors", "tool_calls", "tool_errors", "input_tokens", "cache_read_tokens",
         "cache_write_tokens", "output_tokens")
