"""Instrument an Anthropic-SDK agent with flightrec, offline: a fake model stands in for the API."""

import json

import anthropic
import httpx2

import tracer


def fake_messages_api(request: httpx2.Request) -> httpx2.Response:
    """Answers like the Messages API: first asks for a tool, then answers from its result."""
    body = json.loads(request.content)
    last = body["messages"][-1]["content"]
    if isinstance(last, str):
        content = [
            {"type": "text", "text": "I'll look the order up."},
            {"type": "tool_use", "id": "toolu_01", "name": "get_order", "input": {"order_id": "A-1001"}},
        ]
        stop = "tool_use"
    else:
        content = [{"type": "text", "text": "Order A-1001 shipped yesterday; it arrives Friday."}]
        stop = "end_turn"
    return httpx2.Response(200, json={
        "id": "msg_01", "type": "message", "role": "assistant", "model": body["model"],
        "content": content, "stop_reason": stop, "stop_sequence": None,
        "usage": {"input_tokens": 412, "output_tokens": 38},
    })


recorder = tracer.configure()  # writes ./flightrec.duckdb, or the file $FLIGHTREC_DB names
client = recorder.instrument(anthropic.Anthropic(
    api_key="offline", http_client=httpx2.Client(transport=httpx2.MockTransport(fake_messages_api)),
))


@tracer.tool
def get_order(order_id: str) -> dict:
    return {"order_id": order_id, "status": "shipped", "eta": "Friday"}


TOOLS = [{
    "name": "get_order",
    "description": "Look up an order by id.",
    "input_schema": {"type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]},
}]

with recorder.session(agent="quickstart") as session:
    messages = [{"role": "user", "content": "Where is my order A-1001?"}]
    while True:
        reply = client.messages.create(
            model="claude-haiku-4-5", max_tokens=1024, system="You are a support agent.",
            messages=messages, tools=TOOLS,
        )
        messages.append({"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in reply.content]})
        if reply.stop_reason != "tool_use":
            break
        results = [
            {"type": "tool_result", "tool_use_id": b.id, "content": json.dumps(get_order(**b.input))}
            for b in reply.content if b.type == "tool_use"
        ]
        messages.append({"role": "user", "content": results})

recorder.shutdown()  # flush (it also happens at exit)
print(f"recorded session {session.id}: see it with `flightrec traces show {session.id[:13]}`")
