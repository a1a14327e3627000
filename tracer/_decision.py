"""What one LLM call decided, and what it saw, derived from the request and response bodies.

These functions run on the agent's thread for every call, so they walk the bodies once and
never serialise them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import orjson

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
    _seen: dict[str, bool] = field(default_factory=dict, compare=False, repr=False)

    def is_retrieval(self, name: str) -> bool:
        if self.retrieval is not None:
            return name in self.retrieval
        found = self._seen.get(name)
        if found is None:
            found = self._seen[name] = bool(_RETRIEVAL_NAME.search(name))
        return found

    def is_handoff(self, name: str) -> bool:
        return name in self.handoff if self.handoff is not None else bool(_HANDOFF_NAME.search(name))


@dataclass(frozen=True)
class ResponseDecision:
    """The outcome of one LLM call."""

    action: str
    """tool_use | final | handoff | refusal | max_tokens"""
    tools_chosen: tuple[str, ...]
    reasoning: str
    tool_uses: tuple[dict[str, Any], ...]


def tools_available(body: dict[str, Any]) -> list[str]:
    """The names of the tools the model could pick."""
    return [t.get("name", t.get("type", "?")) for t in body.get("tools") or ()]


def _size(value: Any) -> int:
    """Characters of a value: its own length for text, its compact JSON length otherwise."""
    if isinstance(value, str):
        return len(value)
    return len(orjson.dumps(value)) if value is not None else 0


def context_chars(body: dict[str, Any], kinds: ToolKinds) -> dict[str, int]:
    """Characters of the request by segment: system, tools, history, tool_results, retrieved.

    Runs on the agent's thread for every call, so it measures with one C-level serialisation
    per block instead of walking the content in Python.
    """
    seg = dict.fromkeys(SEGMENTS, 0)
    seg["system"] = _size(body.get("system"))
    seg["tools"] = _size(body.get("tools"))
    names: dict[str, str] = {}
    history = tool_results = retrieved = 0
    for msg in body.get("messages") or ():
        content = msg.get("content")
        if isinstance(content, str):
            history += len(content)
            continue
        for block in content or ():
            kind = block.get("type")
            if kind == "text":
                history += len(block.get("text", ""))
            elif kind == "tool_result":
                size = _size(block.get("content"))
                if kinds.is_retrieval(names.get(block.get("tool_use_id", ""), "")):
                    retrieved += size
                else:
                    tool_results += size
            elif kind == "tool_use":
                names[block.get("id", "")] = block.get("name", "")
                history += _size(block)
            elif kind in ("document", "search_result"):
                retrieved += _size(block)
            else:
                history += _size(block)
    seg["history"], seg["tool_results"], seg["retrieved"] = history, tool_results, retrieved
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


def decide(response: dict[str, Any], kinds: ToolKinds) -> ResponseDecision:
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
    return ResponseDecision(action=action, tools_chosen=chosen, reasoning=reasoning, tool_uses=tool_uses)
