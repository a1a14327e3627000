"""The agent registry: how replay, evals and the dashboard find an agent's code without importing it.

An agent registers an ``AgentRegistration`` under the ``flightrec.agents`` entry-point group, as
commands do under ``flightrec.commands``::

    [project.entry-points."flightrec.agents"]
    trip-planner = "trips.flightrec:REGISTRATION"

``--agent NAME`` finds it by that name; ``--agent MODULE:ATTR`` imports it directly (for an agent
that is not installed as a package). A session records its agent's name (``gen_ai.agent.name``),
so fork and rerun pick the registered agent of that name by default, and refuse, saying why, when
none matches: a fork never runs another agent's tools.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, Literal, Protocol

import tracer

from ._errors import AgentNotFoundError

if TYPE_CHECKING:
    from ._fork import ForkAgentFactory
    from ._model import ClientFactory
    from ._rerun import RerunAgent

GROUP = "flightrec.agents"
"""The entry-point group agents register under."""

ApprovalAction = Literal["approve", "reject"]
"""A person's decision on an action an agent held for approval; also its audit action."""


@dataclass(frozen=True)
class Decided:
    """What became of a decision on a held action."""

    session_id: str
    """The session, by its full id."""
    approval_id: str
    """The approval decided on."""
    expired: bool
    """Its deadline had passed: it expired instead, and the decision was not taken (nor is it audited)."""
    status: str
    """The session's status once it carried on (``ok``, ``waiting_human`` again, ``escalated`` …)."""
    reply: str | None = None
    """The agent's last reply to the customer after it carried on."""


class ApprovalDecider(Protocol):
    """``decide(...)``: carries out a person's decision on the action a session of the agent holds for
    approval, and carries the session on, recording its spans with ``recorder``.

    Blocking: returns once the session has run on until it ends or waits again.

    Raises:
        tracer.FlightrecError: no such session or approval, or it is not pending any more (decided or
            expired): the message says which, and what to do.
    """

    def __call__(self, *, db: str, session_id: str, approval_id: str | None, action: ApprovalAction,
                 note: str | None, recorder: tracer.Recorder) -> Decided: ...


@dataclass(frozen=True)
class AgentRegistration:
    """What flightrec can do with one agent. Every part but ``name`` is optional; a job that needs
    a missing part says so.

    Example (the quickest way to fill it is ``evals.agent``, which builds every part from one
    ``run(case, client)`` function)::

        REGISTRATION = replay.AgentRegistration(
            name="trip-planner", model=lambda origin, seed: my_fake_model.client(),
            model_label="trip-planner's fake model", eval=make_eval_agent, fork=make_fork_agent)
    """

    name: str
    """The name its sessions record (``gen_ai.agent.name``, the ``agent`` of ``recorder.session``)."""
    model: ClientFactory | None = None
    """The model a replay of its sessions asks when the user names none (a simulator, a test double).
    ``None``: replay asks the user to name one (``--model-url``, ``--real``)."""
    model_label: str | None = None
    """How replay names that model to the user (default: "NAME's own model")."""
    eval: Callable[[Mapping[str, str]], Any] | None = None
    """``eval(settings) -> evals.EvalAgent``: the agent under test, built from ``--set`` values."""
    fork: ForkAgentFactory | None = None
    """Its live tools and user for ``replay fork --tools live``."""
    rerun: RerunAgent | None = None
    """Re-executes one of its sessions for ``replay rerun --recorded``."""
    decide: ApprovalDecider | None = None
    """Approves or rejects an action one of its sessions holds for a person (the dashboard's Approvals page)."""
    description: str = ""
    """One line for listings."""

    @property
    def label(self) -> str:
        return self.model_label or f"{self.name}'s own model"


def registered_agents() -> dict[str, AgentRegistration]:
    """Every agent installed packages register, by entry-point name.

    Raises:
        AgentNotFoundError: an entry point does not load, or is not an ``AgentRegistration``.
    """
    out: dict[str, AgentRegistration] = {}
    for ep in entry_points(group=GROUP):
        out[ep.name] = _checked(_load(ep.load, f"the {GROUP} entry point {ep.name!r} ({ep.value})"),
                                f"the {GROUP} entry point {ep.name!r} ({ep.value})")
    return out


def load_target(spec: str) -> Any:
    """What ``--agent SPEC`` names: a registered agent (``NAME``), or any object (``MODULE:ATTR``).

    Raises:
        AgentNotFoundError: no such registered agent, module or attribute.
    """
    if ":" not in spec:
        agents = registered_agents()
        if spec not in agents:
            raise AgentNotFoundError(f"--agent {spec}: no agent of that name is registered ({_known(agents)}). "
                                     f"Register it under the {GROUP!r} entry-point group, or pass MODULE:ATTR.")
        return agents[spec]
    def load() -> Any:
        try:
            return tracer.import_target(spec)
        except tracer.TargetError as exc:
            raise AgentNotFoundError(f"--agent {spec}: {exc}") from None

    return _load(load, f"--agent {spec}")


def find_agent(spec: str) -> AgentRegistration:
    """The ``AgentRegistration`` that ``--agent SPEC`` names.

    Raises:
        AgentNotFoundError: there is none, or SPEC names something else.
    """
    return _checked(load_target(spec), f"--agent {spec}")


def agent_for(spec: str | AgentRegistration | None, recorded: str | None, *, job: str) -> AgentRegistration | None:
    """The agent that acts on a session recorded by agent ``recorded``: the one ``spec`` is or names
    (``--agent`` NAME or MODULE:ATTR), else the one registered under the recorded name. ``None`` when
    no spec is given and none is registered.

    Raises:
        AgentNotFoundError: ``spec`` cannot be loaded, or it is a different agent than the recorded
            one (its tools and code would act on a conversation they were never part of).
    """
    if spec is None:
        return registered_agents().get(recorded) if recorded else None
    registration = spec if isinstance(spec, AgentRegistration) else find_agent(spec)
    if recorded and registration.name != recorded:
        raise AgentNotFoundError(
            f"--agent {registration.name if isinstance(spec, AgentRegistration) else spec} is the agent "
            f"{registration.name!r}, and the session was recorded by {recorded!r}: "
            f"{job} would run one agent's code on another's conversation. Name the registration of {recorded!r}, "
            "or leave --agent out.")
    return registration


def missing_agent(recorded: str | None, *, job: str, instead: str) -> AgentNotFoundError:
    """The error for a job that needs the session's agent when none is registered."""
    who = f"agent {recorded!r}" if recorded else "an agent that recorded no name"
    try:
        known = _known(registered_agents())
    except AgentNotFoundError as exc:
        known = str(exc)
    return AgentNotFoundError(
        f"{job} needs the session's own agent code, and the session was recorded by {who}, which is not registered "
        f"({known}). Register it under the {GROUP!r} entry-point group or pass --agent MODULE:ATTR; {instead}.")


def _load(load: Callable[[], Any], what: str) -> Any:
    try:
        return load()
    except AgentNotFoundError:
        raise
    except Exception as exc:  # the agent's own module failed to import: say where
        raise AgentNotFoundError(f"{what} failed to load: {type(exc).__name__}: {exc}") from None


def _checked(target: Any, what: str) -> AgentRegistration:
    if not isinstance(target, AgentRegistration):
        raise AgentNotFoundError(f"{what} is a {type(target).__name__}, not a replay.AgentRegistration. Point it at "
                                 "the registration (evals.agent(...) makes one from a run(case, client) function).")
    return target


def _known(agents: Mapping[str, AgentRegistration]) -> str:
    return "registered: " + ", ".join(sorted(agents)) if agents else "none are registered"
