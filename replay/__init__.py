"""flightrec's replay: rebuild any decision's exact request, re-run it with edits, fork, and diff.

Quick start::

    import replay

    rec = replay.reconstruct(session_id, turn=3)           # the exact request, hash-checked
    edits = replay.Edits(system_replace=[("2. Before calling issue_refund", "2. Never")])
    result = replay.run(session_id, 3, edits, trials=5)    # recorded as a new, linked session
    print(result.changed, "of", len(result.trials), "trials decided differently")
"""

from ._agents import AGENT_FACTORIES, reference_agent_factory
from ._diff import diff
from ._edits import apply_edits, load_edits
from ._errors import (
    EditError,
    ModelUnreachableError,
    NoContentError,
    ReplayError,
    UnknownTurnError,
)
from ._fork import AgentFactory, ForkAgent, ToolReply, ToolsMode, fork
from ._model import ClientFactory, default_client_factory
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
from ._rerun import RerunAgent, RerunContext, reference_rerun, rerun
from ._run import run

__all__ = [
    "AGENT_FACTORIES",
    "REPLAY_OF",
    "AgentFactory",
    "Change",
    "ClientFactory",
    "ContextDiff",
    "Decision",
    "DecisionDiff",
    "Divergence",
    "EditError",
    "Edits",
    "ForkAgent",
    "ForkResult",
    "ModelUnreachableError",
    "NoContentError",
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
    "default_client_factory",
    "diff",
    "fork",
    "load_edits",
    "reconstruct",
    "reference_agent_factory",
    "reference_rerun",
    "rerun",
    "run",
]
