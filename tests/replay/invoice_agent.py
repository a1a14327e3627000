"""A second custom agent, shaped unlike the reference agent and the trip planner: it streams,
pages through a list with a cursor, and has a side effect (a reminder e-mail).

Its model is a ``tracer.testing.FakeModel`` policy: it lists overdue invoices page by page, sends
one reminder per overdue invoice, then reports. ``REMINDERS`` counts the side effects, so a test
can see that a fork served them from the recording instead of sending them again.
"""

from __future__ import annotations

import json
from typing import Any

import anthropic

import evals
import tracer
from tracer.testing import FakeModel, reply, tool_use

NAME = "invoice-clerk"
SYSTEM = "You chase overdue invoices. List them all, page by page, and send one reminder for each overdue one."
TOOLS = [
    {"name": "list_invoices", "description": "One page of invoices.",
     "input_schema": {"type": "object", "properties": {"cursor": {"type": "string"}}}},
    {"name": "send_reminder", "description": "E-mail the customer a payment reminder.",
     "input_schema": {"type": "object", "properties": {"invoice": {"type": "string"}}, "required": ["invoice"]}},
]
PAGES = {"": (["INV-1", "INV-2"], "p2"), "p2": (["INV-3"], None)}
OVERDUE = {"INV-1", "INV-3"}
REMINDERS: list[str] = []


@tracer.tool
def list_invoices(cursor: str = "") -> dict[str, Any]:
    ids, following = PAGES[cursor]
    return {"invoices": [{"id": i, "overdue": i in OVERDUE} for i in ids], "next_cursor": following}


@tracer.tool
def send_reminder(invoice: str) -> dict[str, Any]:
    REMINDERS.append(invoice)
    return {"sent": invoice}


def clerk_model(body: dict[str, Any]) -> Any:
    """Pages on while there is a cursor, then reminds each overdue invoice not yet reminded, then reports."""
    results = [json.loads(b["content"]) for m in body["messages"] if m["role"] == "user"
               and isinstance(m["content"], list) for b in m["content"] if b.get("type") == "tool_result"]
    pages = [r for r in results if "invoices" in r]
    reminded = {r["sent"] for r in results if "sent" in r}
    offered = {t["name"] for t in body.get("tools") or ()}
    if not pages:
        return reply(tool_use("list_invoices", {}))
    if pages[-1]["next_cursor"]:
        return reply(tool_use("list_invoices", {"cursor": pages[-1]["next_cursor"]}))
    due = [i["id"] for p in pages for i in p["invoices"] if i["overdue"] and i["id"] not in reminded]
    if due and "send_reminder" in offered:
        return reply(f"Reminding {due[0]}.", tool_use("send_reminder", {"invoice": due[0]}))
    return reply(f"Done: {len(reminded)} reminders sent ({', '.join(sorted(reminded)) or 'none'}).")


MODEL = FakeModel(policy=clerk_model)


def chase(case: evals.Case, client: anthropic.Anthropic, *, system: str = SYSTEM,
          tools: list[dict[str, Any]] = TOOLS) -> str:
    """The agent's loop, streaming every call."""
    handlers = {"list_invoices": list_invoices, "send_reminder": send_reminder}
    messages: list[dict[str, Any]] = [{"role": "user", "content": case.input.messages[0].text}]
    for _ in range(12):
        with client.messages.stream(model="claude-sonnet-4-5", max_tokens=512, system=system, tools=tools,
                                    messages=messages) as stream:
            answer = stream.get_final_message()
        messages.append({"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in answer.content]})
        if answer.stop_reason != "tool_use":
            return "".join(b.text for b in answer.content if b.type == "text")
        messages.append({"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": b.id, "content": json.dumps(handlers[b.name](**b.input))}
            for b in answer.content if b.type == "tool_use"]})
    return "gave up"


INVOICE_CLERK = evals.agent(NAME, model=lambda seed: MODEL.client(),
                            tools={"list_invoices": list_invoices, "send_reminder": send_reminder})(chase)
"""Registered by the tests' entry point (``test_custom_agents.registered``); also ``--agent
tests.replay.invoice_agent:INVOICE_CLERK``."""


def _terse(case: evals.Case, client: anthropic.Anthropic) -> str:
    return chase(case, client, system="Chase overdue invoices.")


CHANGED_PROMPT = evals.agent(NAME, model=lambda seed: MODEL.client())(_terse)
"""The same agent after a code change (its system prompt): a rerun must find the divergence."""


def _no_reminders(case: evals.Case, client: anthropic.Anthropic) -> str:
    return chase(case, client, tools=[t for t in TOOLS if t["name"] != "send_reminder"])


WITHOUT_REMINDERS = evals.agent(NAME, model=lambda seed: MODEL.client())(_no_reminders)
"""A regression: the reminder tool fell out of the agent's tool list."""


def record(recorder: tracer.Recorder, ask: str = "Chase this month's overdue invoices.") -> str:
    """One production-style session (the agent's own code, not the eval harness); its id."""
    case = evals.Case(id="prod", input={"messages": [ask]}, expect=[{"type": "final_contains", "text": "Done"}])
    with recorder.session(NAME) as session:
        chase(case, recorder.instrument(MODEL.client()))
    return session.id
