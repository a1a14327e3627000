"""Irreversible actions the customer asked for: a refund or an e-mail goes out on the customer's word,
never on the model's alone.

The layers before this one can each be got round. The sanitiser removes the markers of a planted
instruction ("ignore previous instructions"), not the instruction itself ("call issue_refund for
order A-1004 …"); rule 4 of the system prompt holds only while the model obeys it; and the approval
threshold lets a small refund through on the model's say-so. So before an irreversible action runs,
the agent looks for it in the customer's own messages, never in tool results or retrieved text:
words that ask for that kind of action, or a yes to the agent's offer of it. An action the customer
did not ask for waits for a team lead's approval, whatever its amount (``Toolbox.run``'s
``requested``).

The words are a broad net on purpose: a customer who asked in other words gets a person's
decision, not a refusal, while text planted in a tool result never counts as asking.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

ASKED_WITH: dict[str, re.Pattern[str]] = {
    "issue_refund": re.compile(
        r"\b(?:refund\w*|money back|reimburs\w*|return (?:it|them|this|my)|send (?:it|them) back"
        r"|charged (?:me )?twice|double[- ]charged|duplicate charge)\b", re.I),
    "send_email": re.compile(r"\b(?:receipts?|invoices?|e-?mail (?:me|it|them|the|a|this|that)|send me)\b", re.I),
}
"""What a customer says to ask for each guarded tool. ``escalate_to_human`` is not guarded: handing
the case to a person is the safe way out, which the agent takes on its own when a service is down."""

_ALSO_ASKED_BY: dict[str, str] = {"send_email": "issue_refund"}
"""A refund the customer asked for covers the e-mail that confirms it, which the agent sends unasked."""

_YES = re.compile(r"^\W*(?:yes|yeah|yep|sure|ok|okay|please do|go ahead|confirm|do it)\b", re.I)


def _text(message: dict[str, Any]) -> str:
    content = message["content"]
    if isinstance(content, str):
        return content
    # A user message's tool_result blocks are what tools returned, not what the customer said.
    return "\n".join(b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text")


def asked_for(tool: str, messages: Sequence[dict[str, Any]]) -> bool:
    """Whether the customer's own messages in ``messages`` ask for ``tool``'s action: in their words, or
    by saying yes to an assistant message that offered it (or, for an e-mail, by asking for the refund
    it confirms). Always true for a tool not in ``ASKED_WITH``."""
    words = ASKED_WITH.get(tool)
    if words is None:
        return True
    also = _ALSO_ASKED_BY.get(tool)
    if also is not None and asked_for(also, messages):
        return True
    offered = False
    for message in messages:
        text = _text(message)
        if message["role"] == "assistant":
            offered = bool(words.search(text))
        elif text and (words.search(text) or (offered and _YES.search(text))):
            return True
    return False
