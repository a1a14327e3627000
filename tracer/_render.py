"""Terminal rendering of sessions: the tables and decision accounts that ``traces`` prints, and the audit log.

Everything wraps to the given width (at most 100 columns), so that a decision stays readable
in a narrow terminal.
"""

from __future__ import annotations

import json
import textwrap
from datetime import datetime, timezone
from typing import Any

from ._format import clip_text, format_ms, format_tokens, format_usd
from ._records import AuditEntry, LlmCall, SessionAccount, SessionSummary, ToolCallRecord

_LABEL = 10  # width of the left-hand labels in a decision
_SNIPPET = 240


def plural(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def fmt_time(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def sessions_table(rows: list[SessionSummary], width: int) -> str:
    """The ``traces list`` table. Ids are shortened to the shortest prefix (13 characters or more)
    that tells the listed sessions apart: a UUIDv7's first 13 are its millisecond, which sessions
    started together share."""
    headers = ("SESSION", "AGENT", "START UTC", "STATUS", "TURNS", "TOOLS", "TOKENS", "COST", "TIME")
    ids = [r.session_id for r in rows]
    cut = next((n for n in range(13, max(map(len, ids), default=13)) if len({i[:n] for i in ids}) == len(set(ids))),
               max(map(len, ids), default=13))
    body = [
        (
            r.session_id[:cut], (r.agent or "-")[:14], fmt_time(r.start_ns)[5:], r.status[:20], str(r.turns),
            str(r.tool_calls) + (f" ({r.tool_errors}!)" if r.tool_errors else ""),
            format_tokens(r.input_tokens + r.cache_read_tokens + r.cache_write_tokens + r.output_tokens),
            format_usd(r.cost_usd), format_ms(r.duration_ms),
        )
        for r in rows
    ]
    return _columns(headers, body, {4, 5, 6, 7, 8}, width)


def audit_table(entries: list[AuditEntry], width: int) -> str:
    """The ``audit list`` table; the detail column takes what the width leaves."""
    headers = ("WHEN UTC", "ACTOR", "ACTION", "TARGET", "VIA", "DETAIL")
    body = [(fmt_time(e.at_ns), e.actor[:20], e.action, e.target[:36], e.via,
             " ".join(f"{k}={v}" for k, v in e.detail.items() if v is not None) or "-") for e in entries]
    return _columns(headers, body, set(), width)


def _columns(headers: tuple[str, ...], body: list[tuple[str, ...]], right: set[int], width: int) -> str:
    """Rows under headers, each column as wide as its widest cell, lines cut at ``width``."""
    widths = [max(len(h), *(len(row[i]) for row in body)) if body else len(h) for i, h in enumerate(headers)]

    def line(cells: tuple[str, ...]) -> str:
        out = "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))
        return out[:width].rstrip()

    return "\n".join([line(headers), *(line(row) for row in body)])


def _block_text(block: Any) -> str:
    if isinstance(block, str):
        return block
    kind = block.get("type")
    if kind == "text":
        return block.get("text", "")
    if kind == "tool_use":
        return f"→ {block.get('name')}({json.dumps(block.get('input'), ensure_ascii=False)})"
    if kind == "tool_result":
        content = block.get("content")
        text = content if isinstance(content, str) else " ".join(_block_text(b) for b in content or ())
        return f"← {'error: ' if block.get('is_error') else ''}{text}"
    if kind == "thinking":
        return f"(thinking) {block.get('thinking', '')}"
    return f"[{kind}]"


def message_text(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    return " ".join(_block_text(b) for b in content or ())


class _Writer:
    def __init__(self, width: int) -> None:
        self.width = width
        self.lines: list[str] = []

    def field(self, label: str, text: str, indent: int = 2) -> None:
        prefix = " " * indent + label.ljust(_LABEL)
        wrapped = textwrap.wrap(text, self.width - len(prefix), break_long_words=True) or [""]
        self.lines.append(prefix + wrapped[0])
        self.lines.extend(" " * len(prefix) + w for w in wrapped[1:])

    def line(self, text: str = "") -> None:
        self.lines.append(text[: self.width])


_MARKS = {"system": "S", "tools": "T", "history": "H", "tool_results": "R", "retrieved": "D"}


def _context_bar(call: LlmCall, width: int) -> str:
    """The composition of what the model saw, one letter per share; the legend follows it."""
    total = sum(call.context_tokens.values())
    if not total:
        return ""
    cells = max(min(width, 50), 10)
    bar = "".join(_MARKS[k] * round(cells * v / total) for k, v in call.context_tokens.items() if k in _MARKS)
    return "[" + bar[:cells].ljust(cells, bar[-1:] or ".") + "]"


def _decision(w: _Writer, call: LlmCall, tools: list[ToolCallRecord]) -> None:
    total_in = (call.input_tokens or 0) + (call.cache_read_tokens or 0) + (call.cache_write_tokens or 0)
    if call.status != "ok":
        w.field("failed", f"attempt {call.attempt}: {call.error_type or 'error'}"
                f"{f' (HTTP {call.http_status})' if call.http_status else ''} after {format_ms(call.latency_ms)}")
        return
    retry = f" (attempt {call.attempt})" if call.attempt else ""
    w.field("model", f"{call.model}{retry} · stop {call.stop_reason} · {format_ms(call.latency_ms)}"
            f"{f' (first token {format_ms(call.ttft_ms)})' if call.ttft_ms is not None else ''}")
    util = (f" = {call.context_utilisation:.1%} of {format_tokens(call.context_window)}"
            if call.context_utilisation else "")
    parts = " · ".join(f"{k.replace('_', ' ')} {format_tokens(v)}" for k, v in call.context_tokens.items())
    w.field("saw", f"{format_tokens(total_in)} tokens{util}: {parts}")
    bar = _context_bar(call, w.width - 2 - _LABEL - 2)
    if bar:
        w.field("", bar)
    if call.newest_messages:
        shown = len(call.newest_messages)
        w.field("newest", f"last {shown} of {call.message_count} messages:")
        for m in call.newest_messages:
            w.field("", f"{m.get('role', '?')}: {clip_text(message_text(m), _SNIPPET)}")
    elif call.content_mode == "none":
        w.field("newest", "(content not captured: content mode none)")
    chosen = set(call.tools_chosen)
    if call.tools_available:
        w.field("could", ", ".join(f"*{t}*" if t in chosen else t for t in call.tools_available))
    label = call.action or "?"
    if call.tool_uses:
        picks = "; ".join(f"{u['name']} {json.dumps(u['input'], ensure_ascii=False)}" for u in call.tool_uses)
        w.field("chose", f"{label}: {clip_text(picks, _SNIPPET)}")
    else:
        w.field("chose", label)
    if call.reasoning:
        w.field("why", clip_text(call.reasoning, 400))
    if call.output_text and call.action in ("final", "refusal", "max_tokens", "handoff"):
        w.field("said", clip_text(call.output_text, 400))
    cost = format_usd(call.cost_usd)
    cache = ""
    if call.cache_read_tokens or call.cache_write_tokens:
        cache = f" (cache read {format_tokens(call.cache_read_tokens)}, write {format_tokens(call.cache_write_tokens)})"
    w.field("cost", f"{cost} · in {format_tokens(call.input_tokens)}{cache} · out {format_tokens(call.output_tokens)}")
    for t in tools:
        status = "ok" if t.status == "ok" else f"FAILED {t.error_type or ''}".rstrip()
        extra = []
        if t.retries:
            extra.append(f"{t.retries} retries")
        if t.circuit_state and t.circuit_state != "closed":
            extra.append(f"circuit {t.circuit_state}")
        if t.idempotency_key:
            extra.append(f"key {t.idempotency_key}")
        suffix = f" ({', '.join(extra)})" if extra else ""
        outcome = t.result if t.result is not None else (t.error_message or "")
        w.field("tool", f"{t.tool_name} {status} in {format_ms(t.latency_ms)}{suffix} → "
                        f"{clip_text(outcome or '-', _SNIPPET)}")


def session_account(account: SessionAccount, width: int) -> str:
    """The ``traces show`` account: a header with totals, then each turn's decision."""
    s = account.session
    w = _Writer(width)
    w.line(f"Session {s.session_id}")
    w.field("agent", f"{s.agent or '-'} · {s.status}{f' ({s.status_reason})' if s.status_reason else ''} · "
            f"started {fmt_time(s.start_ns)} UTC · {format_ms(s.duration_ms)}", indent=0)
    w.field("totals", f"{plural(s.turns, 'turn')} · {plural(s.llm_calls, 'LLM call')} ({s.llm_errors} failed) · "
            f"{plural(s.tool_calls, 'tool call')} ({s.tool_errors} failed) · {format_tokens(s.input_tokens)} in, "
            f"{format_tokens(s.output_tokens)} out, "
            f"{format_tokens(s.cache_read_tokens)} cache read · {format_usd(s.cost_usd)}", indent=0)
    w.field("legend", "context bars: S system · T tool definitions · H history · R tool results · D retrieved",
            indent=0)
    for turn in account.turns:
        w.line()
        w.line(f"── Turn {turn.index} " + "─" * max(0, width - 9 - len(str(turn.index))))
        ok_calls = [c for c in turn.llm_calls if c.status == "ok"]
        for call in turn.llm_calls:
            is_last_ok = bool(ok_calls) and call is ok_calls[-1]
            _decision(w, call, turn.tool_calls if is_last_ok else [])
        if not ok_calls:
            for t in turn.tool_calls:
                w.field("tool", f"{t.tool_name} {t.status} → "
                                f"{clip_text(t.result or t.error_message or '-', _SNIPPET)}")
        for ev in turn.events:
            attrs = ", ".join(f"{k}={v}" for k, v in (ev.get("attributes") or {}).items())
            w.field("event", f"{ev.get('name')}{f' ({attrs})' if attrs else ''}")
    return "\n".join(w.lines)
