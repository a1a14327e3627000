"""flightrec's replay: rebuild any decision's exact request, re-run it with edits, fork, and diff.

Quick start::

    import replay

    rec = replay.reconstruct(session_id, turn=3)           # the exact request, hash-checked
    edits = replay.Edits(system_replace=[("2. Before calling issue_refund", "2. Never")])
    result = replay.run(session_id, 3, edits, trials=5)    # recorded as a new, linked session
    print(result.changed, "of", len(result.trials), "trials decided differently; answered by", result.model)
"""

from ._audit import audit
from ._diff import diff
from ._edits import apply_edits, load_edits
from ._errors import (
    AgentNotFoundError,
    EditError,
    IncompleteRequestError,
    ModelUnreachableError,
    NoContentError,
    NoModelError,
    ReplayError,
    UnknownTurnError,
)
from ._fork import ForkAgent, ForkAgentFactory, ForkProgress, GuardFired, ToolReply, ToolsMode, fork
from ._model import ClientFactory, ModelChoice, choose_model
from ._reconstruct import REPLAY_OF, reconstruct
from ._records import (
    Change,
    ContextDiff,
    Decision,
    DecisionDiff,
    Divergence,
    Edits,
    ForkResult,
    Origin,
    Reconstruction,
    RecordedRun,
    RecordedSession,
    RecordedToolResult,
    RerunResult,
    RunResult,
    SessionDiff,
    TurnPair,
)
from ._registry import (
    GROUP,
    AgentRegistration,
    ApprovalAction,
    ApprovalDecider,
    Decided,
    find_agent,
    load_target,
    registered_agents,
)
from ._rerun import RerunAgent, RerunContext, rerun
from ._run import run

__all__ = [
    "GROUP",
    "REPLAY_OF",
    "AgentNotFoundError",
    "AgentRegistration",
    "ApprovalAction",
    "ApprovalDecider",
    "Change",
    "ClientFactory",
    "ContextDiff",
    "Decided",
    "Decision",
    "DecisionDiff",
    "Divergence",
    "EditError",
    "Edits",
    "ForkAgent",
    "ForkAgentFactory",
    "ForkProgress",
    "ForkResult",
    "GuardFired",
    "IncompleteRequestError",
    "ModelChoice",
    "ModelUnreachableError",
    "NoContentError",
    "NoModelError",
    "Origin",
    "Reconstruction",
    "RecordedRun",
    "RecordedSession",
    "RecordedToolResult",
    "ReplayError",
    "RerunAgent",
    "RerunContext",
    "RerunResult",
    "RunResult",
    "SessionDiff",
    "ToolReply",
    "ToolsMode",
    "TurnPair",
    "UnknownTurnError",
    "apply_edits",
    "audit",
    "choose_model",
    "diff",
    "find_agent",
    "fork",
    "load_edits",
    "load_target",
    "reconstruct",
    "registered_agents",
    "rerun",
    "run",
]
