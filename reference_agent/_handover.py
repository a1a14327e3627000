"""What a human colleague gets with an escalation: the session's own record, not the model's words.

``escalate_to_human`` takes a reason from the model, which may be vague or wrong. The ticket
also carries what the session itself recorded: the customer's request (their messages), every
tool the agent called with its outcome, and the evidence those calls turned up (order ids,
amounts, errors). It is read from the checkpoint's messages and results, so it is the same
whether the model summarised well or not.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from tracer import clip_text

_ORDER = re.compile(r"\bA-\d{4}\b")
_REQUEST_CHARS = 500


@dataclass(frozen=True)
class Handover:
    """An escalation's context."""

    request: str
    """The customer's messages, oldest first, clipped."""
    tried: tuple[str, ...]
    """Each tool call before the escalation and how it ended: ``get_order A-1011: error service_unavailable``."""
    order_ids: tuple[str, ...]
    """Orders the conversation and the tool calls named."""
    amounts_cents: tuple[int, ...]
    """Amounts the tool calls asked for or returned (refunds, totals)."""
    errors: tuple[str, ...]
    """Error codes and messages the tools answered with."""

    @property
    def summary(self) -> str:
        """One paragraph for the colleague who picks the ticket up."""
        tried = "; ".join(self.tried) or "nothing yet"
        evidence = []
        if self.order_ids:
            evidence.append(f"orders {', '.join(self.order_ids)}")
        if self.amounts_cents:
            evidence.append("amounts " + ", ".join(f"${a / 100:,.2f}" for a in self.amounts_cents))
        if self.errors:
            evidence.append("errors: " + " | ".join(self.errors))
        return (f"The customer asked: {clip_text(self.request, 300)} Tried: {tried}."
                + (f" Evidence: {'; '.join(evidence).rstrip('.')}." if evidence else ""))

    def record(self) -> dict[str, Any]:
        """The hand-over as the ticket stores it (JSON-ready)."""
        return {"summary": self.summary, "request": self.request, "tried": list(self.tried),
                "evidence": {"order_ids": list(self.order_ids), "amounts_cents": list(self.amounts_cents),
                             "errors": list(self.errors)}}

    def attributes(self) -> dict[str, Any]:
        """The hand-over as the escalation's tool span records it."""
        return {"flightrec.escalation.summary": self.summary, "flightrec.escalation.request": self.request,
                "flightrec.escalation.tried": list(self.tried),
                "flightrec.escalation.evidence": json.dumps(self.record()["evidence"], sort_keys=True)}


def _parse(content: Any) -> Any:
    if isinstance(content, str):
        try:
            return json.loads(content)
        except ValueError:
            return content
    return content


def _label(args: dict[str, Any]) -> str:
    for key in ("order_id", "customer_id", "email", "query"):
        if key in args:
            return str(args[key])
    return ""


def handover(messages: list[dict[str, Any]], results: list[dict[str, Any]], *, before: str) -> Handover:
    """The context of an escalation, from a session's messages and the current turn's ``results``.

    ``before`` is the escalation's own ``tool_use`` id: calls from there on are not counted.
    """
    answers = {r["tool_use_id"]: r for m in messages if m["role"] == "user" and isinstance(m["content"], list)
               for r in m["content"] if r.get("type") == "tool_result"}
    answers.update({r["tool_use_id"]: r for r in results})
    request: list[str] = []
    tried: list[str] = []
    orders: dict[str, None] = {}
    amounts: dict[int, None] = {}
    errors: dict[str, None] = {}
    for m in messages:
        if m["role"] == "user" and isinstance(m["content"], str):
            request.append(" ".join(m["content"].split()))
            orders.update(dict.fromkeys(_ORDER.findall(m["content"])))
            continue
        if m["role"] != "assistant":
            continue
        for b in m["content"]:
            if b.get("type") != "tool_use":
                continue
            if b["id"] == before:
                break
            args, answer = b.get("input") or {}, answers.get(b["id"])
            result = _parse(answer["content"]) if answer else None
            if isinstance(args.get("order_id"), str):
                orders[args["order_id"]] = None
            if isinstance(args.get("amount_cents"), int):
                amounts[args["amount_cents"]] = None
            if answer is None:
                outcome = "no result"
            elif answer.get("is_error"):
                error = result.get("error", {}) if isinstance(result, dict) else {}
                outcome = f"error {error.get('code', 'tool_error')}"
                message = clip_text(str(error.get("message", "")), 160)
                errors[f"{b['name']}: {error.get('code', 'tool_error')}: {message}"] = None
            else:
                status = result.get("status") if isinstance(result, dict) else None
                outcome = f"ok ({status})" if isinstance(status, str) else "ok"
                if isinstance(result, dict):
                    if isinstance(result.get("order_id"), str):
                        orders[result["order_id"]] = None
                    for key in ("amount_cents", "total_cents"):
                        if isinstance(result.get(key), int):
                            amounts[result[key]] = None
            tried.append(f"{b['name']} {_label(args)}: {outcome}".replace("  ", " "))
    return Handover(clip_text(" / ".join(request), _REQUEST_CHARS), tuple(tried), tuple(orders), tuple(amounts),
                    tuple(errors))
