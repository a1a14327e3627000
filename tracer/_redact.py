"""Redactors: they rewrite text before anything is stored or exported.

A redactor is any callable ``str -> str``. The built-in ones replace what they find with a
marker such as ``[REDACTED:email]``, so that a reader of the trace still sees that something
was there and what kind of thing it was.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

Redactor = Callable[[str], str]
"""Takes a piece of text and returns it with sensitive parts replaced."""

_EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b")
# Phone numbers: an optional +country code, then 9 to 15 digits in groups. Dates and order
# numbers are shorter or unseparated, which keeps false positives down.
_PHONE = re.compile(r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,4}\)[ .-]?)?\d{2,4}(?:[ .-]\d{2,4}){1,4}(?!\w)")
_CARD = re.compile(r"(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)")
_API_KEY = re.compile(
    r"\b(?:sk-ant-[A-Za-z0-9_-]{10,}|sk-[A-Za-z0-9_-]{20,}|AKIA[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{30,}"
    r"|xox[abprs]-[A-Za-z0-9-]{10,}|AIza[0-9A-Za-z_-]{35})\b"
)


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def redact_email(text: str) -> str:
    """Replaces e-mail addresses."""
    return _EMAIL.sub("[REDACTED:email]", text)


def redact_phone(text: str) -> str:
    """Replaces phone numbers written with separators or a country code."""

    def sub(m: re.Match[str]) -> str:
        digits = re.sub(r"\D", "", m.group())
        return "[REDACTED:phone]" if 9 <= len(digits) <= 15 else m.group()

    return _PHONE.sub(sub, text)


def redact_card(text: str) -> str:
    """Replaces payment card numbers (13 to 19 digits that pass the Luhn check)."""

    def sub(m: re.Match[str]) -> str:
        digits = re.sub(r"\D", "", m.group())
        return "[REDACTED:card]" if _luhn_ok(digits) else m.group()

    return _CARD.sub(sub, text)


def redact_api_key(text: str) -> str:
    """Replaces API keys and tokens of well-known shapes (Anthropic, OpenAI, AWS, GitHub, Slack, Google)."""
    return _API_KEY.sub("[REDACTED:api_key]", text)


# Cards before phones: a card number also looks like a long grouped phone number.
BUILTIN_REDACTORS: tuple[Redactor, ...] = (redact_api_key, redact_email, redact_card, redact_phone)


def redact_value(value: Any, redactors: Iterable[Redactor]) -> Any:
    """A copy of a JSON value with every string run through every redactor. Keys are kept."""
    chain = tuple(redactors)

    def walk(v: Any) -> Any:
        if isinstance(v, str):
            for r in chain:
                v = r(v)
            return v
        if isinstance(v, list):
            return [walk(x) for x in v]
        if isinstance(v, dict):
            return {k: walk(x) for k, x in v.items()}
        return v

    return walk(value)
