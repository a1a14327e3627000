"""What one LLM call decided, and what it saw, derived from the request and response bodies.

These functions run on the agent's thread for every call, so they walk the bodies once and
never serialise them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ._attributes import SEGMENTS

# Without a configured list, a tool counts as retrieval when its name says it reads documents.
_RETRIEVAL_NAME = re.compile(r"(?:^|_)(?:kb|knowledge|retriev\w*|docs?|documents?|rag)(?:_|$)")
_HANDOFF_NAME = re.compile(r"^(?:transfer_to_|handoff|hand_off|escalate)")
_CHARS_PER_TOKEN = 4


@dataclass(frozen=True)
class ToolKinds:
    """Which tool names count as retrieval (their results are "retrieved" context) and as handoffs."""

    retrieval: frozenset[str] | None = None
    handoff: frozenset[str] | None = None

    def is_retrieval(self, name: str) -> bool:
        return name in self.retrieval if self.retrieval is not None else bool(_RETRIEVAL_NAME.search(name))

    def is_handoff(self, name: str) -> bool:
        return name in self.handoff if self.handoff is not None else bool(_HANDOFF_NAME.search(name))


@dataclass(frozen=True)
class Decision:
    """The outcome of one LLM call."""

    action: str
    """tool_use | final | handoff | refusal | max_tokens"""
    tools_chosen: tuple[str, ...]
    reasoning: str
    tool_uses: tuple[dict[str, Any], ...]


def tools_available(body: dict[str, Any]) -> list[str]:
    """The names of the tools the model could pick."""
    return [t.get("name", t.get("type", "?")) for t in body.get("tools") or ()]


def _text_len(value: Any) -> int:
    """Characters of content in a message value, without serialising it."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list):
        return sum(_text_len(v) for v in value)
    if isinstance(value, dict):
        return sum(_text_len(v) for k, v in value.items() if k not in ("type", "cache_control", "id", "tool_use_id"))
    return len(str(value)) if value is not None else 0


def context_chars(body: dict[str, Any], kinds: ToolKinds) -> dict[str, int]:
    """Characters of the request by segment: system, tools, history, tool_results, retrieved."""
    seg = dict.fromkeys(SEGMENTS, 0)
    seg["system"] = _text_len(body.get("system"))
    seg["tools"] = _text_len(body.get("tools"))
    names: dict[str, str] = {}
    for msg in body.get("messages") or ():
        content = msg.get("content")
        if isinstance(content, str):
            seg["history"] += len(content)
            continue
        for block in content or ():
            kind = block.get("type") if isinstance(block, dict) else None
            if kind == "tool_use":
                names[block.get("id", "")] = block.get("name", "")
                seg["history"] += _text_len(block.get("input")) + len(block.get("name", ""))
            elif kind == "tool_result":
                name = names.get(block.get("tool_use_id", ""), "")
                target = "retrieved" if kinds.is_retrieval(name) else "tool_results"
                seg[target] += _text_len(block.get("content"))
            elif kind in ("document", "search_result"):
                seg["retrieved"] += _text_len(block)
            else:
                seg["history"] += _text_len(block)
    return seg


def context_tokens(chars: dict[str, int], total_input_tokens: int | None) -> dict[str, int]:
    """Tokens by segment: the character shares scaled to the reported input total.

    The API reports only the total, so the split is an estimate; the total is exact when known.
    """
    if not total_input_tokens:
        return {k: -(-v // _CHARS_PER_TOKEN) for k, v in chars.items()}
    all_chars = sum(chars.values()) or 1
    tokens = {k: int(total_input_tokens * v / all_chars) for k, v in chars.items()}
    # Give the rounding remainder to the largest segment so the parts add up to the total.
    largest = max(tokens, key=lambda k: chars[k])
    tokens[largest] += total_input_tokens - sum(tokens.values())
    return tokens


def decide(response: dict[str, Any], kinds: ToolKinds) -> Decision:
    """The action, chosen tools and reasoning of a Messages API response."""
    blocks = response.get("content") or []
    tool_uses = tuple(b for b in blocks if b.get("type") in ("tool_use", "server_tool_use"))
    thinking = [b.get("thinking", "") for b in blocks if b.get("type") == "thinking"]
    texts = [b.get("text", "") for b in blocks if b.get("type") == "text"]
    chosen = tuple(b.get("name", "") for b in tool_uses)
    stop = response.get("stop_reason")
    if stop == "refusal":
        action = "refusal"
    elif stop == "max_tokens":
        action = "max_tokens"
    elif tool_uses:
        action = "handoff" if any(kinds.is_handoff(n) for n in chosen) else "tool_use"
    else:
        action = "final"
    # Thinking is the reasoning when there is any; otherwise the text the model wrote next to
    # its tool calls is. A final answer's text is the answer, not reasoning.
    reasoning = "\n".join(thinking) if thinking else ("\n".join(texts) if tool_uses else "")
    return Decision(action=action, tools_chosen=chosen, reasoning=reasoning, tool_uses=tool_uses)
