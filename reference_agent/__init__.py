"""The reference agent: a customer-support agent on the anthropic SDK, its world, and a simulated model.

It exercises everything flightrec measures, offline: typed tools over a business world in its
own SQLite file, guards, retries, circuit breakers, idempotent side effects, human approval,
checkpoints with crash-safe resume, and multi-turn sessions. The model is reached through the
real ``anthropic`` client: a seeded simulator (in process or over HTTP) that speaks the Messages
wire format, injects faults and misbehaves on demand, or the real API.

Quick start::

    import tracer
    from reference_agent import Agent, World, get_scenario

    recorder = tracer.Recorder()
    with World("support.world.sqlite") as world:
        outcome = Agent(world, recorder).run(get_scenario("refund_under_threshold"), seed=1)
    recorder.shutdown()
"""

from ._agent import (
    AGENT_NAME,
    SYSTEM_PROMPT,
    Agent,
    AgentConfig,
    Checkpoint,
    GuardRecord,
    RunSpec,
    SessionOutcome,
    default_client,
    idempotency_key,
)
from ._demo import DemoReport, PlannedSession, plan, run_demo
from ._errors import (
    AgentConfigError,
    AgentError,
    CircuitOpenError,
    InvalidArgumentsError,
    NoCheckpointError,
    NotAllowedError,
    NotFoundError,
    ServiceUnavailableError,
    SessionStateError,
    SimulatedCrash,
    ToolError,
    UnknownScenarioError,
    WorldError,
)
from ._policy import MISBEHAVIOURS, Misbehaviour
from ._scenarios import SCENARIOS, Expectation, Scenario, UserTurn, check_outcome, get_scenario
from ._sim import (
    DEFAULT_MODEL,
    SIM_HEADER,
    FaultSpec,
    PromptCache,
    SimOptions,
    SimServer,
    SimulatedModel,
    sim_client,
    sim_options,
)
from ._tools import TOOL_SPECS, BreakerState, Toolbox, ToolOutcome, ToolPolicy, ToolSpec, tool_definitions
from ._world import TODAY, World, WorldSetup, default_world_path

__all__ = [
    "AGENT_NAME",
    "DEFAULT_MODEL",
    "MISBEHAVIOURS",
    "SCENARIOS",
    "SIM_HEADER",
    "SYSTEM_PROMPT",
    "TODAY",
    "TOOL_SPECS",
    "Agent",
    "AgentConfig",
    "AgentConfigError",
    "AgentError",
    "BreakerState",
    "Checkpoint",
    "CircuitOpenError",
    "DemoReport",
    "Expectation",
    "FaultSpec",
    "GuardRecord",
    "InvalidArgumentsError",
    "Misbehaviour",
    "NoCheckpointError",
    "NotAllowedError",
    "NotFoundError",
    "PlannedSession",
    "PromptCache",
    "RunSpec",
    "Scenario",
    "ServiceUnavailableError",
    "SessionOutcome",
    "SessionStateError",
    "SimOptions",
    "SimServer",
    "SimulatedCrash",
    "SimulatedModel",
    "ToolError",
    "ToolOutcome",
    "ToolPolicy",
    "ToolSpec",
    "Toolbox",
    "UnknownScenarioError",
    "UserTurn",
    "World",
    "WorldError",
    "WorldSetup",
    "check_outcome",
    "default_client",
    "default_world_path",
    "get_scenario",
    "idempotency_key",
    "plan",
    "run_demo",
    "sim_client",
    "sim_options",
    "tool_definitions",
]
