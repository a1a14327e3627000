"""Agent factories for forks. The reference agent's is here, so that replay imports
``reference_agent`` only when a fork of one of its sessions asks for it."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from ._fork import AgentFactory, ForkAgent, ToolReply
from ._records import Origin

if TYPE_CHECKING:
    from reference_agent import BreakerState


class _ReferenceFork:
    """The reference agent's live tools over a fresh copy of the scenario's world, and its
    scripted customer: a recorded follow-up is sent only when the agent's reply asks something."""

    def __init__(self, session_id: str, origin: Origin, db: str) -> None:
        from reference_agent import (
            TOOL_SPECS,
            BreakerState,
            SystemClock,
            Toolbox,
            ToolPolicy,
            World,
            WorldSetup,
            default_world_path,
            get_scenario,
        )

        self._session_id = session_id
        self._world = World(default_world_path(db))
        setup = get_scenario(origin.scenario).world if origin.scenario else WorldSetup()
        # The fork's world starts as the scenario's did; the origin's side effects are not in it.
        self._world.seed(session_id, setup, scenario=origin.scenario)
        self._toolbox = Toolbox(self._world, session_id, policy=ToolPolicy(),
                                outages=self._world.setup(session_id).outages, clock=SystemClock())
        self._irreversible = {s.name for s in TOOL_SPECS if s.irreversible}
        self._breakers: dict[str, BreakerState] = {}
        self._new_breaker = BreakerState

    def run_tool(self, name: str, arguments: dict[str, Any], tool_use_id: str) -> ToolReply:
        from reference_agent import idempotency_key

        key = idempotency_key(self._session_id, name, arguments) if name in self._irreversible else ""
        outcome = self._toolbox.run(name, arguments, key=key, tool_use_id=tool_use_id,
                                    breaker=self._breakers.get(name) or self._new_breaker())
        self._breakers[name] = outcome.breaker
        return ToolReply(json.dumps(outcome.result, ensure_ascii=False), outcome.is_error,
                         "waiting_human" if outcome.approval is not None else None)

    def follow_up(self, reply: str, recorded: list[str]) -> str | None:
        if recorded and reply.rstrip().endswith("?"):
            return recorded.pop(0)
        return None

    def close(self) -> None:
        self._world.close()


def reference_agent_factory(*, session_id: str, origin: Origin, db: str) -> ForkAgent:
    """The reference agent's ``AgentFactory``."""
    return _ReferenceFork(session_id, origin, db)


AGENT_FACTORIES: dict[str, AgentFactory] = {"reference": reference_agent_factory}
"""Agent factories by the name ``replay fork --agent`` takes."""
