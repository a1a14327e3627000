"""The simulated Messages API: the real wire format, a seeded policy, faults on demand.

The real ``anthropic`` client reaches it either in process, through an httpx2 transport
(``sim_client(options)``), or over HTTP (``SimServer``, which ``flightrec sim serve`` runs).
Both go through ``SimulatedModel.respond``, so they answer alike:

- ``POST /v1/messages``, streaming or not: ``text`` and ``tool_use`` blocks, stop reasons
  (``end_turn``, ``tool_use``, ``max_tokens``, ``refusal``) and usage, with cache reads and
  writes when the request carries ``cache_control``;
- a malformed request gets the API's 400 ``invalid_request_error`` (for example a ``tool_use``
  left without its ``tool_result``), so an agent bug shows up as it would against the real API;
- faults by spec (``FaultSpec``): 429, 500 and 529 errors with a ``retry-after-ms`` header,
  timeouts, and latency, at a given call and attempt or at a seeded rate.

Input tokens are estimated from the request's size (four characters a token). Which call of a
conversation a request is comes from its message list, and which attempt from the SDK's
``x-stainless-retry-count`` header, so the simulator keeps no per-conversation state and a
(scenario, seed) pair always plays out the same way. Options travel in process as an object
and over HTTP in the ``x-flightrec-sim`` header.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

import anthropic
import httpx2
import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from tracer import sse_events, validation_problems

from ._errors import AgentConfigError
from ._policy import MISBEHAVIOURS, Act, Mind, Misbehaviour, read_request

SIM_HEADER = "x-flightrec-sim"
SIM_BASE_URL = "http://sim.flightrec.invalid"
"""Where the in-process client points; nothing ever resolves it, the transport answers first."""
DEFAULT_MODEL = "claude-haiku-4-5"
_CHARS_PER_TOKEN = 4
_CACHE_TTL_S = {"5m": 300.0, "1h": 3600.0}
_MAX_STALL_S = 30.0
_FAULT_RE = re.compile(r"^(?P<kind>429|500|529|timeout|latency)(?::(?P<ms>\d+))?"
                       r"(?:@(?P<call>\d+)(?:x(?P<times>\d+))?|%(?P<pct>\d+(?:\.\d+)?))?(?:/(?P<model>[\w.-]+))?$")
_ERRORS = {
    429: ("rate_limit_error", "This request would exceed the rate limit for your organization (simulated)."),
    500: ("api_error", "Internal server error (simulated)."),
    529: ("overloaded_error", "Overloaded (simulated)."),
}

FaultKind = Literal["429", "500", "529", "timeout", "latency"]


@dataclass(frozen=True)
class FaultSpec:
    """One fault to inject, parsed from ``KIND[:MS][@CALL][xTIMES][/MODEL]`` or ``KIND[:MS]%PERCENT[/MODEL]``.

    ``KIND`` is 429, 500, 529, ``timeout`` or ``latency`` (``MS`` is the delay, 500 by default).
    ``@CALL`` picks the conversation's LLM call (0-based, default 0) and ``xTIMES`` how many of
    its attempts fail (default 1), so that the client's retries recover; ``%PERCENT`` hits that
    share of all attempts instead, drawn from the seed. ``/MODEL`` limits the fault to requests
    for that model (one model overloaded while another answers).

    Examples: ``529``, ``429@2``, ``500@1x3``, ``timeout@0``, ``latency:800@1``, ``529%5``,
    ``529@1x9/claude-sonnet-4-5``.
    """

    kind: FaultKind
    call: int | None = 0
    times: int = 1
    rate: float | None = None
    ms: int = 500
    model: str | None = None

    @classmethod
    def parse(cls, spec: str) -> FaultSpec:
        m = _FAULT_RE.match(spec.strip())
        if m is None:
            raise AgentConfigError(f"bad fault spec {spec!r}: use KIND[:MS][@CALL][xTIMES][/MODEL] or "
                                   "KIND[:MS]%PERCENT[/MODEL], with KIND one of 429, 500, 529, timeout, latency (for "
                                   "example 529@1x2, 429%5 or 529@1x9/claude-sonnet-4-5).")
        if m["pct"] is not None:
            rate = float(m["pct"]) / 100
            if not 0 < rate <= 1:
                raise AgentConfigError(f"bad fault spec {spec!r}: the percentage must be above 0 and at most 100.")
            return cls(m["kind"], None, 0, rate, int(m["ms"] or 500), m["model"])  # type: ignore[arg-type]
        return cls(m["kind"], int(m["call"] or 0), int(m["times"] or 1), None, int(m["ms"] or 500),  # type: ignore[arg-type]
                   m["model"])

    def hits(self, call: int, attempt: int, draw: float, model: str | None = None) -> bool:
        """Whether this fault strikes attempt ``attempt`` of call ``call`` to ``model`` (``draw`` is a
        seeded uniform)."""
        if self.model is not None and model != self.model:
            return False
        if self.rate is not None:
            return draw < self.rate
        return call == self.call and attempt < self.times


class SimOptions(BaseModel):
    """How the simulated model behaves for one conversation (or, as a server default, for all)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = 0
    """Trials with the same seed take the same path; different seeds vary plausibly."""
    scenario: str | None = None
    """The scenario's name, which keys the seeded choices; without it the first user message does."""
    misbehave: tuple[Misbehaviour, ...] = ()
    """Misbehaviours to act out (loop, wrong_tool, hallucinate, runaway, ignore_rule)."""
    faults: tuple[str, ...] = ()
    """Fault specs (see ``FaultSpec``)."""
    latency_ms: int = Field(default=0, ge=0, le=60_000)
    """Added to every response."""
    retry_after_ms: int = Field(default=10, ge=0, le=60_000)
    """The ``retry-after-ms`` that 429, 500 and 529 responses carry; the SDK waits that long."""

    @field_validator("faults")
    @classmethod
    def _parse_faults(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for spec in value:
            try:
                FaultSpec.parse(spec)
            except AgentConfigError as exc:
                raise ValueError(str(exc)) from None
        return value


def sim_options(**values: Any) -> SimOptions:
    """``SimOptions(**values)``, with a bad value reported as an ``AgentConfigError`` that names it."""
    try:
        return SimOptions(**values)
    except ValidationError as exc:
        hint = f" (one of {', '.join(MISBEHAVIOURS)})" if exc.errors()[0]["loc"][:1] == ("misbehave",) else ""
        raise AgentConfigError(f"bad simulator option {validation_problems(exc, most=1).rstrip('.')}{hint}.") from None


@dataclass(frozen=True)
class SimReply:
    """What the simulator answers one HTTP attempt with."""

    status: int
    body: dict[str, Any] | None
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    timeout: bool = False
    """Say nothing: the client's read timeout fires."""
    stream: bool = False


class PromptCache:
    """Which cacheable prefixes were written, and when; shared by the conversations of one server."""

    def __init__(self) -> None:
        self._written: dict[str, float] = {}
        self._lock = threading.Lock()

    def hit(self, key: str, ttl_s: float) -> bool:
        """Whether ``key`` is cached now; records a write when it is not."""
        now = time.monotonic()
        with self._lock:
            at = self._written.get(key)
            if at is not None and now - at < ttl_s:
                self._written[key] = now  # a read refreshes the entry, as the API's cache does
                return True
            self._written[key] = now
            return False


def _size(value: Any) -> int:
    return len(orjson.dumps(value)) if value is not None else 0


def _tokens(chars: int) -> int:
    return max(1, -(-chars // _CHARS_PER_TOKEN))


def _cache_ttl(body: dict[str, Any]) -> str | None:
    """The TTL of the request's prompt-cache breakpoint on its tools or system prompt, if it has one."""
    blocks = list(body.get("tools") or ())
    if isinstance(body.get("system"), list):
        blocks += body["system"]
    ttl = None
    for b in blocks:
        cc = b.get("cache_control") if isinstance(b, dict) else None
        if cc:
            ttl = "1h" if cc.get("ttl") == "1h" or ttl == "1h" else "5m"
    return ttl


def _invalid(message: str) -> SimReply:
    return SimReply(400, {"type": "error", "error": {"type": "invalid_request_error", "message": message}})


def check_request(body: dict[str, Any]) -> str | None:
    """What the real API would reject the request for, or ``None``."""
    for key in ("model", "max_tokens", "messages"):
        if key not in body:
            return f"{key}: Field required"
    messages = body["messages"]
    if not isinstance(messages, list) or not messages:
        return "messages: at least one message is required"
    if messages[0].get("role") != "user":
        return "messages: the first message must use the \"user\" role"
    if messages[-1].get("role") != "user":
        return "messages: the final message must use the \"user\" role (prefill is not simulated)"
    for i, msg in enumerate(messages):
        content = msg.get("content")
        if msg.get("role") != "assistant" or isinstance(content, str):
            continue
        ids = [b.get("id") for b in content or () if b.get("type") == "tool_use"]
        if not ids:
            continue
        nxt = messages[i + 1] if i + 1 < len(messages) else {}
        answered = {b.get("tool_use_id") for b in nxt.get("content") or () if isinstance(b, dict)
                    and b.get("type") == "tool_result"}
        lost = [x for x in ids if x not in answered]
        if lost:
            return (f"messages.{i + 1}: `tool_use` ids were found without `tool_result` blocks immediately after: "
                    f"{', '.join(lost)}. Each `tool_use` block must have a corresponding `tool_result` block in the "
                    "next message.")
    return None


class SimulatedModel:
    """Answers Messages API requests for one set of options.

    Args:
        options: Seed, scenario, misbehaviours and faults.
        cache: The prompt cache to use; a new one by default (one per conversation in process).

    Thread-safe: ``respond`` keeps no state but the prompt cache, which is locked.
    """

    def __init__(self, options: SimOptions | None = None, *, cache: PromptCache | None = None) -> None:
        self.options = options or SimOptions()
        self.cache = cache or PromptCache()
        self._faults = tuple(FaultSpec.parse(f) for f in self.options.faults)

    def respond(self, body: dict[str, Any], *, attempt: int = 0) -> SimReply:
        """The reply to one attempt of a request."""
        problem = check_request(body)
        if problem:
            return _invalid(problem)
        opts = self.options
        view = read_request(body)
        key = opts.scenario or (view.user_texts[0] if view.user_texts else "")
        delay = opts.latency_ms / 1000
        for i, fault in enumerate(self._faults):
            draw = random.Random(f"{key}|{opts.seed}|fault|{i}|{view.call_index}|{attempt}").random()
            if not fault.hits(view.call_index, attempt, draw, body.get("model")):
                continue
            if fault.kind == "latency":
                delay += fault.ms / 1000
                continue
            if fault.kind == "timeout":
                return SimReply(0, None, delay_s=delay, timeout=True)
            status = int(fault.kind)
            kind, message = _ERRORS[status]
            return SimReply(status, {"type": "error", "error": {"type": kind, "message": message}},
                            headers={"retry-after-ms": str(opts.retry_after_ms),
                                     "retry-after": str(max(1, -(-opts.retry_after_ms // 1000)))},
                            delay_s=delay)
        act = Mind(key, opts.seed, frozenset(opts.misbehave)).decide(view)
        return SimReply(200, self._message(body, act, key, view.call_index, attempt), delay_s=delay,
                        stream=bool(body.get("stream")))

    def _message(self, body: dict[str, Any], act: Act, key: str, call: int, attempt: int) -> dict[str, Any]:
        digest = hashlib.sha256(f"{key}|{self.options.seed}|{call}".encode()).hexdigest()
        content: list[dict[str, Any]] = []
        if act.text:
            content.append({"type": "text", "text": act.text})
        for i, use in enumerate(act.uses):
            content.append({"type": "tool_use", "id": f"toolu_sim{digest[:20]}{i:02d}", "name": use.name,
                            "input": use.input})
        stop = act.stop or ("tool_use" if act.uses else "end_turn")
        output = _tokens(_size(content))
        max_tokens = int(body.get("max_tokens") or 1)
        if output > max_tokens:
            # Cut off mid-answer, as the API does: the tool calls never got written.
            text = act.text[: max_tokens * _CHARS_PER_TOKEN]
            content = [{"type": "text", "text": text}] if text else []
            stop, output = "max_tokens", max_tokens
        total = _tokens(_size(body.get("system")) + _size(body.get("tools")) + _size(body.get("messages")))
        usage: dict[str, Any] = {"input_tokens": total, "output_tokens": output,
                                 "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
        ttl = _cache_ttl(body)
        if ttl is not None:
            prefix = min(_tokens(_size(body.get("tools")) + _size(body.get("system"))), total)
            fingerprint = hashlib.sha256(orjson.dumps([body.get("model"), body.get("tools"), body.get("system")]))
            if self.cache.hit(fingerprint.hexdigest(), _CACHE_TTL_S[ttl]):
                usage["cache_read_input_tokens"] = prefix
            else:
                usage["cache_creation_input_tokens"] = prefix
                usage["cache_creation"] = {"ephemeral_5m_input_tokens": prefix if ttl == "5m" else 0,
                                           "ephemeral_1h_input_tokens": prefix if ttl == "1h" else 0}
            usage["input_tokens"] = total - prefix
        return {"id": f"msg_sim{digest[20:44]}{attempt}", "type": "message", "role": "assistant",
                "model": body["model"], "content": content, "stop_reason": stop, "stop_sequence": None,
                "usage": usage}

    # -- in process ------------------------------------------------------------------------------

    def handle(self, request: httpx2.Request) -> httpx2.Response:
        """An httpx2 ``MockTransport`` handler: the API in process."""
        if request.method != "POST" or not request.url.path.rstrip("/").endswith("/v1/messages"):
            return httpx2.Response(404, json={"type": "error", "error": {
                "type": "not_found_error", "message": f"{request.method} {request.url.path} is not simulated."}})
        try:
            body = json.loads(request.content)
        except ValueError:
            return _response(_invalid("the request body is not JSON"))
        reply = self.respond(body, attempt=int(request.headers.get("x-stainless-retry-count", "0") or 0))
        if reply.delay_s:
            time.sleep(reply.delay_s)
        if reply.timeout:
            # In process there is no socket to wait on: fail as the client would after its read timeout.
            raise httpx2.ReadTimeout("simulated: the model did not answer within the read timeout", request=request)
        return _response(reply)


class _EventStream(httpx2.SyncByteStream):
    """A streamed body that arrives event by event, as over a socket, not read into memory up front."""

    def __init__(self, message: dict[str, Any]) -> None:
        self._message = message

    def __iter__(self) -> Iterator[bytes]:
        yield from sse_events(self._message)


def _response(reply: SimReply) -> httpx2.Response:
    if reply.stream and reply.status == 200 and reply.body is not None:
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, stream=_EventStream(reply.body))
    return httpx2.Response(reply.status, json=reply.body, headers=reply.headers)


def sim_client(options: SimOptions | None = None, *, url: str | None = None, max_retries: int = 4,
               timeout: float = 30.0) -> anthropic.Anthropic:
    """A real ``anthropic.Anthropic`` client whose API is the simulator.

    Args:
        options: How the model behaves for this conversation.
        url: A running ``flightrec sim serve`` (``http://127.0.0.1:8765``); in process when ``None``.
        max_retries: The SDK's retries of 429, 5xx and timeouts.
        timeout: The client's request timeout in seconds.
    """
    options = options or SimOptions()
    if url:
        return anthropic.Anthropic(api_key="sim", base_url=url, max_retries=max_retries, timeout=timeout,
                                   default_headers={SIM_HEADER: options.model_dump_json(exclude_defaults=True)})
    transport = httpx2.MockTransport(SimulatedModel(options).handle)
    return anthropic.Anthropic(api_key="sim", base_url=SIM_BASE_URL, max_retries=max_retries, timeout=timeout,
                               http_client=httpx2.Client(transport=transport))


# -- over HTTP -----------------------------------------------------------------------------------


class SimServer:
    """The simulator on a local HTTP port, for agents in other processes (``flightrec sim serve``).

    Args:
        host: Interface to bind; loopback by default.
        port: Port to bind; 0 picks a free one (see ``url``).
        defaults: Options for requests that carry no ``x-flightrec-sim`` header; a header's
            fields override them.
        log: Called with one line per request, if given.

    Each request is answered on its own thread. Use it as a context manager, or call
    ``start()`` (background thread) or ``serve_forever()`` (blocks), then ``close()``.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, defaults: SimOptions | None = None,
                 log: Any = None) -> None:
        self.defaults = defaults or SimOptions()
        self.cache = PromptCache()
        self._log = log
        server = self

        class Handler(_Handler):
            sim = server

        try:
            self._httpd = ThreadingHTTPServer((host, port), Handler)
        except OSError as exc:
            raise AgentConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}. "
                                   "Pick another --port.") from None
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def options_for(self, header: str | None) -> SimOptions:
        if not header:
            return self.defaults
        return self.defaults.model_copy(update=SimOptions.model_validate_json(header).model_dump(exclude_unset=True))

    def serve_forever(self) -> None:
        self._httpd.serve_forever(poll_interval=0.1)

    def start(self) -> SimServer:
        self._thread = threading.Thread(target=self.serve_forever, name="flightrec-sim", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Stops serving (if ``start()`` was used) and frees the port."""
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
        self._httpd.server_close()

    def __enter__(self) -> SimServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Handler(BaseHTTPRequestHandler):
    sim: SimServer
    protocol_version = "HTTP/1.1"
    server_version = "flightrec-sim"
    # Headers and body go out as separate writes; with Nagle's algorithm on, each response would
    # wait for the client's delayed ACK (about 40 ms).
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        if self.sim._log is not None:
            self.sim._log(f"{self.address_string()} {format % args}")

    def _send(self, status: int, body: bytes, headers: dict[str, str], *, close: bool = False) -> None:
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("content-length", str(len(body)))
        if close:
            self.send_header("connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path.rstrip("/") in ("", "/health"):
            self._send(200, b'{"status":"ok"}', {"content-type": "application/json"})
        else:
            self._send(404, b'{"type":"error","error":{"type":"not_found_error","message":"not simulated"}}',
                       {"content-type": "application/json"})

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("content-length") or 0))
        if self.path.split("?", 1)[0].rstrip("/") != "/v1/messages":
            self._send(404, b'{"type":"error","error":{"type":"not_found_error","message":"not simulated"}}',
                       {"content-type": "application/json"})
            return
        try:
            options = self.sim.options_for(self.headers.get(SIM_HEADER))
            body = json.loads(raw)
        except (ValueError, ValidationError) as exc:
            reply = _invalid(f"bad request or {SIM_HEADER} header: {str(exc).splitlines()[0]}")
        else:
            model = SimulatedModel(options, cache=self.sim.cache)
            reply = model.respond(body, attempt=int(self.headers.get("x-stainless-retry-count") or 0))
        if reply.delay_s:
            time.sleep(reply.delay_s)
        if reply.timeout:
            # Stay silent past the client's read timeout, then hang up.
            read_timeout = float(self.headers.get("x-stainless-read-timeout") or _MAX_STALL_S)
            time.sleep(min(read_timeout + 0.5, _MAX_STALL_S))
            self.close_connection = True
            return
        if reply.stream and reply.status == 200 and reply.body is not None:
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("connection", "close")
            self.close_connection = True
            self.end_headers()
            for chunk in sse_events(reply.body):
                self.wfile.write(chunk)
                self.wfile.flush()
            return
        self._send(reply.status, json.dumps(reply.body).encode(), {"content-type": "application/json", **reply.headers})
