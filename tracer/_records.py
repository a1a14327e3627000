"""What the store returns: pydantic records, so that the CLI's ``--json``, the dashboard and
later packages all see the same shapes."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


class SessionSummary(BaseModel):
    """One row of ``traces list``."""

    session_id: str
    """The session id (``gen_ai.conversation.id``)."""
    agent: str | None
    """The agent's name (``gen_ai.agent.name``)."""
    start_ns: int
    """Start, in nanoseconds since the epoch."""
    duration_ms: float
    """From the first span's start to the last span's end."""
    status: str
    """``running`` until the session span ends; then ``ok``, ``error`` or what the agent set."""
    status_reason: str | None
    """Why the session ended as it did, when the agent or an error said."""
    content_mode: str | None
    """How content was captured: ``full``, ``redacted`` or ``none``."""
    turns: int
    """Turns (decision plus the tool calls that follow it)."""
    llm_calls: int
    """LLM call attempts, retries included."""
    llm_errors: int
    """Attempts that failed (HTTP errors, timeouts)."""
    tool_calls: int
    """Tool executions."""
    tool_errors: int
    """Tool executions that failed."""
    input_tokens: int
    """Uncached input tokens."""
    output_tokens: int
    """Output tokens."""
    cache_read_tokens: int
    """Input tokens read from the prompt cache."""
    cache_write_tokens: int
    """Input tokens written to the prompt cache."""
    cost_usd: float | None
    """Total cost in USD; ``None`` when any successful call used a model without a known price."""
    cost_usd_known_part: float
    """The cost of the calls whose price is known."""
    parent_session_id: str | None = None
    """The session that started this one (a sub-agent's, a handoff's: ``flightrec.parent_session_id``)."""


class SessionNode(BaseModel):
    """One session of a tree of sessions: its own figures, and those of it with its descendants."""

    session_id: str
    """The session id."""
    parent_session_id: str | None
    """The session that started it; ``None`` for the tree's root (or a root whose parent is not in the store)."""
    depth: int
    """0 for the root, 1 for its children, and so on."""
    agent: str | None
    """The agent's name."""
    status: str
    """As ``SessionSummary.status``."""
    start_ns: int
    """Start, in nanoseconds since the epoch."""
    llm_calls: int
    """Its own LLM call attempts."""
    tokens: int
    """Its own tokens: input (cached or not) plus output."""
    cost_usd: float | None
    """Its own cost; ``None`` when a call of it has no known price."""
    cost_usd_known_part: float
    """Its own cost of the calls whose price is known."""
    subtree_tokens: int
    """Its tokens with its descendants'."""
    subtree_cost_usd: float | None
    """Its cost with its descendants'; ``None`` when a call of any of them has no known price."""
    subtree_cost_usd_known_part: float
    """Its known cost with its descendants'."""


class SessionTree(BaseModel):
    """A session with the sessions it started, theirs, and so on (sub-agents, handoffs), from the root."""

    root_session_id: str
    """The session at the top: the one asked about, or the ancestor it descends from."""
    nodes: list[SessionNode]
    """Every session of the tree, depth first, the root first and siblings by start."""

    @property
    def root(self) -> SessionNode:
        return self.nodes[0]

    def node(self, session_id: str) -> SessionNode | None:
        """The node of ``session_id``, or ``None`` when it is not in the tree."""
        return next((n for n in self.nodes if n.session_id == session_id), None)


class LlmCall(BaseModel):
    """One LLM call attempt: one decision, or a failed try at one."""

    span_id: str
    """The ``chat`` span's id."""
    turn_index: int | None
    """The turn it belongs to (1-based)."""
    attempt: int
    """0 for the first try; retries count up."""
    start_ns: int
    """Start, in nanoseconds since the epoch."""
    latency_ms: float
    """Wall time of the attempt, stream included."""
    ttft_ms: float | None
    """Time to the first streamed byte."""
    status: str
    """``ok`` or ``error``."""
    error_type: str | None
    """The API's error type (``overloaded_error`` …) or the exception's class."""
    http_status: int | None
    """The HTTP status code."""
    model: str | None
    """The requested model."""
    stop_reason: str | None
    """The API's stop reason."""
    action: str | None
    """tool_use | final | handoff | refusal | max_tokens"""
    tools_available: list[str]
    """The tools the model could pick."""
    tools_chosen: list[str]
    """The tools it picked, in order."""
    reasoning: str | None
    """Thinking, or the text written next to tool calls."""
    input_tokens: int | None
    """Uncached input tokens."""
    output_tokens: int | None
    """Output tokens."""
    cache_read_tokens: int | None
    """Input tokens read from the prompt cache."""
    cache_write_tokens: int | None
    """Input tokens written to the prompt cache."""
    cost_usd: float | None
    """Cost in USD; ``None`` when the model's price is unknown or the call failed."""
    context_tokens: dict[str, int]
    """Input tokens by segment: system, tools, history, tool_results, retrieved (estimated split)."""
    context_window: int | None
    """The context window in tokens: the agent's own, where its session recorded one on a ``context_warning``
    or ``context_compacted`` event for the model, else the model's (the price table's)."""
    context_utilisation: float | None
    """Share of that context window the request used, 0..1."""
    request_sha256: str | None
    """Hash of the canonical request JSON, taken when the call was made."""
    content_mode: str | None
    """How content was captured for this call."""
    output_text: str | None
    """The text blocks of the response."""
    tool_uses: list[dict[str, Any]]
    """The ``tool_use`` blocks of the response (id, name, input)."""
    newest_messages: list[dict[str, Any]]
    """The last messages of the request, oldest first (what the model saw most recently)."""
    message_count: int | None
    """How many messages the request carried."""
    betas: list[str] | None = None
    """The beta features the call asked for (its ``anthropic-beta`` header), which a replay asks for again."""


class CallParts(BaseModel):
    """What the store keeps of one LLM call's request, content resolved, and of the span that
    recorded it: what replay reconstructs a request from when it cannot rebuild it exactly."""

    scope: str
    """The recording span's instrumentation scope."""
    attribute_keys: list[str]
    """The names of the recording span's attributes, as stored."""
    params: dict[str, Any] | None
    """The request parameters as recorded (model, max_tokens …)."""
    system: Any
    """The system prompt or instructions; ``None`` when none were recorded."""
    messages: list[Any] | None
    """The messages; ``None`` when none were recorded."""
    tools: list[Any] | None
    """The tool definitions; ``None`` when none were recorded."""
    content_missing: bool
    """Content the call refers to is not in the store."""


class AgentRun(BaseModel):
    """One run of an agent in a session (its root ``invoke_agent`` span): a session that waits
    for a human, crashes and resumes, or takes a follow-up has several."""

    span_id: str
    """The run's span."""
    trace_id: str
    """The run's trace."""
    start_ns: int
    """Start, in nanoseconds since the epoch."""
    end_ns: int
    """End, in nanoseconds since the epoch."""
    status_code: str
    """The span's OpenTelemetry status: ``ERROR`` when an exception ended the run."""
    status_message: str | None
    """The exception's message, when one ended the run."""
    attributes: dict[str, Any]
    """The span's attributes (``flightrec.session.status``, the agent's own …)."""
    tool_calls_before_end: int
    """Tool executions in the session up to this run's end, earlier runs included."""
    first_call_span_id: str | None
    """The run's first LLM call, if it made one."""


class CallOutline(BaseModel):
    """One LLM call attempt in brief, with its response: what a decision-by-decision reader needs,
    without the context accounting ``session_account`` adds."""

    span_id: str
    trace_id: str
    turn_index: int | None
    start_ns: int
    """Start, in nanoseconds since the epoch."""
    status: str
    """``ok`` or ``error``."""
    model: str | None
    action: str | None
    stop_reason: str | None
    input_tokens: int
    """Input tokens, cached or not."""
    output_tokens: int
    cost_usd: float | None
    latency_ms: float
    request_sha256: str | None
    content_mode: str | None
    response: dict[str, Any] | None
    """The response body, when content was captured."""
    not_rebuildable: str | None = None
    """Why the exact request cannot be rebuilt, for a call recorded by other instrumentation."""
    content_pruned_ns: int | None = None
    """When retention removed the call's content (its metadata stays), if it did."""
    http_status: int | None = None
    """The HTTP status the attempt got, when it got one (a timeout gets none)."""
    error_type: str | None = None
    """Why a failed attempt failed (``overloaded_error``, ``APITimeoutError`` …)."""
    betas: list[str] | None = None
    """The ``anthropic-beta`` values it was sent with, which a re-run sends again; ``None`` when none."""


class ToolCallRecord(BaseModel):
    """One tool execution."""

    span_id: str
    """The ``execute_tool`` span's id."""
    turn_index: int | None
    """The turn it belongs to."""
    tool_name: str
    """The tool's name."""
    tool_call_id: str | None
    """The id of the ``tool_use`` block it answers."""
    start_ns: int = 0
    """Start, in nanoseconds since the epoch."""
    status: str
    """``ok`` or ``error``."""
    error_type: str | None
    """Error class or code, on failure."""
    error_message: str | None
    """Error message, on failure."""
    arguments: str | None
    """Arguments as JSON text (absent with content mode ``none``)."""
    result: str | None
    """Result as text (absent with content mode ``none``)."""
    latency_ms: float
    """Wall time of the execution."""
    idempotency_key: str | None
    """The key that makes a side effect safe to retry."""
    retries: int | None
    """Retries the tool took."""
    circuit_state: str | None
    """The circuit breaker's state when it ran."""


class Turn(BaseModel):
    """One turn: its decisions (attempts included) and the tool calls they led to."""

    index: int
    """1-based."""
    llm_calls: list[LlmCall]
    """Attempts in order; the last successful one is the decision."""
    tool_calls: list[ToolCallRecord]
    """Tool executions in order."""
    events: list[dict[str, Any]]
    """Events recorded on the turn (guards that fired …)."""


class SessionAccount(BaseModel):
    """A session decision by decision: what ``traces show`` prints."""

    session: SessionSummary
    """The session's totals."""
    turns: list[Turn]
    """Every turn in order."""


class VerifyResult(BaseModel):
    """The outcome of rebuilding every stored request and comparing hashes."""

    total: int
    """Calls checked."""
    exact: int
    """Calls rebuilt to the recorded hash."""
    failures: list[dict[str, str]]
    """Calls that were not: span id, session id and why."""
    not_rebuildable: list[dict[str, str]] = []
    """Calls recorded by other instrumentation, which kept no exact request: span id, session id and why.
    Counted in ``total``, never in ``exact`` nor as failures."""
    pruned: list[dict[str, str]] = []
    """Calls whose content retention removed (``flightrec prune --content-only``, ``serve --retain-content``):
    span id, session id and when. Counted in ``total``, never in ``exact`` nor as failures."""


class PruneResult(BaseModel):
    """What one prune step or one session's deletion removed from the store: counts of rows, for
    the command's report (and an audit record)."""

    sessions: int = 0
    """Sessions removed whole, or whose content was removed (``content_only``)."""
    content_only: bool = False
    """Only content went: the sessions' metadata (tokens, costs, decisions, spans) stays."""
    spans: int = 0
    """Raw spans deleted."""
    turns: int = 0
    """Turns deleted, or whose events lost their attributes."""
    llm_calls: int = 0
    """LLM calls deleted, or whose content was removed."""
    tool_calls: int = 0
    """Tool calls deleted, or whose arguments, results and error messages were removed."""
    chain_nodes: int = 0
    """``message_chain`` nodes deleted (nodes that a kept call still needs stay)."""
    content: int = 0
    """``content`` bodies deleted (bodies that a kept call still references stay)."""
    eval_results: int = 0
    """Eval results unlinked from a deleted session (the result stays; its ``session_id`` becomes NULL)."""
    alerts_changed: int = 0
    """Alerts that cited these sessions and lost those citations (and their evidence, when it came from them)."""
    alerts_deleted: int = 0
    """Alerts deleted because the deleted session was all they were observed in (``delete`` only)."""
    more: bool = False
    """A prune step stopped at its batch size: more sessions are due."""

    def plus(self, other: PruneResult) -> PruneResult:
        """The counts of two steps together (``more`` is the later step's)."""
        counts = {k: getattr(self, k) + getattr(other, k) for k, v in self if isinstance(v, int)
                  and not isinstance(v, bool)}
        return self.model_copy(update={**counts, "more": other.more})

    def removed(self) -> bool:
        """Whether any row went, or changed."""
        return any(v for k, v in self if k not in ("content_only", "more"))


class EvalRunRecord(BaseModel):
    """One stored eval run: a dataset run against one agent variant, every case K times."""

    run_id: str
    """The run's id."""
    started_ns: int
    """Start, in nanoseconds since the epoch."""
    ended_ns: int
    """End, in nanoseconds since the epoch."""
    dataset: str
    """The dataset's name."""
    dataset_sha256: str
    """Hash of the dataset's cases as run, to tell when a comparison spans two datasets."""
    agent: str
    """The agent under test (``reference`` or ``MODULE:FACTORY``)."""
    settings: dict[str, str]
    """The variant: ``--set`` values."""
    trials: int
    """Trials per case."""
    seed: int
    """The run's seed (each trial's seed derives from it)."""
    case_tags: list[str]
    """Only cases with one of these tags ran; empty means all."""
    cases: int
    """Cases run."""
    passed_trials: int
    """Trials that passed."""
    total_trials: int
    """Trials run."""
    mean_score: float
    """Mean weighted score over trials."""
    cost_usd: float | None
    """Total cost; ``None`` when any trial's cost is unknown."""
    wall_s: float
    """Wall time of the run."""
    labels: list[str] = []
    """Labels that point at this run (``baseline`` …)."""


class EvalResultRecord(BaseModel):
    """One trial of one case in an eval run."""

    run_id: str
    """The run."""
    case_id: str
    """The case."""
    trial: int
    """0-based."""
    session_id: str | None
    """The traced session (``None`` when the agent failed before one started)."""
    tags: list[str]
    """The case's tags."""
    passed: bool
    """Every scorer passed."""
    score: float
    """The weighted mean of the scores, 0..1."""
    scores: list[dict[str, Any]]
    """Each scorer's result: scorer, value, passed, weight, reason, cost_usd, turn (the turn it judged; no
    such key in results stored before scores carried it)."""
    error: str | None
    """Why the trial could not run or be scored, when it could not."""
    status: str | None
    """How the session ended."""
    turns: int | None
    """Turns taken."""
    cost_usd: float | None
    """Cost in USD."""
    latency_ms: float | None
    """Wall time of the session."""


class AlertRecord(BaseModel):
    """One alert. Alerts with the same fingerprint are one alert seen again: its count and
    last-seen time go up, and its evidence is the latest observation's."""

    alert_id: str
    """A short stable id derived from the fingerprint (``flightrec alerts show ID``)."""
    fingerprint: str
    """What makes two observations the same alert: the detector and its subject (agent, route,
    tool and arguments …), hashed."""
    detector: str
    """The detector that raised it (``loop.calls``, ``cost.anomaly`` …)."""
    family: str
    """The detector's family."""
    severity: str
    """``info``, ``warning`` or ``critical``."""
    title: str
    """One line: what happened, with the numbers."""
    agent: str | None
    """The agent it concerns."""
    route: str | None
    """The route or scenario it concerns, when the detector groups by one."""
    session_id: str | None
    """The latest session it was seen in."""
    turns: list[int]
    """The turns of that session it points at."""
    session_ids: list[str]
    """Sessions it was seen in, newest last (at most 20)."""
    evidence: dict[str, Any]
    """What the detector saw: the repeating calls, the numbers, the baseline and how it was built."""
    status: str
    """``open`` until someone acknowledges or resolves it; a resolved alert seen again reopens."""
    first_seen_ns: int
    """When it was first observed (the session's end, for a batch run)."""
    last_seen_ns: int
    """When it was last observed."""
    count: int
    """Distinct observations (sessions, or windows for fleet-wide detectors)."""


class SessionScore(BaseModel):
    """What one scorer of the online scoring policy made of a production session (``evals.OnlineScorer``)."""

    session_id: str
    """The session."""
    scorer: str
    """The scorer's label (its spec's ``name``, else its type)."""
    version: str
    """Which scorer it was: the first 12 hex digits of the SHA-256 of its spec, so that a changed rubric or
    threshold shows as a new version in trends."""
    value: float | None
    """0..1, or ``None`` when it was skipped (a judge over its hourly budget)."""
    passed: bool | None
    """Whether the session passed it (``None``: skipped)."""
    weight: float
    """Its weight in the session's mean."""
    reason: str
    """Why, with the evidence; for a skipped judge, why it was skipped."""
    scored_ns: int
    """When it was scored."""
    cost_usd: float | None = None
    """What scoring cost (a judge's model call); ``None`` when it called no model, or an unpriced one."""
    chosen_by: str = "sample"
    """Why the session was scored: ``sample`` (the policy's random share; all of them with ``flightrec eval
    score --all``) or ``alert`` (it raised an alert: not a random pick, so ``score.drop`` leaves it out)."""


class OutcomeRecord(BaseModel):
    """What became of a session after the fact: the customer's problem was (not) solved, a rating, a note.

    Recorded by ``Recorder.outcome``, ``Store.record_outcome``, ``flightrec outcome`` or a span with
    ``flightrec.outcome.*`` attributes from any process. A session's outcome is its newest record."""

    outcome_id: str
    """Unique per record (a span's trace and span id, when it came as a span)."""
    session_id: str
    """The session it is the outcome of."""
    at_ns: int
    """When it was recorded."""
    resolved: bool | None
    """Whether the customer's problem was solved; ``None`` when only a score was given."""
    score: float | None
    """A rating 0..1 (a thumbs-up is 1), when one was given."""
    note: str | None
    """Free text: why, a ticket id."""
    source: str
    """How it came: ``api``, ``cli``, ``dashboard``, ``otlp`` (or the span's ``flightrec.outcome.source``)."""
    actor: str | None
    """Who recorded it, when a person did."""


class ReviewRecord(BaseModel):
    """A session in the review queue, and the person's verdict once reviewed."""

    session_id: str
    """The session."""
    queued_by: str
    """Why it is in the queue: ``sample`` (the scoring policy's review share), ``alert`` (it raised one),
    ``score`` (an online scorer failed it) or ``hand``."""
    queued_ns: int
    """When it was queued."""
    verdict: str | None
    """``good`` or ``bad``; ``None`` while it waits."""
    category: str | None
    """The failure category, from the policy's list, for a bad session."""
    note: str | None
    """The reviewer's note."""
    reviewer: str | None
    """Who reviewed it."""
    reviewed_ns: int | None
    """When."""


class AuditEntry(BaseModel):
    """One line of the audit log (``flightrec audit list``): an action a person took on stored data."""

    at_ns: int
    """When, in nanoseconds since the epoch."""
    actor: str
    """Who: ``--actor``, ``$FLIGHTREC_ACTOR`` or the operating-system user (see ``tracer._audit``)."""
    action: str
    """What: ``acknowledge``, ``resolve``, ``reopen``, ``replay``, ``fork``, ``export``, ``label``, ``prune``,
    ``delete``, ``outcome``, ``review``, ``approve`` or ``reject``."""
    target: str
    """The object's id: an alert, a session, an eval run, or a store for ``prune``."""
    via: str
    """From where: ``cli``, ``dashboard`` or ``api``."""
    detail: dict[str, Any]
    """Ids and settings that say more (the new session of a fork, the label moved …); never content, since
    the audit log outlives pruning."""
