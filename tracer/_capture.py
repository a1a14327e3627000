"""Capture of LLM calls through the anthropic SDK's own per-attempt ``middleware=`` hook.

The middleware sees each HTTP attempt's exact request body, so retries are recorded as their
own ``chat`` spans (``flightrec.attempt`` counts them) and the request hash is taken from the
very bytes' source. Nothing in the SDK is patched: ``instrument()`` returns a copy of the
client with this middleware appended.

Every step of our own here is guarded: if flightrec fails, the call goes on untraced and the
failure is counted, never raised into the agent.
"""

from __future__ import annotations

import logging
import time
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any

import httpx2
from anthropic import Middleware
from opentelemetry.trace import SpanKind, Status, StatusCode

from . import _attributes as A
from ._canonical import canonical_json, loads, sha256_hex
from ._decision import context_chars, context_tokens, decide, tools_available
from ._pricing import Usage
from ._semconv import output_attributes, request_attributes
from ._session import current_session
from ._sse import accumulate_sse

if TYPE_CHECKING:
    from anthropic._request import APIRequest

    from ._recorder import Recorder

log = logging.getLogger("flightrec")

_PARAM_ATTRIBUTES = {
    "max_tokens": A.REQUEST_MAX_TOKENS,
    "temperature": A.REQUEST_TEMPERATURE,
    "top_p": A.REQUEST_TOP_P,
    "top_k": A.REQUEST_TOP_K,
}


_BETA_HEADER = "anthropic-beta"


def _is_messages_call(request: APIRequest) -> bool:
    return request.method.lower() == "post" and request.url.split("?", 1)[0].rstrip("/").endswith("/messages")


def _betas(headers: Any) -> list[str] | None:
    """The ``anthropic-beta`` values of a header mapping (comma-separated, any case), or ``None`` without one."""
    for key, value in (headers or {}).items():
        if isinstance(key, str) and key.lower() == _BETA_HEADER and isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
    return None


def server_attributes(url: str | httpx2.URL) -> dict[str, Any]:
    """``server.address`` and ``server.port`` of a URL (the port its scheme implies when it names none)."""
    parsed = httpx2.URL(str(url))
    if not parsed.host:
        return {}
    port = parsed.port or {"https": 443, "http": 80}.get(parsed.scheme)
    return {A.SERVER_ADDRESS: parsed.host, **({A.SERVER_PORT: port} if port else {})}


class _Call:
    """One attempt in flight: its span and what the response handler needs."""

    __slots__ = ("span", "body", "start", "recorder", "session")

    def __init__(self, recorder: Recorder, request: APIRequest, client: _ClientFacts) -> None:
        self.recorder = recorder
        self.start = time.perf_counter()
        body = dict(request.json or {})
        extra = request.options.extra_json
        if extra:
            body.update(extra)
        self.body = body
        session = current_session()
        self.session = session
        model = str(body.get("model", ""))
        attrs: dict[str, Any] = {
            A.OPERATION: "chat",
            A.PROVIDER: "anthropic",
            A.REQUEST_MODEL: model,
            A.ATTEMPT: request.retries_taken,
            A.REQUEST_STREAM: bool(body.get("stream")),
            A.CONTENT_MODE: recorder.content,
            **(server_attributes(request.url) if "://" in request.url else client.server),
        }
        # A per-call ``betas=`` (the SDK sends it as this header) replaces the client's default header.
        betas = _betas(request.headers)
        if betas is None:
            betas = client.betas
        if betas:
            attrs[A.REQUEST_BETAS] = betas
        for key, name in _PARAM_ATTRIBUTES.items():
            if key in body and body[key] is not None:
                attrs[name] = body[key]
        if body.get("stop_sequences"):
            attrs[A.REQUEST_STOP_SEQUENCES] = list(body["stop_sequences"])
        text = canonical_json(body)
        attrs[A.REQUEST_SHA256] = sha256_hex(text)
        shown = recorder.policy.content(body)
        if shown is not None:
            attrs[A.REQUEST_BODY] = text if shown is body else canonical_json(shown)
            if recorder.standard_content:
                attrs.update(request_attributes(shown))
        attrs[A.TOOLS_AVAILABLE] = tools_available(body)
        context = None
        if session is not None:
            context, turn_index = session.llm_parent(request.retries_taken)
            attrs[A.CONVERSATION_ID] = session.id
            attrs[A.AGENT_NAME] = session.agent
            attrs[A.TURN_INDEX] = turn_index
            attrs.update(session.marks)
        self.span = recorder.tracer.start_span(
            f"chat {model}", context=context, kind=SpanKind.CLIENT, attributes=attrs
        )

    def fail(self, exc: BaseException) -> None:
        self.span.set_attribute(A.ERROR_TYPE, type(exc).__name__)
        self.span.set_status(Status(StatusCode.ERROR, self.recorder.policy.content(str(exc)[:500])))
        self.span.end()

    def finish_error(self, response: httpx2.Response) -> None:
        """An HTTP error response: record its status and the API's error type."""
        span = self.span
        span.set_attribute(A.HTTP_STATUS, response.status_code)
        error_type = str(response.status_code)
        try:
            error_type = loads(response.read())["error"]["type"]
        except Exception:  # a non-JSON error page keeps the status code as its type
            pass
        span.set_attribute(A.ERROR_TYPE, error_type)
        span.set_status(Status(StatusCode.ERROR, f"HTTP {response.status_code}"))
        span.end()

    def finish(self, message: dict[str, Any] | None, *, ttft_ms: float | None = None) -> None:
        """A successful response (``message`` is ``None`` when a stream could not be read)."""
        span, rec = self.span, self.recorder
        span.set_attribute(A.HTTP_STATUS, 200)
        if ttft_ms is not None:
            span.set_attribute(A.TTFT_S, ttft_ms / 1000)
        if message is None:
            span.end()
            return
        u = message.get("usage") or {}
        breakdown = u.get("cache_creation") or {}
        write_total = u.get("cache_creation_input_tokens") or 0
        write_1h = breakdown.get("ephemeral_1h_input_tokens") or 0
        usage = Usage(
            input_tokens=u.get("input_tokens") or 0,
            output_tokens=u.get("output_tokens") or 0,
            cache_read_tokens=u.get("cache_read_input_tokens") or 0,
            cache_write_5m_tokens=max(write_total - write_1h, 0),
            cache_write_1h_tokens=write_1h,
        )
        model = message.get("model") or self.body.get("model")
        decision = decide(message, rec.tool_kinds)
        attrs: dict[str, Any] = {
            A.RESPONSE_ID: message.get("id", ""),
            A.RESPONSE_MODEL: message.get("model", ""),
            A.RESPONSE_FINISH_REASONS: [message.get("stop_reason") or ""],
            # The GenAI conventions count cached tokens in input_tokens; the API does not.
            A.USAGE_INPUT: usage.total_input,
            A.USAGE_OUTPUT: usage.output_tokens,
            A.USAGE_CACHE_READ: usage.cache_read_tokens,
            A.USAGE_CACHE_CREATION: write_total,
            A.CACHE_WRITE_1H: write_1h,
            A.ACTION: decision.action,
            A.TOOLS_CHOSEN: list(decision.tools_chosen),
        }
        cost = rec.prices.cost(model, usage)
        if cost is not None:
            attrs[A.COST_USD] = cost
        tokens = context_tokens(context_chars(self.body, rec.tool_kinds), usage.total_input)
        for segment, n in tokens.items():
            attrs[f"{A.CONTEXT_PREFIX}{segment}_tokens"] = n
        window = rec.prices.context_window(model)
        if window:
            attrs[A.CONTEXT_WINDOW] = window
            attrs[A.CONTEXT_UTILISATION] = usage.total_input / window
        out = rec.policy.content(message)
        if out is not None:
            attrs[A.RESPONSE_BODY] = canonical_json(out)
            if rec.standard_content:
                attrs.update(output_attributes(out))
            if decision.reasoning:
                attrs[A.REASONING] = rec.policy.content(decision.reasoning)
        span.set_attributes(attrs)
        span.end()
        if self.session is not None:
            self.session.expect_tool_uses(decision.tool_uses)


def _guarded(what: str, recorder: Recorder, fn: Callable[..., Any], *args: Any) -> Any:
    try:
        return fn(*args)
    except Exception:
        recorder.count_capture_error()
        log.warning("flightrec: %s failed; the call goes on untraced", what, exc_info=True)
        return None


class _ClientFacts:
    """What the middleware cannot see in a request: the client's server and its default beta header."""

    __slots__ = ("server", "betas")

    def __init__(self, base_url: str | httpx2.URL | None, default_headers: Any) -> None:
        self.server = server_attributes(base_url) if base_url else {}
        self.betas = _betas(default_headers) or []


class CaptureMiddleware(Middleware):
    """Records every attempt of ``messages.create`` (streaming or not) as a ``chat`` span.

    ``base_url`` and ``default_headers`` are the client's: requests name only their path, and the
    client's own headers (a default ``anthropic-beta``) are added after the middleware.
    """

    def __init__(self, recorder: Recorder, *, base_url: str | httpx2.URL | None = None,
                 default_headers: Any = None) -> None:
        self._recorder = recorder
        self._client = _ClientFacts(base_url, default_headers)

    def _start(self, request: APIRequest) -> _Call:
        return _Call(self._recorder, request, self._client)

    def handle(self, request: APIRequest, call_next: Callable[[APIRequest], Any]) -> Any:
        if not _is_messages_call(request):
            return call_next(request)
        call: _Call | None = _guarded("capturing a request", self._recorder, self._start, request)
        if call is None:
            return call_next(request)
        try:
            response = call_next(request)
        except BaseException as exc:
            _guarded("recording a failed call", self._recorder, call.fail, exc)
            raise
        _guarded("capturing a response", self._recorder, lambda: _on_response(call, request, response.http_response))
        return response

    async def handle_async(self, request: APIRequest, call_next: Callable[[APIRequest], Any]) -> Any:
        if not _is_messages_call(request):
            return await call_next(request)
        call: _Call | None = _guarded("capturing a request", self._recorder, self._start, request)
        if call is None:
            return await call_next(request)
        try:
            response = await call_next(request)
        except BaseException as exc:
            _guarded("recording a failed call", self._recorder, call.fail, exc)
            raise
        http = response.http_response
        # The handler below reads whole bodies synchronously; a stream stays a stream.
        if not (http.is_success and request.stream) and not hasattr(http, "_content"):
            await http.aread()
        _guarded("capturing a response", self._recorder, lambda: _on_response(call, request, http))
        return response


def _on_response(call: _Call, request: APIRequest, http: httpx2.Response) -> None:
    if not http.is_success:
        call.finish_error(http)
        return
    if not request.stream:
        call.finish(loads(http.read()))
        return
    if http.is_stream_consumed or hasattr(http, "_content"):
        # Already in memory (a mock transport, or a middleware before us read it).
        call.finish(accumulate_sse(http.content))
        return
    decoder = _decoder(http.headers.get("content-encoding", ""))
    if isinstance(http.stream, httpx2.AsyncByteStream):
        http.stream = _AsyncTee(http.stream, call, decoder)
    else:
        http.stream = _SyncTee(http.stream, call, decoder)


def _decoder(encoding: str) -> Callable[[bytes], bytes] | None:
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return lambda b: b
    if encoding in ("gzip", "deflate"):
        return zlib.decompressobj(wbits=47).decompress
    return None  # brotli/zstd: the stream passes through, its content is not captured


class _Tee:
    """Keeps a copy of the raw SSE bytes as the application reads them; ends the span at the end."""

    def __init__(self, call: _Call, decoder: Callable[[bytes], bytes] | None) -> None:
        self._call = call
        self._decoder = decoder
        self._buf = bytearray()
        self._first: float | None = None
        self._done = False

    def _take(self, chunk: bytes) -> None:
        if self._first is None:
            self._first = time.perf_counter()
        if self._decoder is not None:
            self._buf += self._decoder(chunk)

    def _end(self) -> None:
        if self._done:
            return
        self._done = True
        call = self._call
        ttft = None if self._first is None else (self._first - call.start) * 1000
        message = accumulate_sse(bytes(self._buf)) if self._decoder is not None else None
        _guarded("capturing a stream", call.recorder, lambda: call.finish(message, ttft_ms=ttft))


class _SyncTee(_Tee, httpx2.SyncByteStream):
    def __init__(self, inner: httpx2.SyncByteStream, call: _Call, decoder: Callable[[bytes], bytes] | None) -> None:
        super().__init__(call, decoder)
        self._inner = inner

    def __iter__(self) -> Iterator[bytes]:
        try:
            for chunk in self._inner:
                self._take(chunk)
                yield chunk
        finally:
            self._end()

    def close(self) -> None:
        try:
            self._inner.close()
        finally:
            self._end()


class _AsyncTee(_Tee, httpx2.AsyncByteStream):
    def __init__(self, inner: httpx2.AsyncByteStream, call: _Call, decoder: Callable[[bytes], bytes] | None) -> None:
        super().__init__(call, decoder)
        self._inner = inner

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._inner:
                self._take(chunk)
                yield chunk
        finally:
            self._end()

    async def aclose(self) -> None:
        try:
            await self._inner.aclose()
        finally:
            self._end()
