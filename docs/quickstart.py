"""Instrument an Anthropic-SDK agent with flightrec, offline: a fake model stands in for the API."""

import json

import tracer
from tracer.testing import FakeModel, reply, tool_use

# The model's answers, one per call: ask for a tool, then answer from its result.
fake = FakeModel([
    reply("I'll look the order up.", tool_use("get_order", {"order_id": "A-1001"})),
    reply("Order A-1001 shipped yesterday; it arrives Friday."),
])

recorder = tracer.configure()  # writes ./flightrec.duckdb, or the file $FLIGHTREC_DB names
client = recorder.instrument(fake.client())  # with a key: recorder.instrument(anthropic.Anthropic())


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
        response = client.messages.create(
            model="claude-haiku-4-5", max_tokens=1024, system="You are a support agent.",
            messages=messages, tools=TOOLS,
        )
        messages.append({"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in response.content]})
        if response.stop_reason != "tool_use":
            break
        results = [
            {"type": "tool_result", "tool_use_id": b.id, "content": json.dumps(get_order(**b.input))}
            for b in response.content if b.type == "tool_use"
        ]
        messages.append({"role": "user", "content": results})

recorder.shutdown()  # flush (it also happens at exit)
print(f"recorded session {session.id}: see it with `flightrec traces show {session.id[:13]}`")
