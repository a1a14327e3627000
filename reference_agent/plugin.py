"""The reference agent's registration with replay, evals and the dashboard: its model, fork, rerun, eval agent
and approval decisions.

Installed under the ``flightrec.agents`` entry-point group as ``support`` (the name its sessions
record) and ``reference`` (the name earlier command lines used). Replay and evals find it there,
as they find any team's agent; they never import this package. It is the one module here that
imports them, the way a team's own registration module would.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import pydantic

import evals
import replay
import tracer

from ._agent import (
    AGENT_NAME,
    SYSTEM_PROMPT,
    Agent,
    AgentConfig,
    FiredGuard,
    RunSpec,
    UserTurn,
    default_client,
    idempotency_key,
    limit_guard,
    tool_guard,
    tool_history,
    tool_policy,
)
from ._errors import AgentConfigError, NoCheckpointError, SessionStateError, UnknownScenarioError
from ._policy import MISBEHAVIOURS
from ._scenarios import get_scenario
from ._sim import FaultSpec, sim_client, sim_options
from ._tools import TOOL_SPECS, BreakerState, Toolbox
from ._world import World, WorldSetup, default_world_path

if TYPE_CHECKING:
    import anthropic

_REPLAY_RETRIES = 1  # a replay is interactive: fail fast rather than back off for a minute


def simulated_model(origin: replay.Origin, seed: int) -> anthropic.Anthropic:
    """The simulator, seeded and set up as the recorded session was, for replays of its sessions.

    The recorded misbehaviours are replayed (they are the model's behaviour); faults are not (a re-run
    asks for the decision, not the fault).
    """
    options = sim_options(seed=seed, scenario=origin.scenario, misbehave=tuple(origin.misbehave))
    return sim_client(options, max_retries=_REPLAY_RETRIES, timeout=30.0)


def _recorded_config(origin: replay.Origin, session: str) -> AgentConfig:
    """The settings the session ran with: a replay of it runs under the same limits and guards.

    Raises:
        replay.ReplayError: this version of the agent does not take one of them.
    """
    try:
        return AgentConfig(**origin.config)
    except pydantic.ValidationError as exc:
        raise replay.ReplayError(f"{session} was recorded with agent settings this version "
                                 f"does not take ({tracer.validation_problems(exc)}).") from None


class _ReferenceFork:
    """The reference agent's live tools over a fresh copy of the scenario's world, its guards
    under the origin session's settings, and its scripted customer: a recorded follow-up is sent
    only when the agent's reply asks something."""

    def __init__(self, session_id: str, origin: replay.Origin, db: str) -> None:
        self._session_id = session_id
        self._config = _recorded_config(origin, "the forked session")
        self._world = World(default_world_path(db))
        setup = get_scenario(origin.scenario).world if origin.scenario else WorldSetup()
        # The fork's world starts as the scenario's did; the origin's side effects are not in it.
        self._world.seed(session_id, setup, scenario=origin.scenario)
        self._toolbox = Toolbox(self._world, session_id, policy=tool_policy(self._config),
                                outages=self._world.setup(session_id).outages, clock=tracer.SystemClock())
        self._irreversible = {s.name for s in TOOL_SPECS if s.irreversible}
        self._breakers: dict[str, BreakerState] = {}

    def run_tool(self, name: str, arguments: dict[str, Any], tool_use_id: str) -> replay.ToolReply:
        key = idempotency_key(self._session_id, name, arguments) if name in self._irreversible else ""
        outcome = self._toolbox.run(name, arguments, key=key, tool_use_id=tool_use_id,
                                    breaker=self._breakers.get(name) or BreakerState())
        self._breakers[name] = outcome.breaker
        return replay.ToolReply(json.dumps(outcome.result, ensure_ascii=False), outcome.is_error,
                         "waiting_human" if outcome.approval is not None else None)

    def guard(self, progress: replay.ForkProgress, name: str | None, arguments: Any) -> replay.GuardFired | None:
        fired: FiredGuard | None = limit_guard(self._config, seconds=progress.seconds, tokens=progress.tokens)
        if fired is None and name is not None:
            fired = tool_guard(self._config, tool_history(progress.messages), progress.tool_calls, name, arguments)
        return None if fired is None else replay.GuardFired(fired.guard, fired.reason, fired.limit, fired.value)

    def follow_up(self, reply: str, recorded: list[str]) -> str | None:
        if recorded and reply.rstrip().endswith("?"):
            return recorded.pop(0)
        return None

    def close(self) -> None:
        self._world.close()


def fork_agent(*, session_id: str, origin: replay.Origin, db: str) -> replay.ForkAgent:
    """The reference agent's live tools and customer for ``replay fork --tools live``."""
    return _ReferenceFork(session_id, origin, db)


class _Crash(Exception):
    """Re-enacts a crash the recording has, so that the resume that followed it runs again."""


def rerun(ctx: replay.RerunContext) -> None:
    """Runs the reference agent's session again, run by run.

    Its tools run against a fresh copy of the scenario's world in ``workdir``, so approvals and
    idempotency keys behave as they did; a result that differs from the recording shows up in the
    next request. Crashes are re-enacted after the same tool call; an interruption by a model
    fault is not (the recording serves the call that succeeded), so its resume has nothing to do.
    Its guards read ``ctx.clock``, which adds the recorded model time, so they fire where they did.
    """
    recorded, workdir = ctx.recorded, ctx.workdir
    origin, runs = recorded.origin, recorded.runs
    config = _recorded_config(origin, f"session {recorded.session_id}")
    crash_after = {run.tool_calls_before_end for run, nxt in zip(runs, runs[1:]) if run.crashed and nxt.how == "resume"}
    state: dict[str, Any] = {"tool_calls": 0, "session": None}

    def after_tool(name: str, outcome: object) -> None:
        state["tool_calls"] += 1
        if state["tool_calls"] in crash_after:
            crash_after.discard(state["tool_calls"])
            session = tracer.current_session()
            state["session"] = session.id if session is not None else None
            raise _Crash

    def run_once(step: Callable[[], Any]) -> None:
        try:
            state["session"] = step().session_id
        except _Crash:
            pass

    recorder = tracer.Recorder(os.path.join(workdir, "rerun.duckdb"))  # the rerun's own trace, thrown away
    try:
        with World(os.path.join(workdir, "rerun.world.sqlite")) as world:
            agent = Agent(world, recorder, config=config, clock=ctx.clock,
                          client_factory=lambda spec, config: ctx.client, after_tool=after_tool)

            def first() -> Any:
                if origin.scenario:
                    return agent.run(get_scenario(origin.scenario), seed=origin.seed,
                                     misbehave=tuple(origin.misbehave), faults=())
                text = recorded.first_request["messages"][0]["content"]
                return agent.start(text if isinstance(text, str) else json.dumps(text), spec=RunSpec(seed=origin.seed))

            run_once(first)
            sid = state["session"]
            for run in runs[1:]:
                if run.how == "resume":
                    if agent.outcome(sid).status in ("running", "error"):
                        run_once(lambda: agent.resume(sid))
                elif run.how in ("approved", "rejected"):
                    decide = agent.approve if run.how == "approved" else agent.reject
                    run_once(functools.partial(decide, sid, run.note))
                elif run.how == "expired":
                    run_once(functools.partial(agent.expire_approval, sid, force=True))
                elif run.how == "follow_up":
                    run_once(functools.partial(agent.say, sid, run.opening_message or ""))
                else:
                    raise replay.ReplayError(f"the reference agent has no run kind {run.how!r} to re-execute.")
    except SessionStateError as exc:
        raise replay.ReplayError(f"the agent could not take the recorded run: {exc}") from None
    finally:
        recorder.shutdown()


def decide(*, db: str, session_id: str, approval_id: str | None, action: replay.ApprovalAction, note: str | None,
           recorder: tracer.Recorder) -> replay.Decided:
    """Approves or rejects what a session holds, as ``flightrec agent approve|reject`` does (``Agent.decide``),
    on the world file beside the store ``db``; the session carries on, recorded by ``recorder``.

    Raises:
        NoCheckpointError: there is no world file beside the store (opening one would make an empty one).
    """
    path = default_world_path(db)
    if not os.path.exists(path):
        raise NoCheckpointError(f"there is no world file {path} beside the store, so the reference agent has no "
                                "session here to carry on. Decide where the sessions ran: `flightrec agent "
                                "approve|reject SESSION_ID --world PATH`.")
    with World(path) as world:
        decided, out = Agent(world, recorder).decide(session_id, action, note, approval_id=approval_id)
    return replay.Decided(session_id=out.session_id, approval_id=decided, expired=out.approval_expired is not None,
                          status=out.status, reply=out.reply)


VARIANTS = {"no-refund-confirmation": "2. Before calling issue_refund"}
"""Named variants of the reference agent (``--set variant=NAME``): the system prompt without the
rule that starts with this text. ``no-refund-confirmation`` is the bundled regression: the agent
refunds without asking the customer to confirm the amount."""


_BOOLEANS = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}


class ReferenceEvalAgent:
    """The reference support agent, with its settings changed by ``--set``.

    Settings: any ``AgentConfig`` field (``model``, ``max_tool_calls``, ``token_budget``,
    ``time_limit_s``, ``approval_threshold_cents``, ``stream``, ``system_prompt`` …),
    ``system_prompt_file`` (a file whose text replaces the system prompt), ``variant`` (a named
    variant, see ``VARIANTS``), ``real`` (``true``: the real Anthropic API, needs
    ANTHROPIC_API_KEY) and ``sim_latency_ms`` (the simulated model's latency per call).
    """

    def __init__(self, settings: Mapping[str, str]) -> None:
        values: dict[str, Any] = dict(settings)
        real = values.pop("real", "false").lower()
        if real not in _BOOLEANS:
            raise evals.AgentLoadError(f"--set real={real}: use true or false.")
        self.real = _BOOLEANS[real]
        latency = values.pop("sim_latency_ms", "0") or "0"
        try:
            self.latency_ms = int(latency)
        except ValueError:
            raise evals.AgentLoadError(f"--set sim_latency_ms={latency}: use a whole number of milliseconds.") from None
        # `system_prompt` is an AgentConfig field, so it is listed among the settings: it replaces the
        # prompt like system_prompt_file does, instead of clashing with the prompt passed below.
        prompt = values.pop("system_prompt", SYSTEM_PROMPT)
        variant = values.pop("variant", None)
        if variant is not None:
            if variant not in VARIANTS:
                raise evals.AgentLoadError(f"no reference-agent variant {variant!r}; the variants are: "
                                     f"{', '.join(VARIANTS)}.")
            prompt = "\n".join(line for line in prompt.splitlines() if not line.startswith(VARIANTS[variant]))
        prompt_file = values.pop("system_prompt_file", None)
        if prompt_file is not None:
            try:
                prompt = open(prompt_file, encoding="utf-8").read()
            except OSError as exc:
                raise evals.AgentLoadError(f"--set system_prompt_file={prompt_file}: cannot read it "
                                     f"({exc.strerror}).") from None
        try:
            self.config = AgentConfig(**values, system_prompt=prompt)
        except pydantic.ValidationError as exc:
            problems = tracer.validation_problems(exc)
            fields = ", ".join(sorted([*AgentConfig.model_fields, "system_prompt_file", "variant", "real",
                                       "sim_latency_ms"]))
            raise evals.AgentLoadError(f"bad --set for the reference agent ({problems}). Settings: {fields}.") from None
        self._workdir = tempfile.mkdtemp(prefix="flightrec-eval-support-")
        self.world = World(os.path.join(self._workdir, "eval.world.sqlite"))

    def check(self, case: evals.Case) -> None:
        where = f"case {case.id!r}"
        try:
            if case.input.scenario:
                get_scenario(case.input.scenario)
            elif not case.input.messages:
                raise evals.DatasetError(f"{where}: give input.scenario or input.messages; the agent needs a first "
                                         "message.")
            WorldSetup.model_validate(case.input.world or {})
            for f in case.input.faults or ():
                FaultSpec.parse(f)
        except UnknownScenarioError as exc:
            raise evals.DatasetError(f"{where}: {exc}") from None
        except AgentConfigError as exc:
            raise evals.DatasetError(f"{where}: {exc}") from None
        except pydantic.ValidationError as exc:
            raise evals.DatasetError(f"{where}: input.world: {tracer.validation_problems(exc)}") from None
        bad = set(case.input.misbehave or ()) - set(MISBEHAVIOURS)
        if bad:
            raise evals.DatasetError(f"{where}: unknown misbehaviour(s) {', '.join(sorted(bad))}; "
                               f"known: {', '.join(MISBEHAVIOURS)}.")
        if self.real and (case.input.misbehave or case.input.faults):
            raise evals.DatasetError(f"{where}: misbehave and faults are simulator features; the real API cannot "
                                     "take them.")

    def client(self, spec: Any, config: Any) -> Any:
        """The Anthropic client one trial talks to: the simulated model, or the real API with ``real``.

        The seam for user-style variants: a subclass can wrap or replace the client (a proxy that
        rewrites requests, a different model endpoint) without copying ``run_trial``.

        Args:
            spec: The trial's ``reference_agent.RunSpec`` (scenario, seed, misbehaviours, faults).
            config: The agent's ``reference_agent.AgentConfig`` (retries, timeout).
        """
        if self.real:
            return default_client(spec, config)
        options = sim_options(seed=spec.seed, scenario=spec.scenario, misbehave=spec.misbehave, faults=spec.faults,
                              latency_ms=self.latency_ms)
        return sim_client(options, max_retries=config.max_retries, timeout=config.request_timeout_s)

    def run_trial(self, case: evals.Case, *, recorder: tracer.Recorder, seed: int) -> str:
        scenario = get_scenario(case.input.scenario) if case.input.scenario else None
        turns = ([UserTurn(text=m.text, only_if_asked=m.only_if_asked) for m in case.input.messages]
                 or list(scenario.messages if scenario else ()))
        world = WorldSetup.model_validate(case.input.world) if case.input.world is not None else (
            scenario.world if scenario else WorldSetup())
        sim = not self.real
        spec = RunSpec(
            scenario=scenario.name if scenario else None, seed=seed, real=self.real,
            misbehave=tuple(case.input.misbehave if case.input.misbehave is not None
                            else scenario.misbehave if scenario and sim else ()),
            faults=tuple(case.input.faults if case.input.faults is not None
                         else scenario.faults if scenario and sim else ()))

        agent = Agent(self.world, recorder, config=self.config, client_factory=self.client)
        out = agent.start(turns[0].text, spec=spec, world=world, follow_ups=turns[1:])
        if out.status == "waiting_human" and case.input.human == "expire":
            agent.expire_approval(out.session_id, force=True)
        elif out.status == "waiting_human" and case.input.human is not None:
            decide = agent.approve if case.input.human == "approve" else agent.reject
            decide(out.session_id, note=f"eval case {case.id}")
        return out.session_id

    def close(self) -> None:
        self.world.close()
        shutil.rmtree(self._workdir, ignore_errors=True)




REGISTRATION = replay.AgentRegistration(
    name=AGENT_NAME, model=simulated_model, model_label="the reference agent's simulator (in process)",
    eval=ReferenceEvalAgent, fork=fork_agent, rerun=rerun, decide=decide,
    description="the reference customer-support agent, on its simulated model")
"""The reference agent, as the ``flightrec.agents`` entry points ``support`` and ``reference`` install it."""
