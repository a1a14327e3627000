"""A fake Messages API for tests and offline replays: scripted or computed answers, on the real client.

The real ``anthropic`` client talks to it through an httpx transport (or over a loopback port),
so an agent under test builds its requests, retries, streams and tool-use loop exactly as it does
against the API; only the answers are yours.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Union

import httpx2

from .._canonical import canonical_json
from .._sse import sse_events

if TYPE_CHECKING:
    import anthropic

Block = dict[str, Any]
Message = dict[str, Any]


@dataclass(frozen=True)
class FakeError:
    """An error answer: the HTTP status and the API's error body (see ``error``)."""

    status: int
    kind: str
    message: str
    retry_after_ms: int | None

    @property
    def body(self) -> dict[str, Any]:
        """The JSON body, shaped as the API's errors."""
        return _error_body(self.kind, self.message)

    @property
    def headers(self) -> dict[str, str]:
        """``retry-after-ms``, when set."""
        return {"retry-after-ms": str(self.retry_after_ms)} if self.retry_after_ms is not None else {}


Answer = Union[Message, FakeError, str]
"""One answer: a message (``reply(...)``), an error (``error(...)``), or a plain text reply."""
Policy = Callable[[dict[str, Any]], Answer]
"""Computes the answer from the request body: a deterministic model, the same request -> the same answer."""

_ERROR_KINDS = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error", 500: "api_error",
                529: "overloaded_error"}
_CHUNK = 16  # characters of text or tool input per streamed delta


def text(value: str) -> Block:
    """A text block."""
    return {"type": "text", "text": value}


def tool_use(name: str, input: dict[str, Any] | None = None, *, id: str | None = None) -> Block:
    """A tool_use block. Without ``id``, one is derived from the request and the block's place in the reply."""
    block: Block = {"type": "tool_use", "id": id, "name": name, "input": input or {}}
    return block


def thinking(value: str, signature: str = "fake-signature") -> Block:
    """An extended-thinking block (its reasoning shows on the decision)."""
    return {"type": "thinking", "thinking": value, "signature": signature}


def reply(*content: Block | str, stop_reason: str | None = None, input_tokens: int | None = None,
          output_tokens: int | None = None, cache_read_input_tokens: int = 0, cache_creation_input_tokens: int = 0,
          model: str | None = None) -> Message:
    """One assistant message. Strings become text blocks.

    Args:
        content: The blocks (``text``, ``tool_use``, ``thinking``) or strings, in order.
        stop_reason: Default ``tool_use`` when a tool is used, else ``end_turn``.
        input_tokens, output_tokens: Default: estimated from the request and the reply (4 characters a token).
        cache_read_input_tokens, cache_creation_input_tokens: The prompt-cache usage to report.
        model: Default: the model the request asked for.
    """
    blocks = [text(c) if isinstance(c, str) else dict(c) for c in content]
    usage: dict[str, Any] = {"input_tokens": input_tokens, "output_tokens": output_tokens,
                             "cache_read_input_tokens": cache_read_input_tokens,
                             "cache_creation_input_tokens": cache_creation_input_tokens}
    return {"id": None, "type": "message", "role": "assistant", "model": model, "content": blocks,
            "stop_reason": stop_reason or ("tool_use" if any(b["type"] == "tool_use" for b in blocks) else "end_turn"),
            "stop_sequence": None, "usage": usage}


def error(status: int, message: str = "the fake model was told to fail", *, kind: str | None = None,
          retry_after_ms: int | None = 1) -> FakeError:
    """An error answer, shaped as the API's (429 ``rate_limit_error``, 529 ``overloaded_error`` …).

    ``retry_after_ms`` tells the client how soon to retry (the SDK honours it), so retries in tests
    are instant; ``None`` leaves the SDK to its own backoff (half a second and up).
    """
    return FakeError(status, kind or _ERROR_KINDS.get(status, "api_error"), message, retry_after_ms)


class ScriptExhausted(AssertionError):
    """The agent made more or fewer model calls than the script has answers (raised by ``FakeModel.check_done``)."""


class FakeModel:
    """A Messages API that answers from a script (one answer per call, in order) or a policy.

    Example::

        fake = FakeModel([
            reply("Let me look.", tool_use("get_weather", {"city": "Paris"})),
            reply("Sunny in Paris."),
        ])
        client = recorder.instrument(fake.client())   # an anthropic.Anthropic; fake.async_client() too
        ...
        assert fake.requests[1]["messages"][-1]["content"][0]["type"] == "tool_result"

    A policy (``FakeModel(policy=fn)``) computes each answer from the request body; a deterministic
    one is what a replay needs, since the same request gets the same answer. Streaming requests get
    the same answer as server-sent events. Every request body is kept in ``requests``. A call past
    the script's end gets an HTTP 400 that says so, and a policy that raises gets an HTTP 500 that
    names the exception (not retried); ``check_done()`` raises either after the run.

    Args:
        script: The answers, one per call, in order.
        policy: Computes each answer instead; give a script or a policy, not both.
        chunked: Streamed answers arrive event by event, as from a socket (default); ``False``
            gives the client the whole stream at once, as a pre-read body.

    Thread-safe: several threads may share one fake (a script is then served in arrival order, and a
    policy may run in several threads at once).
    """

    def __init__(self, script: Sequence[Answer] = (), *, policy: Policy | None = None, chunked: bool = True) -> None:
        if script and policy is not None:
            raise ValueError("give a script or a policy, not both")
        self._script = list(script)
        self._policy = policy
        self._chunked = chunked
        self._lock = threading.Lock()
        self._failure: BaseException | None = None
        self.requests: list[dict[str, Any]] = []
        """Every request body received, in order."""

    @property
    def calls(self) -> int:
        """How many requests it has answered."""
        return len(self.requests)

    def check_done(self) -> None:
        """Checks that the run used the fake as meant; call it at the end of a test.

        Raises:
            ScriptExhausted: The agent made more, or fewer, model calls than the script has answers.
            Exception: The first exception the policy raised (the client got an HTTP 500 naming it).
        """
        if self._failure is not None:
            raise self._failure
        if self._policy is None and self.calls != len(self._script):
            raise ScriptExhausted(f"the fake model's script has {len(self._script)} answers and the agent made "
                                  f"{self.calls} model calls")

    # -- answering -------------------------------------------------------------------------------

    def answer(self, body: dict[str, Any]) -> tuple[int, dict[str, str], dict[str, Any]]:
        """The status, headers and JSON body for one request body (streaming is the caller's)."""
        with self._lock:
            k = len(self.requests)
            self.requests.append(body)
        headers = {"request-id": f"req_fake{k + 1:06d}"}
        if self._policy is not None:
            try:
                answer: Answer = self._policy(body)
            except Exception as exc:  # the agent under test must not take a bug in its fake for a network error
                with self._lock:
                    self._failure = self._failure or exc
                # x-should-retry: the SDK would otherwise retry a failing policy, with seconds of backoff.
                return 500, {**headers, "x-should-retry": "false"}, _error_body("api_error", (
                    f"the fake model's policy raised {type(exc).__name__}: {exc} (fake.check_done() re-raises it)"))
        elif k < len(self._script):
            answer = self._script[k]
        else:
            return 400, headers, _error_body("invalid_request_error", (
                f"the fake model's script has {len(self._script)} answers and this is call {k + 1}: add answers, "
                "or give a policy"))
        if isinstance(answer, FakeError):
            return answer.status, {**headers, **answer.headers}, answer.body
        return 200, headers, _complete(reply(answer) if isinstance(answer, str) else answer, body, k)

    def _exchange(self, method: str, path: str, content: bytes) -> tuple[int, dict[str, str], Message | list[bytes]]:
        """One HTTP exchange, for the transport and the server alike: a JSON body, or a stream's events."""
        known = path.split("?")[0].rstrip("/").endswith("/v1/messages")
        if method != "POST" or not known:
            hint = "" if known else " (is the client's base URL the fake's root?)"
            return 404, {}, _error_body("not_found_error", (
                f"the fake model serves POST /v1/messages only, not {method} {path}{hint}"))
        try:
            body = json.loads(content)
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return 400, {}, _error_body("invalid_request_error", "the request body is not a JSON object")
        status, headers, answer = self.answer(body)
        if status == 200 and body.get("stream"):
            return 200, {**headers, "content-type": "text/event-stream"}, list(sse_events(answer, chunk=_CHUNK))
        return status, headers, answer

    def _handle(self, request: httpx2.Request) -> httpx2.Response:
        status, headers, body = self._exchange(request.method, request.url.path, request.content)
        if not isinstance(body, list):
            return httpx2.Response(status, headers=headers, json=body)
        if self._chunked:
            return httpx2.Response(status, headers=headers, stream=_Chunks(body))
        return httpx2.Response(status, headers=headers, content=b"".join(body))

    # -- clients ---------------------------------------------------------------------------------

    def transport(self) -> httpx2.MockTransport:
        """An httpx2 transport that answers as this fake (sync and async clients)."""
        return httpx2.MockTransport(self._handle)

    def client(self, **kwargs: Any) -> anthropic.Anthropic:
        """An ``anthropic.Anthropic`` that talks to this fake; ``kwargs`` go to the client (``max_retries`` …)."""
        import anthropic

        kwargs.setdefault("api_key", "fake")
        return anthropic.Anthropic(http_client=httpx2.Client(transport=self.transport()), **kwargs)

    def async_client(self, **kwargs: Any) -> anthropic.AsyncAnthropic:
        """An ``anthropic.AsyncAnthropic`` that talks to this fake."""
        import anthropic

        kwargs.setdefault("api_key", "fake")
        return anthropic.AsyncAnthropic(http_client=httpx2.AsyncClient(transport=self.transport()), **kwargs)

    @contextmanager
    def serve(self, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
        """Serves this fake over HTTP (loopback by default) and yields its base URL.

        For anything that takes a model URL, such as ``flightrec replay run --model-url URL``, or an
        agent in another process: ``anthropic.Anthropic(base_url=url, api_key="fake")``. The server
        runs in a daemon thread and stops when the block ends.
        """
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _respond(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                status, headers, body = fake._exchange(self.command, self.path, self.rfile.read(length))
                chunks = body if isinstance(body, list) else [json.dumps(body, ensure_ascii=False).encode()]
                self.send_response(status)
                for k, v in {"content-type": "application/json", **headers}.items():
                    self.send_header(k, v)
                self.send_header("content-length", str(sum(len(c) for c in chunks)))
                self.end_headers()
                for c in chunks:  # a stream goes out event by event, as the API sends it
                    self.wfile.write(c)

            do_POST = do_GET = do_PUT = do_PATCH = do_DELETE = _respond  # noqa: N815 (the stdlib's names)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # a test's output is no place for an access log

        server = http.server.ThreadingHTTPServer((host, port), Handler)
        server.daemon_threads = True
        # A short poll, so that leaving the block takes milliseconds, not the default half second.
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01},
                                  name="flightrec-fake-model", daemon=True)
        thread.start()
        try:
            yield f"http://{host}:{server.server_address[1]}"
        finally:
            server.shutdown()
            server.server_close()
            thread.join()


def _error_body(kind: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": kind, "message": message}}


def _complete(message: Message, body: dict[str, Any], call: int) -> Message:
    """Fills what the answer left open: ids, the model, and token counts estimated from the text."""
    out = {**message, "content": [dict(b) for b in message.get("content") or ()]}
    for i, block in enumerate(out["content"]):
        if block.get("type") == "tool_use" and not block.get("id"):
            # Derived from the request, so a deterministic policy answers a replayed request identically.
            digest = hashlib.sha256(f"{canonical_json(body.get('messages'))}|{i}".encode()).hexdigest()[:20]
            block["id"] = f"toolu_fake{digest}"
    out["id"] = out.get("id") or f"msg_fake{call + 1:06d}"
    out["model"] = out.get("model") or body.get("model") or "fake-model"
    usage = dict(out.get("usage") or {})
    if usage.get("input_tokens") is None:
        usage["input_tokens"] = max(1, len(canonical_json({k: body.get(k) for k in ("system", "messages", "tools")}))
                                    // 4)
    if usage.get("output_tokens") is None:
        usage["output_tokens"] = max(1, len(canonical_json(out["content"])) // 4)
    usage.setdefault("cache_read_input_tokens", 0)
    usage.setdefault("cache_creation_input_tokens", 0)
    out["usage"] = usage
    out.setdefault("type", "message")
    out.setdefault("role", "assistant")
    out.setdefault("stop_sequence", None)
    if not out.get("stop_reason"):
        out["stop_reason"] = "tool_use" if any(b.get("type") == "tool_use" for b in out["content"]) else "end_turn"
    return out


class _Chunks(httpx2.SyncByteStream, httpx2.AsyncByteStream):
    """A body that arrives event by event, as over a socket (not pre-read), for sync and async clients."""

    def __init__(self, chunks: list[bytes]) -> None:
        self._chunks = chunks

    def __iter__(self) -> Iterator[bytes]:
        yield from self._chunks

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for c in self._chunks:
            yield c
