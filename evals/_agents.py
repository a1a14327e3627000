"""The agent under test: a seam (``EvalAgent``), and the reference agent behind it.

``flightrec eval run --agent MODULE:FACTORY`` loads any agent: ``FACTORY(settings)`` gets the
``--set key=value`` pairs and returns an ``EvalAgent``. The reference agent's factory is here, so
that evals imports ``reference_agent`` only when it runs it.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from ._dataset import Case
from ._errors import AgentLoadError, DatasetError

if TYPE_CHECKING:
    import tracer

REFERENCE = "reference"
"""``--agent`` for the bundled reference agent (the default)."""

VARIANTS = {"no-refund-confirmation": "2. Before calling issue_refund"}
"""Named variants of the reference agent (``--set variant=NAME``): the system prompt without the
rule that starts with this text. ``no-refund-confirmation`` is the bundled regression: the agent
refunds without asking the customer to confirm the amount."""


class EvalAgent(Protocol):
    """One agent variant, ready to run trials. Must be safe to call from several threads at once."""

    def check(self, case: Case) -> None:
        """Raises ``DatasetError`` when the agent cannot run the case (before any trial runs)."""
        ...

    def run_trial(self, case: Case, *, recorder: tracer.Recorder, seed: int) -> str:
        """Runs one trial of ``case``, recorded by ``recorder``; returns the session id.

        ``seed`` differs per trial: a simulated model uses it to vary its choices.
        """
        ...

    def close(self) -> None:
        """Frees what the agent holds (files, connections) after the run."""
        ...


_BOOLEANS = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}

AgentFactory = Callable[[Mapping[str, str]], EvalAgent]
"""``FACTORY(settings)``: builds the agent under test from the ``--set`` values."""


class ReferenceEvalAgent:
    """The reference support agent, with its settings changed by ``--set``.

    Settings: any ``AgentConfig`` field (``model``, ``max_tool_calls``, ``token_budget``,
    ``time_limit_s``, ``approval_threshold_cents``, ``stream``, ``system_prompt`` …),
    ``system_prompt_file`` (a file whose text replaces the system prompt), ``variant`` (a named
    variant, see ``VARIANTS``), ``real`` (``true``: the real Anthropic API, needs
    ANTHROPIC_API_KEY) and ``sim_latency_ms`` (the simulated model's latency per call).
    """

    def __init__(self, settings: Mapping[str, str], workdir: str) -> None:
        import pydantic

        from reference_agent import SYSTEM_PROMPT, AgentConfig, World

        values: dict[str, Any] = dict(settings)
        real = values.pop("real", "false").lower()
        if real not in _BOOLEANS:
            raise AgentLoadError(f"--set real={real}: use true or false.")
        self.real = _BOOLEANS[real]
        latency = values.pop("sim_latency_ms", "0") or "0"
        try:
            self.latency_ms = int(latency)
        except ValueError:
            raise AgentLoadError(f"--set sim_latency_ms={latency}: use a whole number of milliseconds.") from None
        # `system_prompt` is an AgentConfig field, so it is listed among the settings: it replaces the
        # prompt like system_prompt_file does, instead of clashing with the prompt passed below.
        prompt = values.pop("system_prompt", SYSTEM_PROMPT)
        variant = values.pop("variant", None)
        if variant is not None:
            if variant not in VARIANTS:
                raise AgentLoadError(f"no reference-agent variant {variant!r}; the variants are: "
                                     f"{', '.join(VARIANTS)}.")
            prompt = "\n".join(line for line in prompt.splitlines() if not line.startswith(VARIANTS[variant]))
        prompt_file = values.pop("system_prompt_file", None)
        if prompt_file is not None:
            try:
                prompt = open(prompt_file, encoding="utf-8").read()
            except OSError as exc:
                raise AgentLoadError(f"--set system_prompt_file={prompt_file}: cannot read it "
                                     f"({exc.strerror}).") from None
        try:
            self.config = AgentConfig(**values, system_prompt=prompt)
        except pydantic.ValidationError as exc:
            problems = "; ".join(f"{e['loc'][0]}: {'unknown setting' if e['type'] == 'extra_forbidden' else e['msg']}"
                                 for e in exc.errors())
            fields = ", ".join(sorted([*AgentConfig.model_fields, "system_prompt_file", "variant", "real",
                                       "sim_latency_ms"]))
            raise AgentLoadError(f"bad --set for the reference agent ({problems}). Settings: {fields}.") from None
        self.world = World(os.path.join(workdir, "eval.world.sqlite"))

    def check(self, case: Case) -> None:
        from reference_agent import (
            MISBEHAVIOURS,
            ConfigError,
            FaultSpec,
            UnknownScenarioError,
            WorldSetup,
            get_scenario,
        )

        where = f"case {case.id!r}"
        try:
            if case.input.scenario:
                get_scenario(case.input.scenario)
            elif not case.input.messages:
                raise DatasetError(f"{where}: give input.scenario or input.messages; the agent needs a first message.")
            WorldSetup.model_validate(case.input.world or {})
            for f in case.input.faults or ():
                FaultSpec.parse(f)
        except UnknownScenarioError as exc:
            raise DatasetError(f"{where}: {exc}") from None
        except ConfigError as exc:
            raise DatasetError(f"{where}: {exc}") from None
        except ValueError as exc:  # pydantic's ValidationError
            raise DatasetError(f"{where}: input.world: {str(exc).splitlines()[-1].strip()}") from None
        bad = set(case.input.misbehave or ()) - set(MISBEHAVIOURS)
        if bad:
            raise DatasetError(f"{where}: unknown misbehaviour(s) {', '.join(sorted(bad))}; "
                               f"known: {', '.join(MISBEHAVIOURS)}.")
        if self.real and (case.input.misbehave or case.input.faults):
            raise DatasetError(f"{where}: misbehave and faults are simulator features; the real API cannot take them.")

    def client(self, spec: Any, config: Any) -> Any:
        """The Anthropic client one trial talks to: the simulated model, or the real API with ``real``.

        The seam for user-style variants: a subclass can wrap or replace the client (a proxy that
        rewrites requests, a different model endpoint) without copying ``run_trial``.

        Args:
            spec: The trial's ``reference_agent.RunSpec`` (scenario, seed, misbehaviours, faults).
            config: The agent's ``reference_agent.AgentConfig`` (retries, timeout).
        """
        from reference_agent import sim_client, sim_options

        if self.real:
            from reference_agent import default_client
            return default_client(spec, config)
        options = sim_options(seed=spec.seed, scenario=spec.scenario, misbehave=spec.misbehave, faults=spec.faults,
                              latency_ms=self.latency_ms)
        return sim_client(options, max_retries=config.max_retries, timeout=config.request_timeout_s)

    def run_trial(self, case: Case, *, recorder: tracer.Recorder, seed: int) -> str:
        from reference_agent import Agent, RunSpec, UserTurn, WorldSetup, get_scenario

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
        if out.status == "waiting_human" and case.input.human is not None:
            decide = agent.approve if case.input.human == "approve" else agent.reject
            out = decide(out.session_id, note=f"eval case {case.id}")
        return out.session_id

    def close(self) -> None:
        self.world.close()


def load_agent(agent: str | None, settings: Mapping[str, str], workdir: str) -> EvalAgent:
    """The agent ``--agent`` names (``reference`` by default, or ``MODULE:FACTORY``), built with ``settings``.

    Raises:
        AgentLoadError: the module or factory cannot be found, or it rejects the settings.
    """
    if agent in (None, REFERENCE):
        return ReferenceEvalAgent(settings, workdir)
    assert agent is not None
    module_name, _, attr = agent.partition(":")
    if not module_name or not attr:
        raise AgentLoadError(f"--agent {agent!r}: give MODULE:FACTORY (for example mypkg.evals:make_agent), "
                             f"or `{REFERENCE}`.")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise AgentLoadError(f"--agent {agent!r}: cannot import {module_name} ({exc}). Is it on PYTHONPATH?") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise AgentLoadError(f"--agent {agent!r}: {module_name} has no callable {attr!r}.")
    try:
        return factory(settings)
    except AgentLoadError:
        raise
    except Exception as exc:
        raise AgentLoadError(f"--agent {agent!r}: the factory failed: {type(exc).__name__}: {exc}") from None
