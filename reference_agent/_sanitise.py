"""Tool results cleaned of prompt-injection markers before the model sees them.

One layer of the defence against instructions planted in data (a knowledge-base article, a
customer's name): text that looks like it addresses the assistant rather than the customer is
replaced by a visible placeholder, so the model sees that something was there and what kind of
thing, but not the words. The other layers stay: the system prompt's rule that tool results are
data, the approval of irreversible actions, and the detectors over the trace. A marker is only
the part an attacker cannot easily avoid ("ignore previous instructions", a chat template's role
tag …), so a planted instruction may survive in other words; the rules catch the common forms.

Only successful results are cleaned: an error result is the agent's own text.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections import Counter
from typing import Any

PLACEHOLDER = "[removed: text that addressed the assistant ({rule})]"
"""What a marked span becomes; ``{rule}`` is the rule's name."""

_B64 = re.compile(r"(?<![A-Za-z0-9+/=])[A-Za-z0-9+/]{24,}={0,2}(?![A-Za-z0-9+/=])")

RULES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("ignore_instructions", re.compile(
        r"\b(?:ignore|disregard|forget|override)\s+(?:all\s+|any\s+)?(?:(?:the|your|of|previous|prior|earlier|above"
        r"|preceding|system)\s+)+(?:instructions|rules|directions|prompts?|guidelines)\b[^.!?\n]*[.!?]?", re.I)),
    ("role_tag", re.compile(r"<\|(?:im_start|im_end|system|user|assistant|endoftext)\|>(?:\s*(?:system|user|assistant)"
                            r"\b)?|\[/?INST\]|<</?SYS>>", re.I)),
    ("tool_markup", re.compile(r"</?\s*(?:tool_result|tool_use|function_calls?|function_results|invoke|system"
                               r"|instructions)\b[^>]*>", re.I)),
    ("role_prefix", re.compile(r"(?:^|(?<=[\n.!?]))\s*(?:system|assistant|developer)\s*:", re.I | re.M)),
    ("impersonation", re.compile(r"\b(?:you are now|from now on,? you are|pretend (?:to be|you are))\b[^.!?\n]*[.!?]?",
                                 re.I)),
    ("encoded_payload", _B64),
)
"""Each rule's name, and the text it marks."""


def _decodes_to_text(match: re.Match[str]) -> bool:
    token = match.group(0)
    try:
        raw = base64.b64decode(token + "=" * (-len(token) % 4), validate=True)
    except (binascii.Error, ValueError):
        return False
    text = raw.decode("utf-8", errors="replace")
    printable = sum(c.isprintable() or c.isspace() for c in text)
    return " " in text and printable >= 0.9 * max(len(text), 1)


def sanitise_text(text: str, fired: Counter[str]) -> str:
    """``text`` with every marked span replaced; counts what each rule replaced into ``fired``."""
    for name, pattern in RULES:
        def replace(m: re.Match[str], name: str = name) -> str:
            if name == "encoded_payload" and not _decodes_to_text(m):
                return m.group(0)
            fired[name] += 1
            return PLACEHOLDER.format(rule=name)

        text = pattern.sub(replace, text)
    return text


def sanitise(result: Any) -> tuple[Any, dict[str, int]]:
    """A tool result with the strings in it sanitised, and how many spans each rule replaced."""
    fired: Counter[str] = Counter()

    def walk(value: Any) -> Any:
        if isinstance(value, str):
            return sanitise_text(value, fired)
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        return value

    clean = walk(result)
    return clean, dict(sorted(fired.items()))
