"""From finished spans to store rows: raw spans, content-addressed content, normalised tables.

This runs off the agent's thread (in the exporter's worker, and later in the collector). A span
from any OpenTelemetry source is kept in ``spans`` as it came, minus the bulky content
attributes, which move into ``content`` (message by message, tool by tool) so that storage
grows linearly with session length. LLM, tool and agent spans of other instrumentation
(``_foreign.py``) are normalised into the same tables, marked as not rebuildable.
"""

from __future__ import annotations

import json
import logging
import operator
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan

from . import _attributes as A
from . import _chat_attributes as _chat
from . import _foreign
from ._canonical import canonical_json, content_key
from ._decision import ToolKinds, context_chars, context_tokens
from ._loops import call_keys
from ._origin import SessionMarks, marks_of
from ._pricing import PriceTable, Usage
from ._split import Splitter
from ._validate import BAD_BODY

log = logging.getLogger("flightrec")
_FOREIGN_SESSIONS = 100_000
"""Sessions of other instrumentation whose last turn and recent calls an ingestor remembers."""
_TRACES = 200_000
"""Traces whose session an ingestor remembers, so that spans sent later join it."""
_CALLS_PER_SESSION = 64
"""Recent LLM calls of a foreign session that its tool calls are matched against."""
LLM_CALL_COLUMNS = (
    "span_id", "trace_id", "session_id", "turn_index", "attempt", "start_ns", "end_ns", "status", "error_type",
    "http_status", "stream", "ttft_ms", "model", "response_model", "response_id", "stop_reason", "action",
    "tools_available", "tools_chosen", "reasoning", "input_tokens", "output_tokens", "cache_read_tokens",
    "cache_write_tokens", "cost_usd", "ctx_system_tokens", "ctx_tools_tokens", "ctx_history_tokens",
    "ctx_tool_results_tokens", "ctx_retrieved_tokens", "ctx_window", "ctx_utilisation", "content_mode",
    "request_sha256", "request_params", "system_ref", "messages_ref", "message_count", "tool_refs",
    "response_body", "not_rebuildable", "betas")
"""The columns of an ``llm_calls`` row as ingest builds it, in the schema's order."""
_IN_COLUMN_ORDER = operator.itemgetter(*LLM_CALL_COLUMNS)
_HELD_VALUES = operator.itemgetter(*(LLM_CALL_COLUMNS.index(c) for c in _chat.COLUMNS))
"""The values of an ``llm_calls`` row that a chat span's attributes are put back from."""
_SPANS = 100_000
"""Spans (trace and span id) an ingestor remembers having built, so that a retried request is not
counted twice. Retries come within seconds; older duplicates are caught by the store."""


@dataclass(frozen=True)
class _CallMark:
    """What a foreign LLM call leaves for the tool calls that follow it to find their turn."""

    span_id: str
    turn: int
    start_ns: int
    tool_use_ids: frozenset[str]


@dataclass
class SpanRecord:
    """A finished span in a neutral form, whatever produced it (the SDK or an OTLP request)."""

    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    kind: str
    start_ns: int
    end_ns: int
    status_code: str
    status_message: str | None
    attributes: dict[str, Any]
    events: list[dict[str, Any]] = field(default_factory=list)
    links: list[dict[str, Any]] = field(default_factory=list)
    resource: dict[str, Any] = field(default_factory=dict)
    scope: str = ""


_RESOURCES: dict[int, tuple[Resource, dict[str, Any]]] = {}


def _resource_dict(resource: Resource | None) -> dict[str, Any]:
    # A process has one or a few resources, shared by all its spans: convert each once. Keyed by
    # identity (holding the object keeps the id unique): Resource.__hash__ serialises it to JSON.
    if resource is None:
        return {}
    cached = _RESOURCES.get(id(resource))
    if cached is None:
        if len(_RESOURCES) >= 64:
            _RESOURCES.clear()
        cached = _RESOURCES[id(resource)] = (resource, dict(resource.attributes))
    return cached[1]


def _plain_dict(attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    # A finished span's attributes are a read-only view of the SDK's BoundedAttributes, whose copy()
    # runs in C; dict() of the view would call it back key by key (twenty times slower on a chat
    # span), and this runs on the agent's thread (the spill). dict() of the copy: older SDKs keep an
    # OrderedDict, and the spill takes plain values only.
    copy = getattr(attributes, "copy", None)
    return dict(copy()) if copy is not None else dict(attributes or {})


def from_readable(span: ReadableSpan) -> SpanRecord:
    """Converts an SDK span, as a span processor receives it."""
    ctx = span.context
    parent = span.parent
    return SpanRecord(
        trace_id=f"{ctx.trace_id:032x}",
        span_id=f"{ctx.span_id:016x}",
        parent_span_id=f"{parent.span_id:016x}" if parent is not None else None,
        name=span.name,
        kind=span.kind.name,
        start_ns=span.start_time or 0,
        end_ns=span.end_time or span.start_time or 0,
        status_code=span.status.status_code.name,
        status_message=span.status.description,
        attributes=_plain_dict(span.attributes),
        events=[
            {"name": e.name, "time_ns": e.timestamp, "attributes": dict(e.attributes or {})} for e in span.events
        ],
        links=[
            {"trace_id": f"{link.context.trace_id:032x}", "span_id": f"{link.context.span_id:016x}",
             "attributes": dict(link.attributes or {})}
            for link in span.links
        ],
        resource=_resource_dict(span.resource),
        scope=span.instrumentation_scope.name if span.instrumentation_scope else "",
    )


def _json(value: Any) -> str:
    try:
        return orjson.dumps(value, default=_plain).decode()
    except TypeError:  # an attribute value orjson cannot take (an int beyond 64 bits)
        return json.dumps(value, ensure_ascii=False, default=str)


def _plain(value: Any) -> Any:
    if isinstance(value, (set, frozenset)):
        return list(value)
    return str(value)


_SESSION_SUMS = (
    "turns", "llm_calls", "llm_errors", "tool_calls", "tool_errors", "input_tokens", "output_tokens",
    "cache_read_tokens", "cache_write_tokens", "unpriced_calls",
)
_BIGINT_SUMS = frozenset({"input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens"})
"""The sums a session holds as BIGINT (the others are INTEGER)."""


@dataclass
class SessionDelta:
    """What one batch adds to a session's row. Counts add up across batches."""

    session_id: str
    start_ns: int
    end_ns: int
    trace_id: str | None = None
    agent: str | None = None
    ended: bool = False
    status: str | None = None
    status_reason: str | None = None
    content_mode: str | None = None
    cost_usd: float = 0.0
    sums: dict[str, int] = field(default_factory=lambda: dict.fromkeys(_SESSION_SUMS, 0))
    marks: SessionMarks | None = None
    """Origin, route and tags from the session's root span (``tracer._origin``), completed by the route and
    tags other instrumentation puts on any span or on its resource; ``None``: none seen yet."""


@dataclass
class Batch:
    """Rows for one transaction, table by table, in column order of the schema."""

    spans: list[tuple[Any, ...]] = field(default_factory=list)
    llm_calls: list[tuple[Any, ...]] = field(default_factory=list)
    tool_calls: list[tuple[Any, ...]] = field(default_factory=list)
    turns: list[tuple[Any, ...]] = field(default_factory=list)
    content: dict[str, tuple[str, str]] = field(default_factory=dict)
    chain: dict[str, tuple[str | None, str, str]] = field(default_factory=dict)
    sessions: dict[str, SessionDelta] = field(default_factory=dict)
    outcomes: list[tuple[Any, ...]] = field(default_factory=list)
    """Rows of ``session_outcomes`` from outcome spans (``flightrec.outcome.*``), which are not stored as spans."""
    merges: dict[str, str] = field(default_factory=dict)
    """Sessions stored under a trace id before the trace's conversation id arrived: trace id → session id.
    The store moves their rows into the named session."""


class Ingestor:
    """Turns span records into a ``Batch``. Keeps the hashes it has already emitted, so that
    the history repeated in every request is sent to the store only once."""

    def __init__(self, known_hash_limit: int = 500_000, *, prices: PriceTable | None = None) -> None:
        self._known: set[str] = set()
        self._limit = known_hash_limit
        self._splitter = Splitter()
        self._prices = prices
        self._kinds = ToolKinds()
        # Other instrumentation has no turn spans: a session's turns are counted from its LLM calls.
        self._turns: dict[str, int] = {}
        self._calls: dict[str, list[_CallMark]] = {}
        # A conversation id given on some spans of a trace (often only the root's) names them all.
        self._trace_sessions: dict[str, str] = {}
        self._anonymous: set[str] = set()
        """Traces whose spans were stored under the trace id, for want of a conversation id."""
        self._spans: set[str] = set()
        """Spans already built (trace id + span id): a retried request's spans are skipped."""
        self._handoffs: dict[str, str] = {}
        """The request being built's sessions whose spans sit under a span of another session: child → parent."""

    def rollback(self, batch: Batch) -> None:
        """Undoes what ``build`` remembered of a batch that was not committed, so that the spans,
        when sent again, are written whole: its content hashes and chain nodes, every session's last
        request (no later request may reuse a message prefix whose chain nodes were never stored),
        and the sessions it would have joined."""
        self._splitter.forget()
        self._known -= {*batch.content, *batch.chain}
        self._spans -= {row[0] + row[1] for row in batch.spans}
        for trace_id in batch.merges:
            self._trace_sessions.pop(trace_id, None)
            self._anonymous.add(trace_id)

    def forget_stored(self) -> None:
        """Forgets the content hashes and chain nodes it has emitted, and every session's last
        request: after retention removed rows from the store, a later span must write again
        whatever it refers to (``INSERT OR IGNORE`` skips what is still there)."""
        self._splitter.forget()
        self._known.clear()

    def _remember(self, digest: str) -> bool:
        """Whether ``digest`` is new to this ingestor (and so must be written)."""
        if digest in self._known:
            return False
        if len(self._known) >= self._limit:
            self._known.clear()
        self._known.add(digest)
        return True

    def _put_text(self, batch: Batch, kind: str, text: str) -> str:
        """Stores canonical JSON text under its key (``content_key``); returns the key."""
        digest = content_key(text)
        if self._remember(digest):
            batch.content[digest] = (kind, text)
        return digest

    def _chain(self, batch: Batch, node: str | None, message_texts: list[str], session_id: str) -> str | None:
        """Extends a message chain by ``message_texts``; returns the new tail.

        Every request repeats the conversation so far; as a chain, a request with one new message
        adds one node, so a session's storage grows linearly with its length, references included.
        """
        for text in message_texts:
            digest = self._put_text(batch, "message", text)
            nxt = content_key(f"{node or ''}/{digest}")
            if self._remember(nxt):
                batch.chain[nxt] = (node, digest, session_id)
            node = nxt
        return node

    def build(self, records: list[SpanRecord], batch: Batch | None = None) -> Batch:
        """Adds the rows of ``records`` to ``batch`` (a new one by default) and returns it."""
        batch = batch if batch is not None else Batch()
        # A span seen before (a client retrying a request whose answer it never got) or twice in one
        # request is built once: its cost, tokens and counts must not be added to its session again.
        fresh: set[str] = set()
        unseen: list[SpanRecord] = []
        for r in records:
            key = r.trace_id + r.span_id
            if key not in fresh and key not in self._spans:
                fresh.add(key)
                unseen.append(r)
        records = [r for r in unseen if not _outcome(batch, r)]
        resource_json: dict[int, str] = {}
        resource_labels: dict[int, SessionMarks | None] = {}
        labels: dict[str, SessionMarks] = {}  # route and tags of sessions that other instrumentation names
        sessions = self._sessions(records, batch)
        # In start order: a foreign tool call then meets the LLM calls that came before it, whatever
        # order the instrumentation scopes of a request list them in.
        for i in sorted(range(len(records)), key=lambda i: records[i].start_ns):
            r, session_id = records[i], sessions[i]
            attrs = r.attributes
            own = r.scope == "flightrec"
            # The SDK's own spans in a process the Recorder traces: flightrec's spans hold all they do.
            duplicate = not own and r.scope == _foreign.ANTHROPIC_SCOPE and _foreign.RECORDER_MARKER in r.resource
            found = None if own or duplicate else self._recognise(r)
            if found is not None and found[1] != "agent":
                kept = {k: v for k, v in attrs.items() if k not in A.CONTENT_ATTRIBUTES and not _foreign.is_content(k)}
            else:  # a copy less the few content keys, found by a set operation: a comprehension costs per key
                kept = dict(attrs)
                for key in A.CONTENT_ATTRIBUTES.intersection(attrs):
                    del kept[key]
            rkey = id(r.resource)
            if rkey not in resource_json:
                resource_json[rkey] = _json(r.resource)
            delta = batch.sessions.get(session_id)
            if delta is None:
                delta = batch.sessions[session_id] = SessionDelta(session_id, r.start_ns, r.end_ns)
            else:
                delta.start_ns = min(delta.start_ns, r.start_ns)
                delta.end_ns = max(delta.end_ns, r.end_ns)
            op = attrs.get(A.OPERATION)
            marks = marks_of(attrs)
            # A turn or chat span of flightrec's carries its session's origin, and ends before the root.
            if marks is not None and (r.parent_span_id is None or op == "invoke_agent" or own):
                delta.marks = marks if delta.marks is None else delta.marks.merged(marks)
            elif not own:
                # Other instrumentation may name a route or tags on any span, or on its process's
                # resource: they fill in what the session's root span does not say.
                if rkey not in resource_labels:
                    resource_labels[rkey] = _labels(marks_of(r.resource))
                label, on_resource = _labels(marks), resource_labels[rkey]
                if on_resource is not None:
                    label = on_resource if label is None else label.merged(on_resource)
                if label is not None:
                    labels[session_id] = label if session_id not in labels else labels[session_id].merged(label)
            if r.parent_span_id is None and (not own or A.CONVERSATION_ID not in attrs):
                # The root span of another instrumentation's trace (or of a trace with no session)
                # ends its session; a later trace of the same conversation carries it on.
                delta.trace_id = r.trace_id
                delta.ended = True
                delta.status = "error" if r.status_code == "ERROR" else "ok"
            call = None
            if not duplicate and op == "chat" and (own or A.REQUEST_SHA256 in attrs):  # flightrec's conventions
                call = self._llm_call(batch, r, session_id, delta)
                if own:  # what llm_calls holds is not kept twice (see tracer._chat_attributes)
                    kept = _chat.stored(kept, _HELD_VALUES(call))
            batch.spans.append((
                r.trace_id, r.span_id, r.parent_span_id, session_id, r.name, r.kind, r.start_ns, r.end_ns,
                r.status_code, r.status_message, _json(kept), _json(r.events) if r.events else None,
                _json(r.links) if r.links else None, resource_json[rkey], r.scope,
            ))
            if duplicate or call is not None:
                continue
            if op == "execute_tool":
                self._tool_call(batch, r, session_id, delta)
            elif op == "invoke_agent":
                delta.trace_id = r.trace_id
                delta.agent = attrs.get(A.AGENT_NAME)
                delta.ended = True
                delta.status = attrs.get(A.SESSION_STATUS) or ("error" if r.status_code == "ERROR" else "ok")
                delta.status_reason = attrs.get(A.SESSION_STATUS_REASON) or r.status_message
                delta.content_mode = attrs.get(A.CONTENT_MODE)
            elif r.name == "flightrec.turn":
                batch.turns.append((
                    session_id, int(attrs.get(A.TURN_INDEX, 0)), r.trace_id, r.span_id, r.start_ns, r.end_ns,
                    _json(r.events) if r.events else None,
                ))
                delta.sums["turns"] += 1
            elif found is not None:
                self._foreign(batch, r, session_id, delta, found)
        for session_id, label in labels.items():  # after the spans: what a root span names wins
            delta = batch.sessions[session_id]
            delta.marks = label if delta.marks is None else delta.marks.merged(label)
        for child, parent in self._handoffs.items():  # after the spans: a parent the child's root names wins
            delta = batch.sessions[child]
            handed = SessionMarks(parent_session_id=parent)
            delta.marks = handed if delta.marks is None else delta.marks.merged(handed)
        # Remembered only once built whole: if building failed half-way, ``rollback`` forgets what is
        # in the batch, and nothing else may stay remembered either.
        if len(self._spans) + len(fresh) > _SPANS:
            self._spans.clear()
        self._spans |= fresh
        return batch

    def _sessions(self, records: list[SpanRecord], batch: Batch) -> list[str]:
        """The session of each record.

        A span's own conversation id comes first. A span without one takes its parent's, then its
        trace's, as given by any span of the trace, in this request or an earlier one: producers
        often put the id on the root span only. A trace with no id at all is a session of its own,
        under the trace id; when its id arrives later, ``batch.merges`` moves it into the named one.
        """
        named: list[str | None] = []
        for r in records:
            conversation = r.attributes.get(A.CONVERSATION_ID)
            if conversation is None and r.scope != "flightrec":
                conversation = _foreign.session_of(r.attributes)
            named.append(str(conversation) if conversation is not None and conversation != "" else None)
        by_span: dict[str, str] = {}
        for r, session_id in zip(records, named):
            if session_id is None:
                continue
            by_span[r.span_id] = session_id
            if r.trace_id not in self._trace_sessions:
                if len(self._trace_sessions) >= _TRACES:
                    self._trace_sessions.clear()
                self._trace_sessions[r.trace_id] = session_id
                if r.trace_id in self._anonymous:
                    self._anonymous.discard(r.trace_id)
                    batch.merges[r.trace_id] = session_id
                    self._carry_over(r.trace_id, session_id)
        sessions: list[str] = []
        for r, session_id in zip(records, named):
            if session_id is None:
                parent = by_span.get(r.parent_span_id) if r.parent_span_id else None
                session_id = parent or self._trace_sessions.get(r.trace_id)
            if session_id is None:
                session_id = r.trace_id
                if len(self._anonymous) >= _TRACES:
                    self._anonymous.clear()
                self._anonymous.add(r.trace_id)
            sessions.append(session_id)
        # A span with a conversation id of its own under a span of another conversation (an agent
        # handing off to another, as the OpenAI Agents SDK, LangGraph or CrewAI trace a sub-agent): its
        # session is a child of that one. Seen when both spans come in one request; else the sender
        # sets flightrec.parent_session_id on the child's root span.
        self._handoffs = {
            session_id: parent for r, session_id in zip(records, named)
            if session_id is not None and r.parent_span_id
            and (parent := by_span.get(r.parent_span_id)) is not None and parent != session_id}
        return sessions

    def _carry_over(self, old: str, new: str) -> None:
        """What is remembered of a trace's session goes to the named session it joins."""
        if old in self._turns:
            self._turns[new] = max(self._turns.pop(old), self._turns.get(new, 0))
        if old in self._calls:
            self._calls[new] = sorted([*self._calls.get(new, ()), *self._calls.pop(old)],
                                      key=lambda m: m.start_ns)[-_CALLS_PER_SESSION:]

    def _recognise(self, r: SpanRecord) -> tuple[_foreign.Convention, _foreign.Role] | None:
        """The convention of a span of other instrumentation, or ``None``; never raises."""
        if A.REQUEST_SHA256 in r.attributes:
            return None  # flightrec's own conventions, sent from another SDK
        try:
            return _foreign.recognise(r.scope, r.attributes)
        except Exception:  # a span shaped in a way we did not foresee is kept raw
            log.debug("flightrec: recognising span %s failed", r.span_id, exc_info=True)
            return None

    def _foreign(self, batch: Batch, r: SpanRecord, session_id: str, delta: SessionDelta,
                 found: tuple[_foreign.Convention, _foreign.Role]) -> None:
        """Normalises a span of other instrumentation; one that cannot be read stays raw only."""
        try:
            convention, role = found
            if role == "llm":
                call = _foreign.llm_call(convention, r.attributes, self._kinds)
                self._foreign_call(batch, r, session_id, delta, call)
            elif role == "tool":
                t = _foreign.tool_call(convention, r.name, r.attributes)
                self._tool_row(batch, r, session_id, delta, t.name, t.call_id, t.arguments, t.result,
                               self._tool_turn(session_id, r, t.call_id))
            else:
                delta.agent = _foreign.agent_name(convention, r.name, r.attributes)
        except Exception as exc:  # a span shaped in a way we did not foresee must not fail its batch
            # The type only: the message could quote the span's content, which is never logged above DEBUG.
            log.warning("flightrec: span %s (scope %r) could not be normalised (%s); it is kept raw", r.span_id,
                        r.scope, type(exc).__name__)
            log.debug("flightrec: normalising span %s failed", r.span_id, exc_info=True)

    def _tool_turn(self, session_id: str, r: SpanRecord, call_id: str | None) -> int | None:
        """The turn of a foreign tool call: that of the LLM call it runs under (its parent span), else
        of the call whose output asked for its call id, else of the last call that started before it."""
        marks = self._calls.get(session_id, ())
        for m in marks:
            if m.span_id == r.parent_span_id:
                return m.turn
        if call_id:
            for m in reversed(marks):
                if call_id in m.tool_use_ids:
                    return m.turn
        before = [m for m in marks if m.start_ns <= r.start_ns]
        if before:
            return before[-1].turn
        return self._turns.get(session_id)

    def _foreign_turn(self, session_id: str, messages: list[dict[str, Any]] | None) -> tuple[int, bool]:
        """The turn of a foreign LLM call, and whether it starts a new turn.

        With messages, the turn is one more than the assistant messages the model was shown, so a
        retry stays in its turn and a restart of the collector numbers alike; without, calls count up.
        """
        last = self._turns.get(session_id, 0)
        if messages is not None:
            turn = 1 + sum(1 for m in messages if m.get("role") == "assistant")
        else:
            turn = last + 1
        if turn > last:
            if len(self._turns) >= _FOREIGN_SESSIONS:
                self._turns.clear()
            self._turns[session_id] = turn
        return turn, turn > last

    def _mark_call(self, session_id: str, r: SpanRecord, turn: int, c: _foreign.ForeignCall) -> None:
        ids = frozenset(str(b["id"]) for b in (c.response or {}).get("content", ())
                        if b.get("type") == "tool_use" and b.get("id"))
        marks = self._calls.get(session_id)
        if marks is None:
            if len(self._calls) >= _FOREIGN_SESSIONS:
                self._calls.clear()
            marks = self._calls[session_id] = []
        marks.append(_CallMark(r.span_id, turn, r.start_ns, ids))
        marks.sort(key=lambda m: m.start_ns)
        del marks[:-_CALLS_PER_SESSION]

    def _foreign_call(self, batch: Batch, r: SpanRecord, session_id: str, delta: SessionDelta,
                      c: _foreign.ForeignCall) -> None:
        if self._prices is None:
            self._prices = PriceTable.load()
        system_ref = messages_ref = message_count = tool_refs = None
        if c.system is not None:
            system_ref = self._put_text(batch, "system", canonical_json(c.system))
        if c.messages is not None:
            messages_ref = self._chain(batch, None, [canonical_json(m) for m in c.messages], session_id)
            message_count = len(c.messages)
        if c.tools is not None:
            tool_refs = [self._put_text(batch, "tool", canonical_json(t)) for t in c.tools]
        turn, new_turn = self._foreign_turn(session_id, c.messages)
        self._mark_call(session_id, r, turn, c)
        if new_turn:
            batch.turns.append((session_id, turn, r.trace_id, r.span_id, r.start_ns, r.end_ns, None))
            delta.sums["turns"] += 1
        ok = r.status_code != "ERROR"
        read, write = c.cache_read_tokens or 0, c.cache_write_tokens or 0
        uncached = None if c.total_input_tokens is None else max(c.total_input_tokens - read - write, 0)
        model = c.response_model or c.model
        cost = None
        if ok and uncached is not None:
            cost = self._prices.cost(model, Usage(input_tokens=uncached, output_tokens=c.output_tokens or 0,
                                                  cache_read_tokens=read, cache_write_5m_tokens=write))
        window = self._prices.context_window(model)
        segments: dict[str, int | None] = dict.fromkeys(A.SEGMENTS)
        if c.messages is not None:
            body = {"system": c.system, "messages": c.messages, "tools": c.tools}
            segments.update(context_tokens(context_chars(body, self._kinds), c.total_input_tokens))
        batch.llm_calls.append(_llm_call_row(
            span_id=r.span_id, trace_id=r.trace_id, session_id=session_id, turn_index=turn, attempt=0,
            start_ns=r.start_ns, end_ns=r.end_ns, status="ok" if ok else "error", error_type=c.error_type,
            http_status=r.attributes.get(A.HTTP_STATUS), stream=c.stream, ttft_ms=c.ttft_ms, model=c.model,
            response_model=c.response_model, response_id=c.response_id, stop_reason=c.stop_reason,
            action=c.action if ok else None, tools_available=c.tools_available,
            tools_chosen=c.tools_chosen if ok else None, reasoning=c.reasoning, input_tokens=uncached,
            output_tokens=c.output_tokens, cache_read_tokens=c.cache_read_tokens,
            cache_write_tokens=c.cache_write_tokens, cost_usd=cost,
            ctx_system_tokens=segments["system"], ctx_tools_tokens=segments["tools"],
            ctx_history_tokens=segments["history"], ctx_tool_results_tokens=segments["tool_results"],
            ctx_retrieved_tokens=segments["retrieved"], ctx_window=window,
            ctx_utilisation=c.total_input_tokens / window if window and c.total_input_tokens is not None else None,
            content_mode=None, request_sha256=None, request_params=canonical_json(c.params), system_ref=system_ref,
            messages_ref=messages_ref, message_count=message_count, tool_refs=tool_refs,
            response_body=canonical_json(c.response) if c.response is not None else None,
            not_rebuildable=c.not_rebuildable, betas=None,
        ))
        s = delta.sums
        s["llm_calls"] += 1
        if not ok:
            s["llm_errors"] += 1
        s["input_tokens"] += uncached or 0
        s["output_tokens"] += c.output_tokens or 0
        s["cache_read_tokens"] += read
        s["cache_write_tokens"] += write
        if cost is not None:
            delta.cost_usd += cost
        elif ok:
            s["unpriced_calls"] += 1

    def _llm_call(self, batch: Batch, r: SpanRecord, session_id: str, delta: SessionDelta) -> tuple[Any, ...]:
        """Adds the call's ``llm_calls`` row (``LLM_CALL_COLUMNS``) and returns it."""
        a = r.attributes
        system_ref = messages_ref = message_count = tool_refs = params = not_rebuildable = None
        body_text = a.get(A.REQUEST_BODY)
        if body_text is not None:
            try:
                if r.scope != "flightrec":  # not known to be canonical: make it so first
                    body_text = canonical_json(json.loads(body_text))
                parts, state = self._splitter.split(body_text, session_id)
            # Not a JSON object's text (cut short by an SDK's length limit, or corrupt): the call is
            # stored without its request; _validate checked what it cheaply could, and said so.
            except (TypeError, ValueError, IndexError, KeyError, RecursionError):
                not_rebuildable = f"its {A.REQUEST_BODY} is {BAD_BODY}"
                body_text = None
        if body_text is not None:
            params = parts.params
            if parts.system is not None:
                system_ref = self._put_text(batch, "system", parts.system)
            if parts.new_messages is not None:
                messages_ref = self._chain(batch, parts.prefix_tail, parts.new_messages, session_id)
                message_count = parts.message_count
                state.tail = messages_ref
            if parts.tools is not None:
                tool_refs = [self._put_text(batch, "tool", t) for t in parts.tools]
        ok = r.status_code != "ERROR"
        cache_read = a.get(A.USAGE_CACHE_READ)
        cache_write = a.get(A.USAGE_CACHE_CREATION)
        total_in = a.get(A.USAGE_INPUT)
        # Stored as the API counts them: input_tokens excludes what the cache served or wrote.
        uncached = None if total_in is None else total_in - (cache_read or 0) - (cache_write or 0)
        cost = a.get(A.COST_USD)
        finish = a.get(A.RESPONSE_FINISH_REASONS)
        stop_reason = finish[0] if finish else None
        p = A.CONTEXT_PREFIX
        row = _llm_call_row(
            span_id=r.span_id, trace_id=r.trace_id, session_id=session_id, turn_index=a.get(A.TURN_INDEX),
            attempt=int(a.get(A.ATTEMPT, 0)), start_ns=r.start_ns, end_ns=r.end_ns, status="ok" if ok else "error",
            error_type=a.get(A.ERROR_TYPE), http_status=a.get(A.HTTP_STATUS),
            stream=bool(a.get(A.REQUEST_STREAM, a.get(A.LEGACY_REQUEST_STREAM, False))), ttft_ms=_ttft_ms(a),
            model=a.get(A.REQUEST_MODEL), response_model=a.get(A.RESPONSE_MODEL), response_id=a.get(A.RESPONSE_ID),
            stop_reason=stop_reason or None, action=a.get(A.ACTION),
            tools_available=list(a.get(A.TOOLS_AVAILABLE, ())),
            tools_chosen=list(a.get(A.TOOLS_CHOSEN, ())) if ok else None, reasoning=a.get(A.REASONING),
            input_tokens=uncached, output_tokens=a.get(A.USAGE_OUTPUT), cache_read_tokens=cache_read,
            cache_write_tokens=cache_write, cost_usd=cost,
            ctx_system_tokens=a.get(f"{p}system_tokens"), ctx_tools_tokens=a.get(f"{p}tools_tokens"),
            ctx_history_tokens=a.get(f"{p}history_tokens"), ctx_tool_results_tokens=a.get(f"{p}tool_results_tokens"),
            ctx_retrieved_tokens=a.get(f"{p}retrieved_tokens"),
            ctx_window=a.get(A.CONTEXT_WINDOW), ctx_utilisation=a.get(A.CONTEXT_UTILISATION),
            content_mode=a.get(A.CONTENT_MODE), request_sha256=a.get(A.REQUEST_SHA256), request_params=params,
            system_ref=system_ref, messages_ref=messages_ref, message_count=message_count, tool_refs=tool_refs,
            response_body=a.get(A.RESPONSE_BODY), not_rebuildable=not_rebuildable,
            betas=list(a[A.REQUEST_BETAS]) if a.get(A.REQUEST_BETAS) else None,
        )
        batch.llm_calls.append(row)
        s = delta.sums
        s["llm_calls"] += 1
        if not ok:
            s["llm_errors"] += 1
        s["input_tokens"] += uncached or 0
        s["output_tokens"] += a.get(A.USAGE_OUTPUT) or 0
        s["cache_read_tokens"] += cache_read or 0
        s["cache_write_tokens"] += cache_write or 0
        if cost is not None:
            delta.cost_usd += cost
        elif ok:
            s["unpriced_calls"] += 1
        return row

    def _tool_call(self, batch: Batch, r: SpanRecord, session_id: str, delta: SessionDelta) -> None:
        a = r.attributes
        turn = a.get(A.TURN_INDEX)
        result = a.get(A.TOOL_RESULT)
        if r.scope != "flightrec":  # GenAI tool spans from elsewhere: no turn attribute, the SDK's own result key
            turn = self._tool_turn(session_id, r, a.get(A.TOOL_CALL_ID)) if turn is None else turn
            result = _foreign.as_text(a.get("anthropic.tool_result.content") if result is None else result)
            arguments = _foreign.as_text(a.get(A.TOOL_ARGUMENTS))
        else:
            arguments = a.get(A.TOOL_ARGUMENTS)
        self._tool_row(batch, r, session_id, delta, a.get(A.TOOL_NAME, r.name), a.get(A.TOOL_CALL_ID),
                       arguments, result, turn)

    def _tool_row(self, batch: Batch, r: SpanRecord, session_id: str, delta: SessionDelta, name: str,
                  call_id: str | None, arguments: Any, result: Any, turn: int | None) -> None:
        a = r.attributes
        status = a.get(A.TOOL_STATUS) or ("error" if r.status_code == "ERROR" else "ok")
        batch.tool_calls.append((
            r.span_id, r.trace_id, session_id, turn, name, call_id, r.start_ns, r.end_ns, status,
            a.get(A.ERROR_TYPE), r.status_message if status == "error" else None, arguments, result,
            a.get(A.TOOL_IDEMPOTENCY_KEY), a.get(A.TOOL_RETRIES), a.get(A.TOOL_CIRCUIT_STATE),
            *call_keys(str(name), arguments),
        ))
        delta.sums["tool_calls"] += 1
        if status == "error":
            delta.sums["tool_errors"] += 1


def _outcome(batch: Batch, r: SpanRecord) -> bool:
    """Adds an outcome span's row to the batch and says so; false for any other span.

    An outcome comes after the fact, from any process (a thumbs-down in the product, a reopened
    ticket): stored as a span of its session, it would move the session's end and count in it.
    ``_validate.check`` has made sure it names a session and holds a resolution or a score."""
    attrs = r.attributes
    if A.OUTCOME_RESOLVED not in attrs and A.OUTCOME_SCORE not in attrs:
        return False
    session_id = attrs.get(A.OUTCOME_SESSION) or attrs.get(A.CONVERSATION_ID)
    if not session_id:
        return False
    score = attrs.get(A.OUTCOME_SCORE)
    batch.outcomes.append((r.trace_id + r.span_id, str(session_id), r.end_ns, attrs.get(A.OUTCOME_RESOLVED),
                           None if score is None else float(score), attrs.get(A.OUTCOME_NOTE),
                           attrs.get(A.OUTCOME_SOURCE) or "otlp", None))
    return True


def _labels(marks: SessionMarks | None) -> SessionMarks | None:
    """The route and tags of ``marks`` alone: a span below the root, or a resource, does not say where
    the session comes from."""
    if marks is None or (marks.route is None and marks.tags is None):
        return None
    return SessionMarks(route=marks.route, tags=marks.tags)


def _llm_call_row(**values: Any) -> tuple[Any, ...]:
    """An ``llm_calls`` row from its values by column name, in ``LLM_CALL_COLUMNS``' order: the two
    kinds of call (flightrec's spans, other instrumentations') fill its 42 columns by name, not place.

    Raises:
        KeyError: a column is left out.
        TypeError: a name is not a column (a typo would otherwise drop its value unseen).
    """
    row = _IN_COLUMN_ORDER(values)
    if len(values) != len(row):
        raise TypeError(f"not llm_calls columns: {', '.join(sorted(set(values) - set(LLM_CALL_COLUMNS)))}")
    return row


def _ttft_ms(attrs: dict[str, Any]) -> float | None:
    """Milliseconds to the first chunk: the conventions' seconds, or what older senders sent in ms."""
    seconds = attrs.get(A.TTFT_S)
    if isinstance(seconds, (int, float)) and not isinstance(seconds, bool):
        return seconds * 1000
    return attrs.get(A.LEGACY_TTFT_MS)
