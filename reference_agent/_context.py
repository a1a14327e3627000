"""Context management: how full the next request is, and compacting a conversation that nears the window.

The rule of a compaction, which a reader of ``context_compacted`` events can rely on:

- **kept as they are**: the system prompt and tools (not part of ``messages``), the customer's
  task (the first user message), and the tail of the conversation: from the agent's reply that
  the latest customer message answers, to the end. When that leaves nothing to drop (one long
  chain of tool calls on a single request) the tail is the last reply and its tool results.
- **dropped**: the messages between the two, replaced by a summary attached to the first user
  message as a second text block (a summary from an earlier compaction is carried over).
- **pinned** in the summary, one line each: every dropped customer message (clipped to 200
  characters); every dropped tool call with its arguments and its result's ids, amounts and
  status (keys ending in ``_id`` or ``_cents``, and ``status``), or its error code. The
  assistant's own words are dropped: what it decided shows in the tool calls it made.

The request stays valid for the Messages API: it starts with the user's task, roles alternate,
and every ``tool_use`` kept has its ``tool_result`` in the next message.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

_CHARS_PER_TOKEN = 4
_CLIP = 200
SUMMARY_HEAD = "[Earlier conversation, compacted by the agent. What it established:]"


def estimate_tokens(params: dict[str, Any]) -> int:
    """The input tokens of a request, estimated at four characters a token of its compact JSON
    (system prompt, tools and messages): the simulator's own count, and close to the real API's."""
    chars = sum(len(json.dumps(params.get(k), ensure_ascii=False, separators=(",", ":")))
                for k in ("system", "tools", "messages") if params.get(k) is not None)
    return -(-chars // _CHARS_PER_TOKEN)


@dataclass(frozen=True)
class Compaction:
    """A compacted conversation, and what was dropped to make it."""

    messages: list[dict[str, Any]]
    """The conversation to send instead."""
    pinned: tuple[str, ...]
    """The summary's lines: the earlier compactions' and this one's."""
    dropped_from: int
    """Index of the first dropped message, in the conversation before."""
    dropped_to: int
    """Index of the last dropped message."""
    dropped_customer_messages: int
    """Customer messages among them."""
    dropped_tool_results: int
    """Tool results among them."""
    summary_chars: int
    """Length of the summary block."""


def _texts(message: dict[str, Any]) -> list[str]:
    content = message["content"]
    if isinstance(content, str):
        return [content]
    return [b["text"] for b in content if b.get("type") == "text" and b.get("text")]


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _CLIP else text[: _CLIP - 1] + "…"


def _pin_result(content: Any, is_error: bool) -> str:
    try:
        value = json.loads(content) if isinstance(content, str) else content
    except ValueError:
        return "error" if is_error else "ok"
    if not isinstance(value, dict):
        return "error" if is_error else "ok"
    if is_error:
        error = value.get("error") if isinstance(value.get("error"), dict) else {}
        return f"error {error.get('code') or error.get('type') or ''}".rstrip()
    kept = {k: v for k, v in value.items()
            if (k.endswith(("_id", "_cents")) or k == "status") and isinstance(v, (str, int, float, bool))}
    return ", ".join(f"{k}={v}" for k, v in kept.items()) or "ok"


def _pins(dropped: list[dict[str, Any]]) -> list[str]:
    uses = {b["id"]: b for m in dropped if m["role"] == "assistant" and isinstance(m["content"], list)
            for b in m["content"] if b.get("type") == "tool_use"}
    out = []
    for m in dropped:
        if m["role"] != "user":
            continue
        out += [f"- customer: {_clip(t)}" for t in _texts(m)]
        for b in m["content"] if isinstance(m["content"], list) else ():
            if b.get("type") == "tool_result":
                use = uses.get(b.get("tool_use_id", ""), {})
                args = json.dumps(use.get("input", {}), ensure_ascii=False, sort_keys=True, separators=(",", ":"))
                result = _pin_result(b.get("content"), bool(b.get("is_error")))
                out.append(f"- {use.get('name', '?')}({args}) → {result}")
    return out


def _cut(messages: list[dict[str, Any]]) -> int | None:
    """Where the kept tail starts (an assistant message), or ``None`` when nothing can be dropped."""
    customer = [i for i, m in enumerate(messages) if m["role"] == "user" and _texts(m)]
    latest = customer[-1] if customer else 0
    for cut in (latest - 1, len(messages) - 2):
        if cut >= 2 and messages[cut]["role"] == "assistant":
            return cut
    return None


def compact(messages: list[dict[str, Any]], pinned: tuple[str, ...] = ()) -> Compaction | None:
    """The conversation compacted by the rule above, or ``None`` when it has nothing to drop.

    ``pinned`` is the summary of an earlier compaction, whose block the first message carries.
    """
    cut = _cut(messages)
    if cut is None:
        return None
    first = messages[0]
    task = [{"type": "text", "text": first["content"]}] if isinstance(first["content"], str) else list(first["content"])
    if pinned:
        task = task[:-1]  # the earlier summary, replaced by the one below
    dropped = messages[1:cut]
    lines = (*pinned, *_pins(dropped))
    summary = "\n".join((SUMMARY_HEAD, *lines))
    compacted = [{"role": "user", "content": [*task, {"type": "text", "text": summary}]}, *messages[cut:]]
    return Compaction(
        messages=compacted, pinned=lines, dropped_from=1, dropped_to=cut - 1,
        dropped_customer_messages=sum(1 for m in dropped if m["role"] == "user" and _texts(m)),
        dropped_tool_results=sum(1 for m in dropped if m["role"] == "user" and isinstance(m["content"], list)
                                 for b in m["content"] if b.get("type") == "tool_result"),
        summary_chars=len(summary),
    )
