"""Splitting a canonical request body into its parts without re-serialising it.

Every request repeats the conversation so far, so re-parsing and re-hashing each one in full
makes ingest quadratic in session length. The body text is canonical JSON (sorted keys, no
whitespace), so each part's canonical text is a slice of it, and a part that is the same as in
the session's previous request is recognised by comparing text, without parsing it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

_decode = json.JSONDecoder().raw_decode


@dataclass
class SessionState:
    """What a session's previous request looked like, and where its message chain ended."""

    values: dict[str, str] = field(default_factory=dict)
    """Top-level value texts by key."""
    tools: list[str] | None = None
    """The tool definition texts."""
    messages_open: str = ""
    """The messages array text without its closing bracket, e.g. ``[{..},{..}``."""
    message_count: int = 0
    tail: str | None = None
    """The message chain node of the last message; set by the ingestor."""


@dataclass
class Parts:
    """The canonical texts of a request's parts."""

    params: str
    """The body minus ``system``, ``messages`` and ``tools``."""
    system: str | None = None
    tools: list[str] | None = None
    new_messages: list[str] | None = None
    """``None`` when the request had no ``messages``; else the messages after the reused prefix."""
    prefix_tail: str | None = None
    """The chain node that ends the messages shared with the previous request (``None``: none shared)."""
    message_count: int = 0


def _elements(text: str, i: int) -> tuple[list[str], int]:
    """Element texts of the array whose first element (or ``]``) starts at ``i``, and the end."""
    out: list[str] = []
    if text[i] == "]":
        return out, i + 1
    while True:
        _, end = _decode(text, i)
        out.append(text[i:end])
        if text[end] == "]":
            return out, end + 1
        i = end + 1  # past the comma


def _same(text: str, start: int, prev: str | None) -> bool:
    """Whether the value at ``start`` is ``prev``: a JSON value followed by a delimiter is complete."""
    return prev is not None and text.startswith(prev, start) and text[start + len(prev)] in ",}]"


class Splitter:
    """Splits canonical request bodies, remembering each session's last request."""

    def __init__(self, max_sessions: int = 2_000) -> None:
        self._sessions: dict[str, SessionState] = {}
        self._max = max_sessions

    def forget(self) -> None:
        """Drops every session's state, so the next request of each is split in full."""
        self._sessions.clear()

    def split(self, text: str, session: str) -> tuple[Parts, SessionState]:
        last = self._sessions.pop(session, None) or SessionState()
        state = SessionState()
        kept: list[str] = []
        parts = Parts(params="")
        i = 1
        while text[i] != "}":
            key, colon = _decode(text, i)
            start = colon + 1
            prev = last.values.get(key)
            if key == "messages":
                end = self._messages(text, start, last, state, parts)
            elif _same(text, start, prev):
                end = start + len(prev)  # type: ignore[arg-type]
            else:
                _, end = _decode(text, start)
            value = text[start:end]
            state.values[key] = value
            if key == "system":
                parts.system = value
            elif key == "tools":
                state.tools = last.tools if value == prev and last.tools is not None else _elements(value, 1)[0]
                parts.tools = state.tools
            elif key != "messages":
                kept.append(text[i:end])
            i = end + 1 if text[end] == "," else end
        parts.params = "{" + ",".join(kept) + "}"
        if len(self._sessions) >= self._max:
            self._sessions.pop(next(iter(self._sessions)))
        self._sessions[session] = state
        return parts, state

    @staticmethod
    def _messages(text: str, start: int, last: SessionState, state: SessionState, parts: Parts) -> int:
        prefix = last.messages_open
        if prefix and last.tail is not None and text.startswith(prefix, start) \
                and text[start + len(prefix)] in ",]":
            i = start + len(prefix)
            fresh, end = _elements(text, i + 1) if text[i] == "," else ([], i + 1)
            parts.prefix_tail = last.tail
            count = last.message_count + len(fresh)
        else:
            fresh, end = _elements(text, start + 1)
            count = len(fresh)
        parts.new_messages = fresh
        parts.message_count = count
        state.messages_open = text[start:end - 1]
        state.message_count = count
        return end
