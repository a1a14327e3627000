"""A scripted Messages API behind an httpx2 transport, and a small agent loop to drive it.

The real ``anthropic`` client talks to it, so the tests exercise the SDK's own request building,
retries, streaming and middleware exactly as in production.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import anthropic
import httpx2

import tracer

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
    return {
        "id": "msg_test", "type": "message", "role": "assistant", "model": model, "content": content,
        "stop_reason": stop, "stop_sequence": None,
        "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens,
                  "cache_read_input_tokens": cache_read, "cache_creation_input_tokens": cache_write},
    }


class _Chunks(httpx2.SyncByteStream, httpx2.AsyncByteStream):
    """A body that arrives chunk by chunk, as over a socket (not pre-read like ``content=``)."""

    def __init__(self, chunks: list[bytes]) -> None:
        self._chunks = chunks

    def __iter__(self) -> Iterator[bytes]:
        yield from self._chunks

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for c in self._chunks:
            yield c


class FakeAPI:
    """A Messages API that plays a policy: by default, look the order up, then answer.

    ``errors`` is a list of HTTP statuses to return, one per request, before normal answers.
    ``chunked`` streams bodies as a live socket would, so the tee path of capture is exercised.
    """

    def __init__(self, policy: Callable[[dict[str, Any]], dict[str, Any]] | None = None, *,
                 errors: list[int] | None = None, chunked: bool = True) -> None:
        self.policy = policy or support_policy
        self.errors = list(errors or [])
        self.chunked = chunked
        self.requests: list[dict[str, Any]] = []

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        body = json.loads(request.content)
        self.requests.append(body)
        if self.errors:
            status = self.errors.pop(0)
            kind = {429: "rate_limit_error", 529: "overloaded_error"}.get(status, "api_error")
            return httpx2.Response(status, json={"type": "error", "error": {"type": kind, "message": "try later"}},
                                   headers={"retry-after-ms": "1"})
        msg = self.policy(body)
        if body.get("stream"):
            chunks = list(tracer.sse_events(msg, chunk=8))
            headers = {"content-type": "text/event-stream"}
            if self.chunked:
                return httpx2.Response(200, headers=headers, stream=_Chunks(chunks))
            return httpx2.Response(200, headers=headers, content=b"".join(chunks))
        return httpx2.Response(200, json=msg)

    async def handle_async(self, request: httpx2.Request) -> httpx2.Response:
        await request.aread()
        return self(request)

    def client(self, **kwargs: Any) -> anthropic.Anthropic:
        return anthropic.Anthropic(api_key="test", http_client=httpx2.Client(transport=httpx2.MockTransport(self)),
                                   **kwargs)

    def async_client(self, **kwargs: Any) -> anthropic.AsyncAnthropic:
        transport = httpx2.MockTransport(self.handle_async)
        return anthropic.AsyncAnthropic(api_key="test", http_client=httpx2.AsyncClient(transport=transport),
                                        **kwargs)


def support_policy(body: dict[str, Any]) -> dict[str, Any]:
    last = body["messages"][-1]["content"]
    if isinstance(last, str):
        return message([{"type": "text", "text": "Let me check the order."},
                        {"type": "tool_use", "id": f"toolu_{len(body['messages'])}", "name": "get_order",
                         "input": {"order_id": "A-1"}}], "tool_use")
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
