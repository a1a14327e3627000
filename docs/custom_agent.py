"""Your own agent under flightrec: a trip planner with two tools, offline, end to end.

    python docs/custom_agent.py                     # records one session into ./flightrec.duckdb
    flightrec eval run docs/trips.yaml --trials 5 --label baseline
    flightrec eval run docs/trips.yaml --trials 5 --agent docs.custom_agent:WITHOUT_WEATHER --baseline baseline

The agent is one plain function, ``plan_trip(case, client) -> str``; ``evals.agent`` turns it into
a registration that evals and replay can run (``--agent docs.custom_agent:TRIP_PLANNER``, or by its
name once a package registers it under the ``flightrec.agents`` entry-point group). The model is a
test double of the Messages API (``tracer.testing.FakeModel``) whose answers are computed from the
request, so the same request always gets the same answer: a replay without edits is "unchanged".
With a real key, make ``model`` return ``anthropic.Anthropic()`` instead.
"""

from __future__ import annotations

import json
import re
from typing import Any

import anthropic

import evals
import tracer
from tracer.testing import FakeModel, reply, tool_use

SYSTEM = "You plan short trips. Check the weather at the destination before you suggest flights."
TOOLS = [
    {"name": "get_weather", "description": "The forecast for a city.",
     "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}},
    {"name": "find_flights", "description": "Flights from one city to another.",
     "input_schema": {"type": "object", "properties": {"origin": {"type": "string"}, "destination": {"type": "string"}},
                      "required": ["origin", "destination"]}},
]


@tracer.tool
def get_weather(city: str) -> dict[str, Any]:
    return {"city": city, "forecast": "sunny", "high_c": 24}


@tracer.tool
def find_flights(origin: str, destination: str) -> list[dict[str, Any]]:
    return [{"flight": "TP 1351", "from": origin, "to": destination, "departs": "09:40", "price_eur": 129}]


def planner_model(body: dict[str, Any]) -> Any:
    """A deterministic model: weather first (when it may), then flights, then the answer."""
    ask = next(m["content"] for m in body["messages"] if m["role"] == "user" and isinstance(m["content"], str))
    trip = re.search(r"from (\w+) to (\w+)", ask)
    origin, destination = trip.groups() if trip else ("Paris", "Lisbon")
    offered = {t["name"] for t in body.get("tools") or ()}
    done = {b["name"] for m in body["messages"] if m["role"] == "assistant" and isinstance(m["content"], list)
            for b in m["content"] if b.get("type") == "tool_use"}
    if "get_weather" in offered and "get_weather" not in done:
        return reply(f"Let me check the weather in {destination}.", tool_use("get_weather", {"city": destination}))
    if "find_flights" not in done:
        return reply("Now the flights.", tool_use("find_flights", {"origin": origin, "destination": destination}))
    results = [json.loads(b["content"]) for m in body["messages"] if m["role"] == "user"
               and isinstance(m["content"], list) for b in m["content"] if b.get("type") == "tool_result"]
    forecast = next((r["forecast"] for r in results if isinstance(r, dict) and "forecast" in r), None)
    weather = f" It will be {forecast} there." if forecast else ""
    return reply(f"Take TP 1351 from {origin} to {destination} at 09:40 for 129 EUR.{weather}")


MODEL = FakeModel(policy=planner_model)


def plan_trip(case: evals.Case, client: anthropic.Anthropic, tools: list[dict[str, Any]] = TOOLS) -> str:
    """The agent: the Messages API tool-use loop. ``client`` is instrumented and the session open."""
    handlers = {"get_weather": get_weather, "find_flights": find_flights}
    messages: list[dict[str, Any]] = [{"role": "user", "content": case.input.messages[0].text}]
    for _ in range(10):
        answer = client.messages.create(model="claude-haiku-4-5", max_tokens=1024, system=SYSTEM, tools=tools,
                                        messages=messages)
        messages.append({"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in answer.content]})
        if answer.stop_reason != "tool_use":
            return "".join(b.text for b in answer.content if b.type == "text")
        messages.append({"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": b.id, "content": json.dumps(handlers[b.name](**b.input))}
            for b in answer.content if b.type == "tool_use"]})
    return "I could not finish planning the trip."


TRIP_PLANNER = evals.agent("trip-planner", model=lambda seed: MODEL.client(),
                           model_label="the trip planner's fake model",
                           tools={"get_weather": get_weather, "find_flights": find_flights})(plan_trip)
"""The agent, registered: ``--agent docs.custom_agent:TRIP_PLANNER`` (``docs/trips.yaml`` names it)."""


def _without_weather(case: evals.Case, client: anthropic.Anthropic) -> str:
    return plan_trip(case, client, tools=[t for t in TOOLS if t["name"] != "get_weather"])


WITHOUT_WEATHER = evals.agent("trip-planner", model=lambda seed: MODEL.client())(_without_weather)
"""A regression a deploy might ship: the weather tool fell out of the agent's tool list."""


if __name__ == "__main__":
    recorder = tracer.configure()  # ./flightrec.duckdb, or $FLIGHTREC_DB
    client = recorder.instrument(MODEL.client())
    trip = evals.Case(id="lisbon", input={"messages": ["A weekend from Paris to Lisbon, please."]},
                      expect=[{"type": "final_contains", "text": "Lisbon"}])
    with recorder.session("trip-planner") as session:
        print(plan_trip(trip, client))
    recorder.shutdown()
    print(f"recorded session {session.id}: try `flightrec replay run {session.id[:13]} --turn 1 "
          "--agent docs.custom_agent:TRIP_PLANNER`")
