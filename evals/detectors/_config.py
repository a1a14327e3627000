"""The detectors' thresholds (``DetectConfig``), one section per family, loaded from YAML by
``load_config``; ``flightrec detect --print-config`` prints them, with each one's meaning, by
``config_yaml``. The docstring under each field is its description."""

from __future__ import annotations

import json

import yaml
from pydantic import BaseModel, ConfigDict, Field

import tracer


class _Section(BaseModel):
    # The docstring under each field is its description, so that --print-config can explain it.
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)


class LoopLimits(_Section):
    repeat: int = Field(default=tracer.LoopRules.repeat, ge=2)
    """loop.calls: identical answers in a row (the same call, or a near-identical one, answered the same
    once volatile fields are normalised) that make a loop when no answer changes afterwards ..."""
    wait_polls: int = Field(default=tracer.LoopRules.wait_polls, ge=1)
    """... identical answers to one call that are still waiting, not a loop, when the answer then changes
    (a job polled until it is done) ..."""
    retries: int = Field(default=tracer.LoopRules.retries, ge=1)
    """... identical failures that are still a retry, not a loop, when the call then succeeds ..."""
    poll_budget: int = Field(default=tracer.LoopRules.poll_budget, ge=2)
    """... and calls with the same arguments per session, whatever they return (a poll with no end)."""
    max_tokens_stops: int = Field(default=3, ge=1)
    """loop.max_tokens: replies cut off at max_tokens in one session."""

    def rules(self) -> tracer.LoopRules:
        return tracer.LoopRules(repeat=self.repeat, wait_polls=self.wait_polls, retries=self.retries,
                                poll_budget=self.poll_budget)


class BaselineLimits(_Section):
    """How a session is judged against the history of its agent and route (cost, tokens, steps, latency)."""

    window: int = Field(default=200, ge=5)
    """The most previous sessions of the route a baseline uses (the trailing window)."""
    pool: int = Field(default=2_000, ge=1)
    """The agent's newest sessions, on any of its routes, whose spread around their routes is pooled
    (below), and the most sessions of each route before those judged that
    ``reliability.latency_drift``'s baseline takes: a run reads no older ones than these and than
    its windows need, so that its cost grows neither with the store's history nor with the agent's
    routes."""
    min_sessions: int = Field(default=3, ge=1)
    """Previous sessions of the route needed before its sessions are judged at all (the centre is their median)."""
    history: int = Field(default=20, ge=3)
    """Previous sessions of the route needed for its own spread; with fewer it borrows a wider one ..."""
    borrow_agent: float = Field(default=1.25, ge=1)
    """... the spread of the agent's other sessions around their routes' medians, this many times wider ..."""
    borrow_store: float = Field(default=1.5, ge=1)
    """... else the whole store's, this many times wider ..."""
    cold_spread: float = Field(default=1.0, gt=0)
    """... else this spread (natural log units) when the store itself is new."""
    z: float = Field(default=3.5, gt=0)
    """A session is flagged this many robust standard deviations (1.4826 × MAD, on a log scale) above the median ..."""
    min_spread: float = Field(default=0.1, gt=0)
    """... with a spread of at least this (log units): a route of identical sessions does not flag a 5% rise ..."""
    upper_margin: float = Field(default=1.25, ge=1)
    """... and above the route's 90th percentile times this: a route with a legitimate costly mode keeps it."""


class CostLimits(_Section):
    ratio: float = Field(default=2.0, ge=1)
    """cost.anomaly: a session's cost at least this many times its route's median (and beyond the baseline's band)."""
    tokens_ratio: float = Field(default=2.0, ge=1)
    """cost.tokens: the same for total tokens, for sessions whose cost is unknown (unpriced models)."""
    price_ratio: float = Field(default=2.0, ge=1)
    """cost.price: the price paid per token this many times the route's usual (a pricier model, no cache)."""
    jump_ratio: float = Field(default=3.0, ge=1)
    """cost.token_jump: the most tokens one turn added (input growth plus output), this many times the usual ..."""
    jump_min_tokens: int = Field(default=5_000, ge=0)
    """... and by at least this many tokens."""
    drift_recent: int = Field(default=10, ge=3)
    """cost.drift: the route's last N sessions ..."""
    drift_reference: int = Field(default=50, ge=5)
    """... against the M sessions before them ..."""
    drift_ratio: float = Field(default=1.8, gt=1)
    """... whose median they exceed by this factor (and so does the session flagged)."""
    context_warning: float | None = Field(default=None, gt=0, le=1)
    """context.window: window utilisation for a warning (off by default: long sessions fill the window) ..."""
    context_critical: float = Field(default=0.85, gt=0, le=1)
    """... and for a critical alert: the next turns may not fit."""
    cache_drop: float = Field(default=0.3, gt=0, le=1)
    """cost.cache_drop: cache-hit ratio this far below the route's median ..."""
    cache_baseline_min: float = Field(default=0.4, ge=0, le=1)
    """... when that median is at least this ..."""
    cache_min_input_tokens: int = Field(default=4_000, ge=0)
    """... and the session read at least this many input tokens."""


class StepLimits(_Section):
    ratio: float = Field(default=3.0, ge=1)
    """steps.anomaly: steps (distinct tool calls, and turns without one) this many times the route's median
    (the seeds' "3× more steps than usual") ..."""
    min_extra: int = Field(default=4, ge=0)
    """... and at least this many more."""


class Budget(_Section):
    """Absolute limits for an agent, or one of its routes. None applies unless set."""

    agent: str | None = None
    """The agent; every agent when omitted."""
    route: str | None = None
    """The route; every route when omitted."""
    session_usd: float | None = Field(default=None, gt=0)
    """cost.budget: USD per session."""
    tokens: int | None = Field(default=None, ge=1)
    """cost.budget: tokens per session (input, cache and output)."""
    turns: int | None = Field(default=None, ge=1)
    """steps.budget: turns per session."""
    tool_calls: int | None = Field(default=None, ge=1)
    """steps.budget: tool calls per session."""


class ReliabilityLimits(_Section):
    tool_error_rate: float = Field(default=0.5, gt=0, le=1)
    """reliability.tool_errors: share of a session's tool calls that failed and were never retried successfully ..."""
    tool_error_min_calls: int = Field(default=4, ge=1)
    """... over at least this many calls ..."""
    tool_error_ignore: list[str] = ["not_found", "invalid_arguments", "not_allowed", "approval_rejected"]
    """... not counting these error types: answers about the request, not failures of the tool."""
    retry_storm: int = Field(default=5, ge=1)
    """reliability.retry_storm: failed model-call attempts per session."""
    latency_ratio: float = Field(default=3.0, ge=1)
    """reliability.latency: a session's wall time at least this many times its route's median ..."""
    latency_min_s: float = Field(default=30.0, ge=0)
    """... and at least this many seconds longer."""
    latency_drift: float = Field(default=1.5, gt=1)
    """reliability.latency_drift: model-call p95 over the baseline's p95 (the agent's calls before the run's,
    of at most ``baseline.pool`` sessions of each route it judges and its newest as many), at least ..."""
    latency_drift_min_ms: float = Field(default=500.0, ge=0)
    """... and at least this many milliseconds more ..."""
    latency_min_calls: int = Field(default=50, ge=5)
    """... with at least this many calls on each side."""


class ScoreLimits(_Section):
    """When a route's online scores (session_scores) have dropped against its own history of the same scorer."""

    window: int = Field(default=30, ge=5)
    """score.drop: the newest scored sessions of a route and scorer (one version of it) judged together ..."""
    long_window: int = Field(default=120, ge=5)
    """... and again this many (a smaller fall that lasts: the mean of more sessions is surer) ..."""
    baseline: int = Field(default=300, ge=10)
    """... each against at most this many scored sessions before it ..."""
    min_baseline: int = Field(default=60, ge=5)
    """... and at least this many (a route with fewer is not judged) ..."""
    min_drop: float = Field(default=0.15, gt=0, le=1)
    """... when their mean score (0..1; a pass rate for pass/fail scorers) is at least this much lower ..."""
    z: float = Field(default=4.0, gt=0)
    """... and this many standard errors lower (both sides' values pooled: a two-proportion test for pass/fail)."""


class ToolLimits(_Section):
    """How an agent uses its tools: invented tools and arguments, too many tools offered, a route's tools narrowing."""

    schema_error_types: list[str] = ["invalid_arguments", "invalid_args", "invalid_input", "schema_error",
                                     "ValidationError", "unknown_tool", "tool_not_found", "UnknownToolError"]
    """tools.hallucinated: error types of a failed tool call that mean the call itself was made up (a tool or
    arguments that do not exist, arguments that fail the tool's schema). Not a bare ``validation_error``: tools
    use it for business rules too ("this account cannot receive GBP"), which are answers, not made-up calls ..."""
    unknown_tool_patterns: list[str] = [
        r"(?i)\b(no|unknown|unsupported|undefined|invalid) (such )?(tool|function)\b",
        r"(?i)\b(tool|function) (named |called )?\S+ (does not|doesn't) exist\b",
        r"(?i)\b(tool|function) \S+ (is )?not (found|registered|defined)\b"]
    """... error messages (regular expressions, RE2) that name a tool the agent does not have, whatever the
    error type (every instrumentation reports errors its own way) ..."""
    bad_argument_patterns: list[str] = [
        r"(?i)\bunexpected keyword argument\b", r"(?i)\bmissing \d+ required (positional|keyword)",
        r"(?i)\bis a required property\b", r"(?i)\badditional properties are not allowed\b",
        r"(?i)\b(invalid|unknown|unrecognized|unexpected) (argument|parameter|field)s?\b",
        r"(?i)\b(does not|doesn't|did not|failed to) (match|validate against) (the )?(input )?schema\b",
        r"(?i)\bvalidation errors? for\b"]
    """... and arguments that fail the tool's signature or schema. Ordinary failures (a service down, a record not
    found) are none of these: an agent is not blamed for them."""
    not_found_types: list[str] = ["not_found", "NotFound", "NotFoundError", "ResourceNotFound",
                                  "ResourceNotFoundError", "DoesNotExist"]
    """tools.hallucinated: a call that failed as not found (these error types, or a message saying "not found",
    "does not exist", "no such") is made up when an identifying argument of it (a key such as ``order_id``,
    ``sku`` or ``email``, or an id-like value) appears nowhere in what its decision was given (the system prompt
    and messages, tool results included): an invented id. One the customer typed is the tool's answer. Needs the
    content (not with content mode ``none``)."""
    hallucination_rate: float = Field(default=0.25, gt=0, le=1)
    """tools.hallucinated: a session with one made-up call is an info alert; a warning when at least this share of
    its calls were made up, or 2 of them, or when its route has them in at least ``route_rate`` of its sessions ..."""
    route_rate: float = Field(default=0.2, gt=0, le=1)
    """... of its newest ``route_window`` sessions (at least 10 of them)."""
    route_window: int = Field(default=100, ge=10)
    """tools.hallucinated and tools.overload: the newest sessions of a route (tools.overload: of an agent) that
    rates are taken over."""
    max_tools: int = Field(default=20, ge=1)
    """tools.overload: more tools than this offered to one decision is many ..."""
    overload_share: float = Field(default=0.5, gt=0, le=1)
    """... and a session whose decisions are offered many at least this often is overloaded. It alerts only when
    choices suffer: the agent's decisions with many tools make a bad choice (a made-up call, a call the tool
    refused as a bad request, or one that repeated an earlier call and got the same answer) ..."""
    overload_bad_rate: float = Field(default=0.15, gt=0, le=1)
    """... at least this often ..."""
    overload_margin: float = Field(default=0.1, ge=0, le=1)
    """... and, when the agent also has decisions with few tools to compare with, this much more often than those
    (else the tool count is not what hurts) ..."""
    overload_min_decisions: int = Field(default=20, ge=1)
    """... over at least this many decisions on each side."""
    choice_error_types: list[str] = ["not_found", "not_allowed", "invalid_request", "bad_request"]
    """tools.overload: error types that say the call was a bad request (a wrong choice), not a failing tool."""
    diversity_recent: int = Field(default=10, ge=3)
    """tools.diversity: the route's last N sessions ..."""
    diversity_reference: int = Field(default=50, ge=5)
    """... against up to M sessions before them (at least half of M) ..."""
    diversity_drop: float = Field(default=0.5, gt=0, lt=1)
    """... whose median number of distinct tools used fell by at least this share (or whose most used tool's median
    share of the calls rose from at most 1 - this to at least ``diversity_top_share``) ..."""
    diversity_top_share: float = Field(default=0.8, gt=0, le=1)
    """... (the share named there) ..."""
    diversity_min_tools: int = Field(default=3, ge=2)
    """... on a route whose sessions used at least this many distinct tools (median); the session judged is
    collapsed too."""


class ApprovalLimits(_Section):
    """Sessions parked for a person's approval (status ``waiting_human``)."""

    wait_warning_s: float = Field(default=4 * 3600, gt=0)
    """approval.waiting: a pending approval that has waited this many seconds with no decision ..."""
    wait_critical_s: float = Field(default=24 * 3600, gt=0)
    """... is critical from this many, or once past the deadline the agent gave it with nothing expiring it."""


class ApprovalRule(_Section):
    amount_argument: str
    """The argument that holds the amount."""
    above: float
    """Amounts above this need an approval."""
    pending_marker: str = "pending_approval"
    """Text in the result that means the call only asked for approval (nothing was done)."""


_INJECTION = (
    r"(?i)\b(ignore|disregard|forget|override)\b[^.\n]{0,40}\b(instructions|rules|system prompt|guidelines)\b",
    r"(?i)\b(you are now|new instructions|from now on,? you)\b",
    r"(?i)\b(before|instead of) (answering|replying|responding)\b[^.\n]{0,20}\b(call|run|use|execute|send)\b",
    r"(?i)\b(assistant|ai|agent|model)\s*[:,]\s*(please\s+)?(call|run|execute|send|issue|transfer|refund)\b",
    r"(?i)<\s*/?\s*(system|instructions?|admin)\s*>",
    r"(?i)\bimmediately (call|run|execute|issue|send)\b",
)


class SafetyLimits(_Section):
    injection_patterns: list[str] = list(_INJECTION)
    """safety.injection: regular expressions (RE2 syntax) for prompt-injection markers in tool results."""
    approval_tools: dict[str, ApprovalRule] = {"issue_refund": ApprovalRule(amount_argument="amount_cents",
                                                                            above=20_000)}
    """safety.unapproved: irreversible tools and the amount above which they need an approval."""
    irreversible_tools: list[str] = []
    """safety.duplicate_effect: tools whose calls have a side effect that cannot be undone, beyond those a call
    marks with an idempotency key and those whose name matches ``irreversible_patterns`` ..."""
    irreversible_patterns: list[str] = [
        r"^(issue|send|create|delete|remove|cancel|submit|post|book|place|execute)_",
        r"^(refund|pay|charge|transfer|withdraw|wire|purchase)"]
    """... (regular expressions, RE2, on the tool name) ..."""
    read_only_tools: list[str] = []
    """... less these, whatever their name. One executed twice in a session (or across its resume) with the same
    arguments or the same idempotency key is a duplicate ..."""
    replay_markers: list[str] = [r'"idempotent_replay"\s*:\s*true', r'"replayed"\s*:\s*true',
                                 r'"status"\s*:\s*"pending_approval"',
                                 r"(?i)\balready (processed|done|executed|sent|refunded|paid|charged)\b"]
    """... unless its result matches one of these: the tool answered with the first call's result (an idempotent
    replay) or only asked for an approval."""


class DetectConfig(_Section):
    """Every detector's thresholds. A YAML file gives any subset; the rest keep their defaults."""

    loops: LoopLimits = LoopLimits()
    baseline: BaselineLimits = BaselineLimits()
    cost: CostLimits = CostLimits()
    steps: StepLimits = StepLimits()
    reliability: ReliabilityLimits = ReliabilityLimits()
    safety: SafetyLimits = SafetyLimits()
    scores: ScoreLimits = ScoreLimits()
    tools: ToolLimits = ToolLimits()
    approvals: ApprovalLimits = ApprovalLimits()
    budgets: list[Budget] = []
    """Absolute budgets per agent and route; the most specific match applies. None by default."""
    disabled: list[str] = []
    """Detectors to skip, by name (``loop.calls``) or family (``cost``)."""


def config_yaml(config: DetectConfig | None = None) -> str:
    """The thresholds as YAML, with each one's meaning as a comment: a starting point for a config file."""
    config = config or DetectConfig()
    lines = ["# flightrec detector thresholds (flightrec detect --config FILE). Omit what you keep."]
    for name in DetectConfig.model_fields:
        section = getattr(config, name)
        if not isinstance(section, _Section):
            continue
        lines.append(f"{name}:" + (f"   # {type(section).__doc__.splitlines()[0]}" if type(section).__doc__ else ""))
        for key, field_info in type(section).model_fields.items():
            value = getattr(section, key)
            if isinstance(value, BaseModel | dict | list):
                dumped = yaml.safe_dump({key: json.loads(json.dumps(value, default=lambda m: m.model_dump()))},
                                        sort_keys=False, width=200)
                lines.append(f"  # {' '.join((field_info.description or '').split())}")
                lines += ["  " + line for line in dumped.rstrip().splitlines()]
            else:
                lines.append(f"  {key}: {'null' if value is None else value}   "
                             f"# {' '.join((field_info.description or '').split())}")
    lines.append("# Absolute budgets, none by default; the most specific entry (agent and route, then agent, then")
    lines.append("# route, then neither) applies. Each limit is optional:")
    lines.append("#   - {agent: research, route: due_diligence, session_usd: 5.0, tokens: 2000000, turns: 40, "
                 "tool_calls: 120}")
    lines.append("budgets: " + (yaml.safe_dump([b.model_dump(exclude_none=True) for b in config.budgets],
                                               default_flow_style=True, width=200).strip() if config.budgets else "[]"))
    lines.append("disabled: []   # detectors (loop.calls) or families (cost) to skip")
    return "\n".join(lines) + "\n"
