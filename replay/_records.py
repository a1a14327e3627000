"""What replay returns: pydantic records, so that the CLI's ``--json``, the dashboard and evals
all see the same shapes."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel


class Origin(BaseModel):
    """Where a recorded session's model came from, as its session span says."""

    agent: str | None = None
    """The agent's name."""
    model_target: str | None = None
    """Which model answered (``flightrec.model_target``), when the agent recorded it: for replays ``url``,
    ``anthropic``, ``agent`` or ``custom``; the reference agent records ``sim``, ``sim-http`` or ``anthropic``."""
    scenario: str | None = None
    """The simulator scenario (``flightrec.scenario``), when there was one."""
    seed: int = 0
    """The simulator seed (``flightrec.seed``)."""
    misbehave: list[str] = []
    """Simulator misbehaviours the session ran with."""
    faults: list[str] = []
    """Simulator faults the session ran with (not replayed: a re-run asks for the decision, not the fault)."""
    config: dict[str, Any] = {}
    """The agent's settings that differ from its defaults (``flightrec.agent.config``), when it recorded them."""
    replay_of: str | None = None
    """For a replay or fork: ``SESSION_ID:SPAN_ID`` of the decision it started from."""
    replay_kind: str | None = None
    """For a replay or fork: ``run``, ``fork`` or ``rerun``."""
    replay_session: str | None = None
    """For a replay or fork: the session it started from."""
    replay_turn: int | None = None
    """For a replay or fork: the turn it started from."""
    attributes: dict[str, Any] = {}
    """Every attribute of the session's first run span, for an agent's own facts (``evals.agent`` keeps
    the eval case's input in ``flightrec.eval.input``)."""


class Decision(BaseModel):
    """One decision: what the model chose at one turn, and what it cost."""

    session_id: str
    """The session it belongs to."""
    turn: int
    """The turn (1-based)."""
    span_id: str
    """The ``chat`` span of the call."""
    trace_id: str
    """Its trace."""
    model: str | None
    """The model asked."""
    action: str | None
    """tool_use | final | handoff | refusal | max_tokens, or ``None`` for a failed call."""
    stop_reason: str | None
    """The API's stop reason."""
    text: str | None
    """The text the model wrote."""
    tool_uses: list[dict[str, Any]]
    """The tools it called, in order: ``{"name": …, "input": …}``."""
    input_tokens: int
    """Input tokens, cached or not."""
    output_tokens: int
    """Output tokens."""
    cost_usd: float | None
    """Cost in USD, ``None`` when unknown."""
    latency_ms: float
    """Wall time of the call."""
    request_sha256: str | None
    """The hash recorded with the call."""
    content_mode: str | None = None
    """How the call's content was captured: ``full``, ``redacted`` or ``none``."""
    not_rebuildable: str | None = None
    """Why its exact request cannot be rebuilt, for a call recorded by other instrumentation."""
    content_pruned_ns: int | None = None
    """When retention removed its content (tokens, cost and the decision stay), if it did."""
    betas: list[str] | None = None
    """The ``anthropic-beta`` values the call was sent with (``llm_calls.betas``), which a re-run sends again."""

    def choice(self) -> tuple[str | None, list[tuple[str, str]]]:
        """What counts as "the same decision": the action and the tool calls with their arguments."""
        return self.action, [(t.get("name") or "", json.dumps(t.get("input"), sort_keys=True)) for t in self.tool_uses]


class Reconstruction(BaseModel):
    """The exact request of one decision, rebuilt from the store."""

    session_id: str
    """The session."""
    turn: int
    """The turn."""
    span_id: str
    """The ``chat`` span of the decision."""
    request: dict[str, Any]
    """The request body: model, system, messages, tools, tool_choice and every parameter."""
    sha256: str
    """The hash of the rebuilt body's canonical JSON."""
    recorded_sha256: str | None
    """``flightrec.request.sha256`` as recorded when the call was made (``None`` for a call recorded by
    other instrumentation)."""
    exact: bool
    """The two hashes match (never, for a request reconstructed from semantic conventions)."""
    decision: Decision
    """What the model decided."""
    origin: Origin
    """Which model the session ran against."""
    reconstructed_from: str | None = None
    """For a call recorded by other instrumentation: the convention whose attributes the request was
    *reconstructed from* (``OpenInference``, ``OpenLLMetry``, ``the anthropic SDK's own spans``, ``the
    OpenTelemetry GenAI conventions``). Such a request is the instrumentation's account of what was sent,
    normalised to the Messages API, not the exact body: there is no recorded hash to verify it by.
    ``None`` for a request rebuilt exactly."""
    notes: list[str] = []
    """For a reconstructed request: what had to be changed or left out to make it a Messages API request
    (tools that were not recorded, unsigned thinking, parts the API does not take …), one line each. For
    a call recorded with content mode ``redacted`` whose content the redactors changed: that it cannot
    be rebuilt exactly."""
    missing: list[str] = []
    """For a reconstructed request: what the Messages API requires and the recording lacks (``model``,
    ``max_tokens``); a re-run needs an edit that supplies it."""
    betas: list[str] | None = None
    """The ``anthropic-beta`` header values the call was sent with (a beta call), which a re-run sends
    again so that the beta features stay on; ``None`` when it had none."""


class Edits(BaseModel):
    """Changes to a request before it is sent again. Message indices refer to the original request."""

    model_config = {"extra": "forbid"}

    system: str | None = None
    """Replace the whole system prompt."""
    system_append: str | None = None
    """Append this text to the system prompt (after a blank line)."""
    system_replace: list[tuple[str, str]] = []
    """Replace each OLD text in the system prompt with NEW (``""`` removes it); OLD must occur."""
    drop_messages: list[int] = []
    """Indices of messages to leave out."""
    replace_messages: dict[int, dict[str, Any]] = {}
    """Index -> the message (``{"role": …, "content": …}``) that takes its place."""
    insert_messages: list[tuple[int, dict[str, Any]]] = []
    """``(index, message)``: insert before the message at index (the message count appends)."""
    tool_results: dict[str, Any] = {}
    """``tool_use_id`` -> the new content of that ``tool_result`` block."""
    add_tools: list[dict[str, Any]] = []
    """Tool definitions to offer as well (a tool of the same name is replaced)."""
    remove_tools: list[str] = []
    """Names of tools to take away."""
    model: str | None = None
    """Ask another model."""
    temperature: float | None = None
    """Set the temperature."""
    max_tokens: int | None = None
    """Set max_tokens."""

    def is_empty(self) -> bool:
        return self == Edits()


class RunResult(BaseModel):
    """A decision re-run with edits, once or over several trials."""

    origin: Decision
    """The recorded decision."""
    replay_session_id: str
    """The new session the re-runs were recorded in (trial k is its turn k)."""
    model_target: str
    """The kind of model that answered: ``url``, ``anthropic``, ``agent`` (the agent's own) or ``custom``."""
    model: str
    """The model that answered, for the user: its URL, "the Anthropic API", or the agent's model."""
    edits: Edits
    """The edits applied."""
    request_sha256: str
    """The hash of the edited request (equal to the origin's when there are no edits)."""
    trials: list[Decision]
    """Each trial's decision, in order."""
    changed: int
    """Trials whose decision (action, tools and arguments) differs from the origin's."""
    reconstructed_from: str | None = None
    """The convention the origin's request was reconstructed from (see ``Reconstruction``), ``None``
    when it was rebuilt exactly."""
    notes: list[str] = []
    """What the reconstruction changed or left out (``Reconstruction.notes``)."""


class Change(BaseModel):
    """One field that differs between two decisions."""

    field: str
    """What differs: action, tools, arguments, text, stop_reason."""
    a: Any
    """The value in A."""
    b: Any
    """The value in B."""
    diff: list[str] = []
    """A line diff, for arguments and text."""


class DecisionDiff(BaseModel):
    """Two decisions side by side."""

    a: Decision
    """The first decision."""
    b: Decision
    """The second decision."""
    same: bool
    """Same action, tools and arguments."""
    changes: list[Change]
    """What differs."""
    delta_input_tokens: int
    """B minus A."""
    delta_output_tokens: int
    """B minus A."""
    delta_cost_usd: float | None
    """B minus A, ``None`` when either cost is unknown."""
    delta_latency_ms: float
    """B minus A."""
    labels: tuple[str, str] = ("A", "B")
    """How to name A and B: ``recorded`` and ``replayed`` when B is a replay or fork of A's session."""


class ContextDiff(BaseModel):
    """What the model saw in two decisions, compared."""

    a: str
    """``SESSION:TURN`` of the first."""
    b: str
    """``SESSION:TURN`` of the second."""
    system_changed: bool
    """The system prompts differ."""
    system_diff: list[str]
    """A unified diff of the system prompts' text."""
    messages_common: int
    """Messages both requests start with: unchanged, or kept with blocks added (``messages_amended``)."""
    messages_amended: list[dict[str, Any]]
    """Messages of the common start that B kept with blocks added or swapped after the first, as a
    compaction attaches its summary to the customer's task: ``{"index", "role", "preview", "added"}``
    (``added``: the new blocks' text, clipped)."""
    messages_kept: int
    """Messages after the common start that B still has unchanged, after A's that it dropped (a
    compaction's kept tail)."""
    messages_replaced: list[dict[str, Any]]
    """Messages only in A that B dropped while it amended a message it kept: the turns a compaction's
    summary replaced, ``{"index", "role", "preview"}`` (then not in ``messages_removed``)."""
    messages_removed: list[dict[str, Any]]
    """Messages only in A, after the common start (and not replaced): ``{"index", "role", "preview"}``."""
    messages_added: list[dict[str, Any]]
    """Messages only in B, after the common start."""
    messages_truncated: list[dict[str, Any]]
    """Messages at the same place whose B text is a shortened A text."""
    tools_added: list[str]
    """Tools offered in B only."""
    tools_removed: list[str]
    """Tools offered in A only."""
    params_changed: dict[str, list[Any]]
    """Other request parameters that differ: name -> [A, B]."""


class TurnPair(BaseModel):
    """One row of a session diff."""

    turn: int
    """The turn."""
    a: str | None
    """A's decision in short, ``None`` when A has no such turn."""
    b: str | None
    """B's decision in short."""
    same: bool
    """The decisions are the same."""


class SessionDiff(BaseModel):
    """Two sessions aligned turn by turn."""

    a: str
    """The first session id."""
    b: str
    """The second session id."""
    turns: list[TurnPair]
    """Turn by turn."""
    first_divergence: int | None
    """The first turn whose decisions differ, ``None`` when they never do."""
    divergence: DecisionDiff | None
    """The decisions at that turn, compared (when both sessions have it)."""
    labels: tuple[str, str] = ("A", "B")
    """How to name A and B: ``recorded`` and ``replayed`` when B is a replay or fork of A."""


class ForkResult(BaseModel):
    """A session carried on from a turn with an edited context."""

    session_id: str
    """The new session."""
    origin: Decision
    """The decision it forked from."""
    status: str
    """``ok``, ``waiting_human``, ``stopped`` (a tool call was not recorded, under ``--tools recorded``),
    ``max_turns``, or ``guard:<name>`` (one of the agent's own guards stopped it, as it would have
    stopped the session in production)."""
    reason: str
    """Why it ended."""
    model_target: str
    """The kind of model that answered (as ``RunResult.model_target``)."""
    model: str
    """The model that answered, for the user."""
    agent: str | None
    """The registered agent whose tools and user ran live, or ``None`` (``--tools recorded``)."""
    decisions: list[Decision]
    """The fork's decisions, in order."""
    recorded_tool_calls: int
    """Tool calls served from the recording (no side effect repeated)."""
    live_tool_calls: int
    """Tool calls that ran live."""
    reconstructed_from: str | None = None
    """The convention the origin's request was reconstructed from (see ``Reconstruction``), ``None``
    when it was rebuilt exactly."""
    notes: list[str] = []
    """What the reconstruction changed or left out (``Reconstruction.notes``)."""


class Divergence(BaseModel):
    """Where a re-execution left the recorded path."""

    turn: int
    """The turn."""
    what: str
    """What differed, in words."""
    expected: Any
    """What the recording has."""
    actual: Any
    """What the agent did."""


class RecordedRun(BaseModel):
    """One run of a recorded session, as ``rerun`` hands it to the agent: a session that waited for
    a human, crashed and resumed, or took a follow-up has several."""

    how: str | None
    """What started it, as the agent recorded it (``flightrec.run``): the reference agent's are
    ``start``, ``resume``, ``approved``, ``rejected`` and ``follow_up``."""
    status: str | None
    """The session's status when the run ended (``flightrec.session.status``)."""
    crashed: bool
    """An exception ended the run (a crash the next run resumed from)."""
    tool_calls_before_end: int
    """Tool executions in the session by the run's end, earlier runs included."""
    opening_message: str | None
    """The newest user message of the run's first request (a follow-up's text)."""
    note: str | None
    """The human's note on an approval or rejection, from the ``human_decision`` event."""


class RecordedToolResult(BaseModel):
    """What a recorded tool call told the model."""

    name: str
    arguments: Any
    """The arguments, parsed from JSON."""
    content: str | None
    """The result text."""
    is_error: bool


class RecordedSession(BaseModel):
    """Everything ``rerun`` gives an agent's re-execution about the recording."""

    session_id: str
    origin: Origin
    runs: list[RecordedRun]
    """The session's runs, oldest first."""
    first_request: dict[str, Any]
    """The first model request, rebuilt exactly."""
    user_messages: list[str] = []
    """What the user wrote (the plain-text user messages of the last request), in order."""
    tool_results: dict[str, RecordedToolResult]
    """Each ``tool_use`` id's last recorded result: an agent whose tools have real side effects
    serves these instead of running them."""


class RerunResult(BaseModel):
    """A session re-executed with every model response and tool result served from the recording."""

    session_id: str
    """The recorded session."""
    turns_checked: int
    """Decisions whose requests were compared."""
    same_path: bool
    """The agent took the recorded path all the way."""
    first_divergence: Divergence | None
    """Where it did not."""
