"""Sessions, turns and tool calls: the spans around the LLM calls.

The active session lives in a context variable, so it follows the agent's code into
``asyncio`` tasks without any global registry. A turn opens by itself at each new LLM call
(one turn = one decision and the tool calls that follow it); an agent that wants another
grouping opens turns explicitly with ``session.turn()``.

While a session runs, its span is also OpenTelemetry's current span (and an explicit turn's
while it runs), so that spans of other instrumentation in the agent land inside the session.
The anthropic SDK's own spans get a tracer that starts each API call's span in the turn that
the call opens (``SessionTracerProvider``), as flightrec's chat span of the call is.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, TypeVar

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Link, Span, SpanContext, SpanKind, Status, StatusCode

from . import _attributes as A
from ._origin import ambient_marks, origin_marks

if TYPE_CHECKING:
    from ._recorder import Recorder

_current: ContextVar[Session | None] = ContextVar("flightrec_session", default=None)
_SDK_CALL_SPAN = "anthropic.messages.create"

F = TypeVar("F", bound=Callable[..., Any])


def current_session() -> Session | None:
    """The session that the calling code runs in, or ``None``."""
    return _current.get()


def new_session_id() -> str:
    """A time-ordered id (UUIDv7 layout), so that a session's rows sit together on disk."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms << 80) | (0x7 << 76) | ((rand >> 62) & 0xFFF) << 64 | (0b10 << 62) | (rand & ((1 << 62) - 1))
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _to_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return repr(value)


class ToolCall:
    """One tool execution in flight; set its result, error and reliability facts before it ends."""

    def __init__(self, span: Span, recorder: Recorder) -> None:
        self._span = span
        self._recorder = recorder
        self.status = "ok"

    def _content(self, key: str, value: Any) -> None:
        value = self._recorder.policy.content(value)
        if value is not None:
            self._span.set_attribute(key, _to_text(value))

    def set_result(self, result: Any) -> None:
        """The value the tool returned (stored as JSON when it can be)."""
        self._content(A.TOOL_RESULT, result)

    def set_error(self, message: str, *, error_type: str = "tool_error", result: Any = None) -> None:
        """Marks the call failed; ``result`` is what the model was told, if anything."""
        self.status = "error"
        self._span.set_attribute(A.ERROR_TYPE, error_type)
        self._span.set_status(Status(StatusCode.ERROR, self._recorder.policy.content(message[:500])))
        if result is not None:
            self.set_result(result)

    def annotate(self, attributes: dict[str, Any], *, content: bool = True) -> None:
        """Extra attributes of the call, such as ``flightrec.escalation.summary``. With ``content``
        (what a customer or the model wrote) they follow the content policy, as results do."""
        for key, value in attributes.items():
            if content:
                self._content(key, value)
            elif value is not None:
                self._span.set_attribute(key, value if isinstance(value, (str, int, float, bool)) else _to_text(value))

    def set(self, *, idempotency_key: str | None = None, retries: int | None = None,
            circuit_state: str | None = None) -> None:
        """Reliability facts: the idempotency key, retries taken, and the circuit breaker's state."""
        if idempotency_key is not None:
            self._span.set_attribute(A.TOOL_IDEMPOTENCY_KEY, idempotency_key)
        if retries is not None:
            self._span.set_attribute(A.TOOL_RETRIES, retries)
        if circuit_state is not None:
            self._span.set_attribute(A.TOOL_CIRCUIT_STATE, circuit_state)


class Session:
    """One agent session: an ``invoke_agent`` span with its turns. Made by ``Recorder.session``."""

    def __init__(self, recorder: Recorder, agent: str, session_id: str, attributes: dict[str, Any],
                 links: Sequence[tuple[str, str]] = (), *, parent_session_id: str | None = None,
                 parent: Session | None = None) -> None:
        self.id = session_id
        self.agent = agent
        self.parent_session_id = parent_session_id
        """The session that started this one (a sub-agent's), or ``None``."""
        self._recorder = recorder
        self._tracer = recorder.tracer
        self._lock = threading.Lock()
        links = list(links)
        inherited: dict[str, Any] = {}
        if parent is not None:
            # A sub-agent's session is linked to its parent's root span, and is what its parent is: an
            # eval trial's sub-agent is part of the trial, a replay's of the replay (not of its source).
            ctx = parent._span.get_span_context()
            links.append((f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}"))
            inherited = {k: v for k, v in parent.marks.items() if k != A.REPLAY_SESSION}
        # A session is the root of a trace of its own, even when the agent runs inside a span of the
        # application (a web request): its runs are its root spans, and an application span must not
        # end or judge it. The application's span (for a sub-agent, its parent's turn) is kept as a link.
        ambient = trace.get_current_span().get_span_context()
        if ambient.is_valid:
            here = (f"{ambient.trace_id:032x}", f"{ambient.span_id:016x}")
            if here not in links:
                links.append(here)
        span_attributes = {
            A.OPERATION: "invoke_agent",
            A.PROVIDER: "anthropic",
            A.AGENT_NAME: agent,
            A.CONVERSATION_ID: session_id,
            A.CONTENT_MODE: recorder.content,
            **inherited,
            **recorder.policy.metadata(attributes),
            **ambient_marks(),
        }
        if parent_session_id:
            span_attributes[A.PARENT_SESSION_ID] = parent_session_id
        self.marks = origin_marks(span_attributes)
        """The origin marks, repeated on every turn and chat span: they reach the store before the session's span."""
        self._span = self._tracer.start_span(
            f"invoke_agent {agent}",
            context=otel_context.Context(),
            kind=SpanKind.INTERNAL,
            attributes=span_attributes,
            links=[Link(SpanContext(int(t, 16), int(sp, 16), is_remote=True)) for t, sp in links],
        )
        self._context = trace.set_span_in_context(self._span)
        self.turn_index = 0
        self._turn: Span | None = None
        self._turn_context: otel_context.Context | None = None
        self._turn_explicit = False
        self._turn_has_call = False
        self._pending: list[dict[str, Any]] = []
        self._status: str | None = None

    # -- turns -------------------------------------------------------------------------------

    def _begin_turn(self, explicit: bool) -> None:
        self._end_turn()
        self.turn_index += 1
        self._turn = self._tracer.start_span(
            "flightrec.turn",
            context=self._context,
            # The conventions have no turn; OpenInference's CHAIN (a step of the agent) is what
            # Phoenix and other OpenInference readers show it as.
            attributes={A.TURN_INDEX: self.turn_index, A.CONVERSATION_ID: self.id,
                        A.OPENINFERENCE_SPAN_KIND: "CHAIN", **self.marks},
        )
        self._turn_context = trace.set_span_in_context(self._turn)
        self._turn_explicit = explicit
        self._turn_has_call = False

    def _end_turn(self) -> None:
        if self._turn is not None:
            self._turn.end()
            self._turn = None
            self._turn_context = None

    @contextmanager
    def turn(self) -> Iterator[int]:
        """Groups the LLM calls and tool calls inside it into one turn; yields the turn index."""
        with self._lock:
            self._begin_turn(explicit=True)
            index = self.turn_index
            context = self._turn_context
        assert context is not None
        token = otel_context.attach(context)
        try:
            yield index
        finally:
            otel_context.detach(token)
            with self._lock:
                self._end_turn()

    def llm_parent(self, attempt: int) -> tuple[otel_context.Context, int]:
        """The context an LLM call's span goes under, opening a new turn for a new decision."""
        with self._lock:
            # A first attempt after a decision starts the next turn; a retry stays in its turn.
            if self._turn is None or (not self._turn_explicit and attempt == 0 and self._turn_has_call):
                self._begin_turn(explicit=False)
            self._turn_has_call = True
            assert self._turn_context is not None
            return self._turn_context, self.turn_index

    def sdk_parent(self, name: str) -> otel_context.Context | None:
        """The context a span of the anthropic SDK starts in, or ``None`` to leave it to the current one.

        An API call's span (``anthropic.messages.create``) opens the turn of the decision it makes,
        exactly as the call's first attempt would; other SDK spans go in the current turn. A span
        the application started inside the session keeps the SDK's spans as its children.
        """
        current = trace.get_current_span()
        with self._lock:
            if current is not self._span and current is not self._turn:
                return None
            if name == _SDK_CALL_SPAN and (self._turn is None or (not self._turn_explicit and self._turn_has_call)):
                self._begin_turn(explicit=False)
            return self._turn_context or self._context

    def expect_tool_uses(self, tool_uses: tuple[dict[str, Any], ...]) -> None:
        """Remembers the tool calls a decision asked for, to link tool spans to their call ids."""
        with self._lock:
            self._pending = [dict(t) for t in tool_uses]

    def _claim_call_id(self, name: str, arguments: Any) -> str | None:
        with self._lock:
            for exact in (True, False):
                for i, use in enumerate(self._pending):
                    if use.get("name") == name and (not exact or use.get("input") == arguments):
                        return str(self._pending.pop(i).get("id"))
        return None

    # -- tools ------------------------------------------------------------------------------

    @contextmanager
    def tool_call(self, name: str, arguments: Any = None, *, call_id: str | None = None) -> Iterator[ToolCall]:
        """Records one tool execution as an ``execute_tool`` span.

        ``call_id`` is the ``tool_use`` block's id; when omitted it is matched from the last
        decision by tool name and arguments. An exception inside marks the call failed and
        propagates.
        """
        with self._lock:
            parent = self._turn_context or self._context
            turn_index = self.turn_index
        call_id = call_id or self._claim_call_id(name, arguments)
        attrs: dict[str, Any] = {
            A.OPERATION: "execute_tool",
            A.TOOL_NAME: name,
            A.TOOL_TYPE: "function",
            A.CONVERSATION_ID: self.id,
            A.TURN_INDEX: turn_index,
        }
        if call_id:
            attrs[A.TOOL_CALL_ID] = call_id
        span = self._tracer.start_span(f"execute_tool {name}", context=parent, kind=SpanKind.INTERNAL, attributes=attrs)
        call = ToolCall(span, self._recorder)
        if arguments is not None:
            call._content(A.TOOL_ARGUMENTS, arguments)
        try:
            yield call
        except BaseException as exc:
            call.set_error(str(exc) or type(exc).__name__, error_type=type(exc).__name__)
            raise
        finally:
            span.set_attribute(A.TOOL_STATUS, call.status)
            span.end()

    # -- session ----------------------------------------------------------------------------

    def set_status(self, status: str, reason: str | None = None) -> None:
        """The session's outcome as the agent sees it (``ok``, ``waiting_human``, ``guard:max_tool_calls`` …)."""
        self._status = status
        self._span.set_attribute(A.SESSION_STATUS, status)
        reason = self._recorder.policy.content(reason)
        if reason:
            self._span.set_attribute(A.SESSION_STATUS_REASON, reason)

    def event(self, name: str, **attributes: Any) -> None:
        """Records a named event (a guard that fired, an approval) on the current turn or the session."""
        with self._lock:
            span = self._turn or self._span
        policy = self._recorder.policy
        span.add_event(policy.metadata(name), {k: v if isinstance(v, (str, int, float, bool)) else _to_text(v)
                                               for k, v in policy.metadata(attributes).items()})

    def _close(self, exc: BaseException | None) -> None:
        with self._lock:
            self._end_turn()
        if exc is not None:
            self._span.set_attribute(A.ERROR_TYPE, type(exc).__name__)
            self._span.set_status(Status(StatusCode.ERROR, self._recorder.policy.content(str(exc)[:500])))
            if self._status is None:
                self._span.set_attribute(A.SESSION_STATUS, "error")
        elif self._status is None:
            self._span.set_attribute(A.SESSION_STATUS, "ok")
        self._span.end()


@contextmanager
def open_session(recorder: Recorder, agent: str, session_id: str | None, attributes: dict[str, Any],
                 links: Sequence[tuple[str, str]] = (), *, parent_session_id: str | None = None) -> Iterator[Session]:
    # A session opened inside another (same thread or asyncio task) is a sub-agent's: the enclosing
    # session is its parent unless the caller names another one.
    enclosing = _current.get()
    if parent_session_id is None and enclosing is not None:
        parent_session_id = enclosing.id
    parent = enclosing if enclosing is not None and enclosing.id == parent_session_id else None
    session = Session(recorder, agent, session_id or new_session_id(), attributes, links,
                      parent_session_id=parent_session_id or None, parent=parent)
    token = _current.set(session)
    # Detached in the same context it was attached in: a `with` block never changes task or thread.
    otel_token = otel_context.attach(session._context)
    try:
        yield session
    except BaseException as exc:
        session._close(exc)
        raise
    else:
        session._close(None)
    finally:
        otel_context.detach(otel_token)
        _current.reset(token)


class SessionTracerProvider(trace.TracerProvider):
    """The tracer provider handed to the anthropic SDK: its spans start inside the running session's turns.

    Outside a session, and for spans given an explicit context, it is the wrapped provider.
    """

    def __init__(self, inner: trace.TracerProvider) -> None:
        self._inner = inner

    def get_tracer(self, *args: Any, **kwargs: Any) -> trace.Tracer:
        return _SessionTracer(self._inner.get_tracer(*args, **kwargs))


def _sdk_context(name: str, context: otel_context.Context | None) -> otel_context.Context | None:
    if context is not None:
        return context
    session = _current.get()
    return session.sdk_parent(name) if session is not None else None


class _SessionTracer(trace.Tracer):
    def __init__(self, inner: trace.Tracer) -> None:
        self._inner = inner

    def start_span(self, name: str, context: otel_context.Context | None = None, *args: Any,
                   **kwargs: Any) -> Span:
        return self._inner.start_span(name, _sdk_context(name, context), *args, **kwargs)

    def start_as_current_span(self, name: str, context: otel_context.Context | None = None, *args: Any,
                              **kwargs: Any) -> Any:
        return self._inner.start_as_current_span(name, _sdk_context(name, context), *args, **kwargs)


def tool(fn: F | None = None, *, name: str | None = None) -> Any:
    """Decorates a tool function so that each call in a session is an ``execute_tool`` span.

    Works on sync and async functions. Outside a session the function runs untraced. The
    arguments are recorded by parameter name; the return value is the result; an exception
    marks the call failed and propagates unchanged.
    """

    def wrap(func: F) -> F:
        tool_name = name or func.__name__
        signature = inspect.signature(func)

        def arguments(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
            try:
                bound = signature.bind(*args, **kwargs)
            except TypeError:
                return {"args": list(args), **kwargs}
            return {k: v for k, v in bound.arguments.items() if k not in ("self", "cls")}

        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                session = current_session()
                if session is None:
                    return await func(*args, **kwargs)
                with session.tool_call(tool_name, arguments(args, kwargs)) as call:
                    result = await func(*args, **kwargs)
                    call.set_result(result)
                    return result

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            session = current_session()
            if session is None:
                return func(*args, **kwargs)
            with session.tool_call(tool_name, arguments(args, kwargs)) as call:
                result = func(*args, **kwargs)
                call.set_result(result)
                return result

        return wrapper  # type: ignore[return-value]

    return wrap(fn) if fn is not None else wrap
