"""The agent under test: a seam (``EvalAgent``), found through the agent registry.

``flightrec eval run --agent NAME`` runs an agent registered under the ``flightrec.agents``
entry-point group (``replay.AgentRegistration``, whose ``eval`` part builds the agent); ``--agent
MODULE:ATTR`` imports a registration, or a plain factory ``FACTORY(settings) -> EvalAgent``.
Without ``--agent``, the dataset's ``agent:`` names it, else the reference agent. The quickest way
to an agent is ``evals.agent``, which turns one ``run(case, client) -> str`` function into a
registration (``_protocol.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Protocol

import replay

from ._dataset import Case
from ._errors import AgentLoadError

if TYPE_CHECKING:
    import tracer

REFERENCE = "reference"
"""The agent a dataset that names none runs against: the bundled reference agent."""


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


EvalAgentFactory = Callable[[Mapping[str, str]], EvalAgent]
"""``FACTORY(settings)``: builds the agent under test from the ``--set`` values."""


def load_agent(agent: str | None, settings: Mapping[str, str]) -> EvalAgent:
    """The agent ``--agent`` names (NAME or MODULE:ATTR; ``reference`` by default), built with ``settings``.

    Raises:
        AgentLoadError: it cannot be found or imported, has no eval part, or rejects the settings.
    """
    spec = agent or REFERENCE
    try:
        target = replay.load_target(spec)
    except replay.AgentNotFoundError as exc:
        raise AgentLoadError(str(exc)) from None
    if isinstance(target, replay.AgentRegistration):
        if target.eval is None:
            raise AgentLoadError(f"--agent {spec}: the agent {target.name!r} registers no eval part; give its "
                                 "registration eval=, or make it with evals.agent(...).")
        factory: Callable[[Mapping[str, str]], EvalAgent] = target.eval
    elif callable(target):
        factory = target
    else:
        raise AgentLoadError(f"--agent {spec} is a {type(target).__name__}; point it at a replay.AgentRegistration or "
                             "at a factory FACTORY(settings) -> EvalAgent.")
    try:
        built = factory(settings)
    except AgentLoadError:
        raise
    except Exception as exc:
        raise AgentLoadError(f"--agent {spec}: building the agent failed: {type(exc).__name__}: {exc}") from None
    missing = [m for m in ("check", "run_trial", "close") if not callable(getattr(built, m, None))]
    if missing:
        raise AgentLoadError(f"--agent {spec} built a {type(built).__name__}, not an eval agent (it lacks "
                             f"{', '.join(missing)}); see evals.EvalAgent, or make one with evals.agent(...).")
    return built
