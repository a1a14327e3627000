"""The small agent protocol: one ``run(case, client) -> str`` function becomes a registered agent.

::

    @evals.agent("trip-planner", model=lambda seed: FAKE.client(), tools={"get_weather": get_weather})
    def run(case: evals.Case, client: anthropic.Anthropic) -> str:
        ...   # the agent's loop: the client is already instrumented, the session already open
        return final_answer

``run`` is then a ``replay.AgentRegistration``: ``--agent MODULE:run`` (or its entry-point name)
works in ``eval run``, ``replay run``, ``replay fork`` and ``replay rerun``. Each part is built
from the one function:

- eval: each trial opens a session under the agent's name, with the case's input kept on it
  (``flightrec.eval.input``), makes the client (``model(seed)``, or ``--set model_url=URL``, or
  ``--set real=true``), instruments it, calls ``run``, and records the answer as the session's
  final answer;
- replay: ``model`` answers replays of the agent's sessions when the user names no model;
- rerun: ``run`` again, on the recorded case (or the recorded user messages), with the recorded
  responses; its tools run, so give ``rerun=False`` when they have side effects;
- fork with live tools: the ``tools`` given, by name.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import replay
import tracer

from ._dataset import Case, CaseInput
from ._errors import AgentLoadError

if TYPE_CHECKING:
    import anthropic

RunFn = Callable[[Case, "anthropic.Anthropic"], str]
"""``run(case, client) -> str``: one session of the agent, returning its final answer."""
ModelFn = Callable[[int], "anthropic.Anthropic"]
"""``model(seed) -> client``: the agent's default model (a test double, a simulator)."""

INPUT_ATTRIBUTE = "flightrec.eval.input"
"""The session attribute that keeps the case's input (JSON), so a rerun can run the same case."""

_SETTINGS = ("model_url", "real")


def agent(name: str, *, model: ModelFn | None = None, model_label: str | None = None,
          tools: Mapping[str, Callable[..., Any]] | None = None, rerun: bool = True,
          description: str = "") -> Callable[[RunFn], replay.AgentRegistration]:
    """Turns ``run(case, client) -> str`` into a ``replay.AgentRegistration`` (see the module docstring).

    Args:
        name: The agent's name, recorded on every session (``gen_ai.agent.name``).
        model: Makes the client a trial or replay talks to, from the trial's seed; without it, evals
            need ``--set model_url=URL`` or ``--set real=true``, and replays need ``--model-url``/``--real``.
        model_label: How replay names that model ("trip-planner's own model" by default).
        tools: The agent's tools by name, for ``replay fork --tools live``; each takes the tool call's
            arguments as keywords and returns its result (JSON-able); an exception is an error result.
        rerun: Whether ``replay rerun`` may run ``run`` again (its tools run too).
        description: One line for listings.
    """

    def register(run: RunFn) -> replay.AgentRegistration:
        def eval_agent(settings: Mapping[str, str]) -> _ProtocolAgent:
            return _ProtocolAgent(name, run, model, settings)

        def replay_model(origin: replay.Origin, seed: int) -> anthropic.Anthropic:
            assert model is not None
            return model(seed)

        def rerun_agent(ctx: replay.RerunContext) -> None:
            recorder = tracer.Recorder(os.path.join(ctx.workdir, "rerun.duckdb"))  # thrown away with workdir
            try:
                with recorder.session(name):
                    run(_recorded_case(ctx.recorded), recorder.instrument(ctx.client))
            finally:
                recorder.shutdown()

        def fork_agent(*, session_id: str, origin: replay.Origin, db: str) -> replay.ForkAgent:
            return _Tools(dict(tools or {}))

        return replay.AgentRegistration(
            name=name, model=replay_model if model is not None else None, model_label=model_label, eval=eval_agent,
            fork=fork_agent if tools else None, rerun=rerun_agent if rerun else None,
            description=description or (run.__doc__ or "").strip().split("\n")[0])

    return register


class _ProtocolAgent:
    """The eval part of a protocol agent."""

    def __init__(self, name: str, run: RunFn, model: ModelFn | None, settings: Mapping[str, str]) -> None:
        unknown = sorted(set(settings) - set(_SETTINGS))
        if unknown:
            raise AgentLoadError(f"the agent {name!r} takes no --set {', '.join(unknown)}; it takes "
                                 f"{' and '.join(_SETTINGS)}. A variant of the agent is a registration of its own.")
        self._name, self._run = name, run
        url, real = settings.get("model_url"), settings.get("real", "false").lower()
        if real not in ("true", "false"):
            raise AgentLoadError(f"--set real={real}: use true or false.")
        if real == "true" and not os.environ.get("ANTHROPIC_API_KEY"):
            raise AgentLoadError("--set real=true needs ANTHROPIC_API_KEY; set it, or leave real out.")
        if url is None and real == "false" and model is None:
            raise AgentLoadError(f"the agent {name!r} has no model of its own: pass --set model_url=URL (any "
                                 "Messages-API-compatible endpoint) or --set real=true, or give evals.agent a model=.")
        self._client = _client_factory(url, real == "true", model)

    def check(self, case: Case) -> None:
        """Any case: what it holds is ``run``'s to read."""

    def run_trial(self, case: Case, *, recorder: tracer.Recorder, seed: int) -> str:
        # The case's input and the answer are content: kept as the recorder's content mode says.
        policy = recorder.policy
        kept_input = policy.content(case.input.model_dump_json(exclude_defaults=True))
        attributes = {"flightrec.seed": seed, **({INPUT_ATTRIBUTE: kept_input} if kept_input is not None else {})}
        with recorder.session(self._name, **attributes) as session:
            answer = self._run(case, recorder.instrument(self._client(seed)))
            if not isinstance(answer, str):
                raise TypeError(f"the agent {self._name!r} returned a {type(answer).__name__}; run(case, client) "
                                "returns the final answer as a str")
            said = policy.content(answer)
            session.event("final_answer", **({"text": said} if said is not None else {}))
        return session.id

    def close(self) -> None:
        pass


def _client_factory(url: str | None, real: bool, model: ModelFn | None) -> ModelFn:
    import anthropic

    if url:
        return lambda seed: anthropic.Anthropic(base_url=url, api_key=os.environ.get("ANTHROPIC_API_KEY") or "unused")
    if real:
        return lambda seed: anthropic.Anthropic()
    assert model is not None
    return model


def _recorded_case(recorded: replay.RecordedSession) -> Case:
    """The case a recorded session ran: kept on it by an eval trial, else its user's messages."""
    kept = recorded.origin.attributes.get(INPUT_ATTRIBUTE)
    case_input = CaseInput.model_validate_json(kept) if kept else CaseInput(messages=recorded.user_messages)
    # A rerun scores nothing, so the case carries no expectations (a dataset's case needs one).
    return Case.model_construct(id=f"rerun-{recorded.session_id[:8]}", tags=(), description=None, input=case_input,
                                expect=(), pass_threshold=None)


class _Tools:
    """A protocol agent's live tools for a fork; the user's side is the recorded user messages."""

    def __init__(self, tools: dict[str, Callable[..., Any]]) -> None:
        self._tools = tools

    def run_tool(self, name: str, arguments: dict[str, Any], tool_use_id: str) -> replay.ToolReply:
        if name not in self._tools:
            return replay.ToolReply(f"there is no tool named {name!r}; the tools are: {', '.join(self._tools)}",
                                    is_error=True)
        # Undecorated: the fork records the call itself, and @tracer.tool would record it twice.
        fn = getattr(self._tools[name], "__wrapped__", self._tools[name])
        try:
            result = fn(**arguments)
        except Exception as exc:  # the tool's failure is the model's to see, as in the agent's own loop
            return replay.ToolReply(f"{type(exc).__name__}: {exc}", is_error=True)
        return replay.ToolReply(result if isinstance(result, str) else json.dumps(result, ensure_ascii=False))

    def guard(self, progress: replay.ForkProgress, name: str | None, arguments: Any) -> replay.GuardFired | None:
        return None  # a protocol agent's guards, if any, live in its run function, which a fork does not run

    def follow_up(self, reply: str, recorded: list[str]) -> str | None:
        return recorded.pop(0) if recorded else None

    def close(self) -> None:
        pass
