"""The support agent the tracer tests record, on ``tracer.testing.FakeModel``, and its tool-use loop.

The real ``anthropic`` client talks to the fake, so the tests exercise the SDK's own request
building, retries, streaming and middleware exactly as in production.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import threading
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import anthropic

import tracer
from tracer._ingest import SpanRecord
from tracer._otlp import decode_request
from tracer.testing import FakeModel, error, reply, tool_use

TOOLS = [
    {"name": "get_order", "description": "Look up an order by id.",
     "input_schema": {"type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]}},
    {"name": "search_kb", "description": "Search the policy knowledge base.",
     "input_schema": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
     "cache_control": {"type": "ephemeral"}},
    {"name": "escalate_to_human", "description": "Hand the case to a person.",
     "input_schema": {"type": "object", "properties": {"reason": {"type": "string"}}}},
]


def message(content: list[dict[str, Any]], stop: str, *, model: str = "claude-haiku-4-5", input_tokens: int = 400,
            output_tokens: int = 40, cache_read: int = 0, cache_write: int = 0) -> dict[str, Any]:
    """A reply with fixed usage (400 input and 40 output tokens unless told), so that costs are round."""
    return reply(*content, stop_reason=stop, model=model, input_tokens=input_tokens, output_tokens=output_tokens,
                 cache_read_input_tokens=cache_read, cache_creation_input_tokens=cache_write)


class FakeAPI(FakeModel):
    """A FakeModel that plays a policy: by default, look the order up, then answer.

    ``errors`` is a list of HTTP statuses to answer, one per request, before the policy's answers.
    ``chunked`` streams bodies as a live socket would, so the tee path of capture is exercised.
    """

    def __init__(self, policy: Callable[[dict[str, Any]], dict[str, Any]] | None = None, *,
                 errors: Sequence[int] | None = None, chunked: bool = True) -> None:
        failures = [error(status, "try later") for status in errors or ()]
        answer = policy or support_policy

        def play(body: dict[str, Any]) -> Any:
            return failures.pop(0) if failures else answer(body)

        super().__init__(policy=play, chunked=chunked)


def support_policy(body: dict[str, Any]) -> dict[str, Any]:
    last = body["messages"][-1]["content"]
    if isinstance(last, str):
        return message([{"type": "text", "text": "Let me check the order."},
                        tool_use("get_order", {"order_id": "A-1"}, id=f"toolu_{len(body['messages'])}")], "tool_use")
    return message([{"type": "text", "text": "Order A-1 shipped. Contact: help@shop.example"}], "end_turn")


@tracer.tool
def get_order(order_id: str, **extra: Any) -> dict[str, Any]:
    return {"order_id": order_id, "status": "shipped"}


def run_agent(client: anthropic.Anthropic, question: str = "Where is A-1?", *, stream: bool = False,
              max_turns: int = 10, **params: Any) -> list[dict[str, Any]]:
    """The plain tool-use loop; returns the final message list."""
    messages: list[dict[str, Any]] = [{"role": "user", "content": question}]
    params = {"model": "claude-haiku-4-5", "max_tokens": 512, "system": "You help customers.", "tools": TOOLS,
              **params}
    for _ in range(max_turns):
        if stream:
            with client.messages.stream(messages=messages, **params) as s:
                reply = s.get_final_message()
        else:
            reply = client.messages.create(messages=messages, **params)
        messages.append({"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in reply.content]})
        if reply.stop_reason != "tool_use":
            break
        results = [{"type": "tool_result", "tool_use_id": b.id, "content": json.dumps(get_order(**b.input))}
                   for b in reply.content if b.type == "tool_use"]
        messages.append({"role": "user", "content": results})
    return messages


async def run_agent_async(client: anthropic.AsyncAnthropic, *, stream: bool = False) -> None:
    messages: list[dict[str, Any]] = [{"role": "user", "content": "Where is A-1?"}]
    params = {"model": "claude-haiku-4-5", "max_tokens": 512, "tools": TOOLS}
    for _ in range(5):
        if stream:
            async with client.messages.stream(messages=messages, **params) as s:
                reply = await s.get_final_message()
        else:
            reply = await client.messages.create(messages=messages, **params)
        messages.append({"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in reply.content]})
        if reply.stop_reason != "tool_use":
            return
        await asyncio.sleep(0)
        messages.append({"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": b.id, "content": json.dumps(get_order(**b.input))}
            for b in reply.content if b.type == "tool_use"]})


class OtlpBackend:
    """Another OTLP/HTTP backend on loopback, not flightrec: it keeps what it is sent, as the raw
    (decompressed) bodies, their paths and the spans they decode to."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.spans: list[SpanRecord] = []
        self.paths: list[str] = []
        backend = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                backend.paths.append(self.path)
                backend.bodies.append(gzip.decompress(body) if self.headers.get("Content-Encoding") == "gzip"
                                      else body)
                backend.spans += decode_request(body, self.headers["Content-Type"],
                                                self.headers.get("Content-Encoding"))[0]
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_GET(self) -> None:  # noqa: N802
                self.send_error(404)

            def log_message(self, *args) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
