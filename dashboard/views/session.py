"""Session: one session decision by decision: what the model saw, could pick, picked, why, and
what it cost; the whole conversation turn by turn; its trace as a tree and a waterfall, with any
span's details; and what changed in the context between two decisions. Turns where a guard fired,
a tool failed or an alert points are marked in the decision picker, the conversation and the trace."""

from __future__ import annotations

import html
import json
import re
from typing import Any

import altair as alt
import pandas as pd
import streamlit as st

import evals
import replay
import tracer
from dashboard import _html, _ui

_VIEWS = {"decision": "Decision", "chat": "Conversation", "trace": "Trace", "context": "Context diff"}
_SEGMENTS = ("system", "tools", "history", "tool_results", "retrieved")
_COLORS = {"system": "#4c78a8", "tools": "#72b7b2", "history": "#f58518", "tool_results": "#54a24b",
           "retrieved": "#b279a2"}
_CLIP = 1500  # characters of one message block shown before the rest is folded away
_SHOWN = 8  # messages of a conversation shown before "show all": the customer's first one and the newest
_REDACTED = re.compile(r"\[REDACTED:[a-z_]+\]")
# Context-window utilisation that the detectors call a warning and critical. (A page script
# shows a bare string literal on the page, so constants here are explained in comments.)
_WARN, _CRITICAL = 0.70, 0.85


@_ui.cached
def _account(session_id: str) -> tracer.SessionAccount:
    return _ui.source().store().session_account(session_id)


@_ui.cached
def _tree(session_id: str) -> tracer.SessionTree:
    return _ui.source().store().session_tree(session_id)


@_ui.cached
def _request(session_id: str, turn: int) -> dict[str, Any] | str:
    """The turn's exact request, or why it cannot be rebuilt."""
    try:
        return replay.reconstruct(session_id, turn, db=_ui.source().store()).request
    except tracer.FlightrecError as exc:
        return str(exc)


@_ui.cached
def _context_diff(session_id: str, a: int, b: int) -> replay.ContextDiff | str:
    try:
        return replay.diff(f"{session_id}:{a}", f"{session_id}:{b}", context=True, db=_ui.source().store())
    except tracer.FlightrecError as exc:
        return str(exc)


@_ui.cached
def _spans(session_id: str) -> pd.DataFrame:
    """The session's spans, a turn's own span with its turn index (where the marks go)."""
    return _ui.frame(
        """SELECT s.span_id, s.parent_span_id, s.name, s.start_ns, s.end_ns, s.status_code, s.status_message,
                  t.turn_index AS turn
           FROM spans s LEFT JOIN (SELECT span_id, turn_index FROM turns WHERE session_id = ?) t USING (span_id)
           WHERE s.session_id = ? ORDER BY s.start_ns, s.end_ns DESC""", [session_id, session_id])


@_ui.cached
def _span(session_id: str, span_id: str) -> dict[str, Any] | None:
    """One span's record, with a model call's turn and response or a tool call's arguments and result."""
    rows = _ui.frame(
        """SELECT s.name, s.kind, s.start_ns, s.end_ns, s.status_code, s.status_message, s.attributes, s.events,
                  l.turn_index AS llm_turn, l.response_body, c.arguments, c.result, c.error_type, c.error_message
           FROM spans s
           LEFT JOIN (SELECT * FROM llm_calls WHERE session_id = ?) l USING (span_id)
           LEFT JOIN (SELECT * FROM tool_calls WHERE session_id = ?) c USING (span_id)
           WHERE s.session_id = ? AND s.span_id = ?""", [session_id, session_id, session_id, span_id])
    return None if rows.empty else rows.iloc[0].to_dict()


@_ui.cached
def _related(session_id: str) -> pd.DataFrame:
    # An alert's turns are those of its own session (``session_id``), not of every session it lists.
    return _ui.frame(
        """SELECT alert_id, severity, title, status, CASE WHEN session_id = ? THEN turns ELSE [] END AS turns
           FROM alerts WHERE list_contains(session_ids, ?) ORDER BY last_seen_ns DESC""", [session_id, session_id])


@_ui.cached
def _eval_trials(session_id: str) -> list[tuple[tracer.EvalRunRecord, tracer.EvalResultRecord]]:
    """The eval trials this session was (one, unless a run reused it), with their runs."""
    store = _ui.source().store()
    runs = _ui.frame("SELECT DISTINCT run_id FROM eval_results WHERE session_id = ?", [session_id])["run_id"]
    return [(run, r) for run in map(store.find_eval_run, runs) for r in store.eval_results(run.run_id)
            if r.session_id == session_id]


@_ui.cached
def _recent() -> pd.DataFrame:
    return _ui.frame("SELECT session_id, agent, status, turns FROM sessions ORDER BY start_ns DESC LIMIT 200")


def _marks(account: tracer.SessionAccount, alerts: pd.DataFrame) -> dict[int, list[tuple[str, str]]]:
    """What went wrong at each turn, as (text, kind) badges: a guard that fired, a tool that failed,
    the agent compacting its context or falling back to another model, an alert that points at the turn."""
    out: dict[int, list[tuple[str, str]]] = {}
    for t in account.turns:
        for e in t.events:
            attrs = e.get("attributes") or {}
            if e.get("name") == "guard_fired":
                out.setdefault(t.index, []).append((f"guard: {attrs.get('guard', '?')}", "bad"))
            elif e.get("name") == "context_compacted":
                out.setdefault(t.index, []).append((f"context compacted: {attrs.get('dropped_messages', '?')} "
                                                    "messages dropped", "warn"))
            elif e.get("name") == "model_fallback":
                out.setdefault(t.index, []).append((f"fallback: {attrs.get('to_model', '?')}", "warn"))
        failed = [c.tool_name for c in t.tool_calls if c.status != "ok"]
        if failed:
            out.setdefault(t.index, []).append((f"tool failed: {', '.join(dict.fromkeys(failed))}", "bad"))
    for a in alerts.itertuples():
        for turn in a.turns:
            out.setdefault(int(turn), []).append((f"alert: {a.severity}", "warn"))
    return out


def _decision_label(turn: tracer.Turn, marks: list[tuple[str, str]]) -> str:
    call = _decision(turn)
    # A tooltip shows plain text: the marks are bracketed words, which every font can draw.
    flags = "".join(f"  [{text}]" for text, _ in marks)
    if call is None:
        return f"turn {turn.index}{flags}"
    what = ", ".join(call.tools_chosen) if call.tools_chosen else (call.action or call.status)
    return f"turn {turn.index} · {call.action or 'error'}{' → ' + what if call.tools_chosen else ''}{flags}"


def _decision(turn: tracer.Turn) -> tracer.LlmCall | None:
    """The turn's decision: its last successful attempt, or its last attempt if all failed."""
    ok = [c for c in turn.llm_calls if c.status == "ok"]
    return (ok or turn.llm_calls or [None])[-1]


# The decision view is drawn as a few HTML blocks rather than dozens of Streamlit elements: each
# element costs the browser tens of milliseconds to lay out, and the page must be ready in a second.
_CSS = """<style>
.fr{font-size:0.92rem;line-height:1.5}
.fr.cols{display:grid;grid-template-columns:minmax(0,3fr) minmax(0,2fr);gap:2.5rem}
.fr h4{margin:0.9rem 0 0.3rem 0;font-size:0.95rem}
.fr code,.fr pre{font-size:0.8rem}
.fr pre{white-space:pre-wrap;word-break:break-word;background:rgba(128,132,149,0.08);padding:8px 10px;
  border-radius:6px;max-height:420px;overflow:auto;margin:4px 0}
.fr .badge{display:inline-block;padding:1px 8px;margin:2px 4px 2px 0;border-radius:6px;font-size:0.8rem;
  background:rgba(128,132,149,0.15)}
.fr .badge.on,.fr .badge.ok{background:rgba(33,195,84,0.2);color:#177233;font-weight:600}
.fr .badge.bad{background:rgba(228,87,86,0.18);color:#b3261e;font-weight:600}
.fr .badge.warn{background:rgba(255,170,0,0.22);color:#8a5300;font-weight:600}
.fr .fold{text-align:center;color:#808495;font-size:0.85rem;border-top:1px dashed rgba(128,132,149,0.5);
  margin:10px 0;padding-top:4px}
.fr .grid{display:grid;grid-template-columns:repeat(3,1fr);gap:8px 12px;margin:10px 0}
.fr .grid small{display:block;color:#808495;font-size:0.78rem}
.fr .grid b{font-size:1.2rem;font-weight:500}
.fr .bar{display:flex;height:16px;border-radius:3px;overflow:hidden;background:rgba(128,132,149,0.15)}
.fr .red{color:#d33}.fr .orange{color:#c77700}.fr .green{color:#177233}.fr .muted{color:#808495}
.fr .msg{border-left:3px solid rgba(128,132,149,0.4);padding:2px 0 2px 10px;margin:10px 0}
.fr .msg.assistant{border-left-color:#ff8a5b}
.fr mark{background:#ffe8a3}
.fr details summary{cursor:pointer;color:#808495;font-size:0.85rem}
</style>"""


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _badge(text: str, kind: str = "") -> str:
    """A status mark as a coloured word: emoji marks are empty boxes where no emoji font is installed
    (Debian's Chromium)."""
    return f'<span class="badge {kind}">{_esc(text)}</span>'


def _badges(marks: list[tuple[str, str]]) -> str:
    return "".join(_badge(text, kind) for text, kind in marks)


def _fold(count: int) -> range:
    """The messages of a long conversation to leave out: the middle, so that the customer's first
    message (what the session is about) and the newest ones (what the model weighed most) stay in
    view. Empty when the URL asks for all of them (``?messages=all``, the fold's link), or there are few."""
    if count <= _SHOWN or _ui.param("messages") == "all":
        return range(0)
    return range(1, 1 + count - _SHOWN)


def _folded(hidden: range) -> str:
    every = _ui.url("session", **(_ui.here() | {"messages": "all"}))
    return (f'<div class="fold">{len(hidden)} messages hidden ({hidden.start}–{hidden.stop - 1}) · '
            f"{_html.link('show them', every)}</div>")


def _text(value: str) -> str:
    """A block of text, long ones folded, redactions marked."""
    def marked(part: str) -> str:
        return _REDACTED.sub(lambda m: f"<mark>{m.group()}</mark>", _esc(part))

    if len(value) <= _CLIP:
        return f'<div style="white-space:pre-wrap">{marked(value)}</div>'
    return (f'<div style="white-space:pre-wrap">{marked(value[:_CLIP])} …</div><details><summary>'
            f"{len(value) - _CLIP:,} more characters</summary>"
            f'<div style="white-space:pre-wrap">{marked(value[_CLIP:])}</div></details>')


def _json(value: Any) -> str:
    return f"<pre>{_esc(json.dumps(value, indent=2, ensure_ascii=False))}</pre>"


def _blocks(content: Any) -> str:
    if isinstance(content, str):
        return _text(content)
    out = []
    for block in content or ():
        kind = block.get("type")
        if kind == "text":
            out.append(_text(block.get("text", "")))
        elif kind == "tool_use":
            out.append(f"calls <b><code>{_esc(block.get('name'))}</code></b>{_json(block.get('input'))}")
        elif kind == "tool_result":
            inner = block.get("content")
            if isinstance(inner, list):
                inner = "\n".join(b.get("text", "") for b in inner if isinstance(b, dict))
            label = '<span class="red">tool error</span>' if block.get("is_error") else "tool result"
            out.append(f'<div class="muted">{label} for <code>{_esc(block.get("tool_use_id", ""))}</code></div>'
                       + _text(str(inner or "")))
        elif kind in ("thinking", "redacted_thinking"):
            out.append(f"<details><summary>thinking</summary>{_text(block.get('thinking') or '(redacted by the API)')}"
                       "</details>")
        else:
            out.append(f'<div class="muted">{_esc(kind)} block</div>')
    return "".join(out)


def _conversation(request: dict[str, Any], cut: int) -> str:
    messages = request.get("messages") or []
    hidden = _fold(len(messages))
    parts = []
    system = request.get("system")
    if system:
        parts.append(f"<details><summary>system prompt</summary>{_text(_system_text(system))}</details>")
    if cut > 0:
        parts.append(f'<p class="orange">{_badge("history cut", "warn")} This request has {cut} message(s) fewer than '
                     "the previous decision's. The Context diff view shows which.</p>")
    for i, message in enumerate(messages):
        if i in hidden:
            if i == hidden.start:
                parts.append(_folded(hidden))
            continue
        role = message.get("role", "user")
        parts.append(f'<div class="msg {_esc(role)}"><div class="muted">message {i} · {_esc(role)}</div>'
                     f"{_blocks(message.get('content'))}</div>")
    return "".join(parts)


def _system_text(system: Any) -> str:
    if isinstance(system, list):
        return "\n\n".join(b.get("text", "") for b in system if isinstance(b, dict))
    return str(system)


def _composition(call: tracer.LlmCall) -> str:
    """A stacked bar of the input tokens by segment, and the share of the context window used."""
    out = []
    parts = [(k, call.context_tokens[k]) for k in _SEGMENTS if call.context_tokens.get(k)]
    total = sum(n for _, n in parts)
    if total:
        bar = "".join(f'<div title="{k}: {n:,} tokens" style="width:{100 * n / total:.2f}%;background:{_COLORS[k]}">'
                      "</div>" for k, n in parts)
        legend = " ".join(f'<span style="white-space:nowrap"><span style="display:inline-block;width:10px;height:10px;'
                          f'border-radius:2px;background:{_COLORS[k]}"></span> {k} {n:,}</span>' for k, n in parts)
        out.append(f'<div class="bar">{bar}</div><div style="font-size:0.8rem;margin-top:3px">{legend}</div>')
    if call.context_utilisation is not None:
        u = call.context_utilisation
        color = "red" if u >= _CRITICAL else "orange" if u >= _WARN else "green"
        out.append(f'<div class="{color}" style="margin-top:6px">{u:.0%} of the {call.context_window:,}-token window'
                   f'</div><div class="bar" style="height:6px"><div style="width:{min(u, 1) * 100:.1f}%;'
                   f'background:currentColor" class="{color}"></div></div>')
    return "".join(out)


def _tools(call: tracer.LlmCall) -> str:
    chosen = set(call.tools_chosen)
    names = call.tools_available or sorted(chosen)
    if not names:
        return '<span class="muted">no tools were offered</span>'
    return "".join(_badge(f"{n} (chosen)", "on") if n in chosen else _badge(n) for n in names)


def _costs(call: tracer.LlmCall, attempts: int) -> str:
    total_in = (call.input_tokens or 0) + (call.cache_read_tokens or 0) + (call.cache_write_tokens or 0)
    cells = [
        ("input tokens", _ui.tokens(total_in), f"uncached {call.input_tokens or 0:,}, cache read "
         f"{call.cache_read_tokens or 0:,}, cache write {call.cache_write_tokens or 0:,}"),
        ("output tokens", _ui.tokens(call.output_tokens), ""),
        ("cost", _ui.usd(call.cost_usd), ""),
        ("latency", _ui.ms(call.latency_ms), ""),
        ("first byte", _ui.ms(call.ttft_ms), "time to the first streamed byte"),
        ("attempts", str(attempts), "retries included"),
    ]
    return '<div class="grid">' + "".join(f'<div title="{_esc(tip)}"><small>{label}</small><b>{_esc(value)}</b></div>'
                                          for label, value, tip in cells) + "</div>"


def _messages_cut(account: tracer.SessionAccount, turn: tracer.Turn, call: tracer.LlmCall) -> int:
    """How many messages fewer than the previous decision's request this one carries: a request
    normally repeats the whole history and adds to it, so fewer means the agent cut its context."""
    before = [d for t in account.turns if t.index < turn.index and (d := _decision(t)) is not None]
    if not before or before[-1].message_count is None or call.message_count is None:
        return 0
    return max(before[-1].message_count - call.message_count, 0)


def _decision_card(call: tracer.LlmCall, turn: tracer.Turn) -> str:
    """What was decided, in what context, among which tools, at what cost; and what went wrong."""
    chosen = f" → <code>{_esc(', '.join(call.tools_chosen))}</code>" if call.tools_chosen else ""
    out = [f"<h4>Decision</h4><b>{_esc(call.action or 'failed')}</b>{chosen} · stop reason "
           f"<code>{_esc(call.stop_reason or '–')}</code> · model <code>{_esc(call.model)}</code>",
           "<h4>Context</h4>", _composition(call), "<h4>Tools it could pick</h4>", _tools(call),
           _costs(call, len(turn.llm_calls))]
    # Recorded failures are data, not a fault of this page: marked in red, not in an error box.
    for f in turn.llm_calls:
        if f.status != "ok":
            out.append(f'<div class="red">{_badge("retried", "bad")} attempt {f.attempt} failed: '
                       f'{_esc(f.error_type or "error")}' + (f" (HTTP {f.http_status})" if f.http_status else "")
                       + f" after {_ui.ms(f.latency_ms)}</div>")
    out.append(_events(turn))
    return "".join(out)


def _events(turn: tracer.Turn) -> str:
    """What the agent recorded on the turn: guards that fired, approvals asked for …"""
    out = []
    for event in turn.events:
        attrs = event.get("attributes") or {}
        mark = _badge("guard", "bad") if event.get("name") == "guard_fired" else _badge("event", "warn")
        out.append(f'<div>{mark} {_esc(event.get("name"))}: '
                   + _esc(", ".join(f"{k.split('.')[-1]}={v}" for k, v in attrs.items())) + "</div>")
    return "".join(out)


def _what_it_did(call: tracer.LlmCall, turn: tracer.Turn) -> str:
    """The model's reasoning and words, the calls it made, and what the tools answered."""
    out = []
    if call.reasoning:
        out.append(f"<h4>Why <span class='muted'>(the model's reasoning)</span></h4>{_text(call.reasoning)}")
    if call.output_text and call.output_text != call.reasoning:
        out.append(f"<h4>What it said</h4>{_text(call.output_text)}")
    for use in call.tool_uses:
        out.append(f"<h4>Called <code>{_esc(use.get('name'))}</code> with</h4>{_json(use.get('input'))}")
    for t in turn.tool_calls:
        ok = t.status == "ok"
        extra = [f"retries {t.retries}" if t.retries else "",
                 f"circuit {t.circuit_state}" if t.circuit_state and t.circuit_state != "closed" else "",
                 f"idempotency key <code>{_esc(t.idempotency_key)}</code>" if t.idempotency_key else ""]
        out.append(f"<div>{_badge('ok', 'ok') if ok else _badge('failed', 'bad')} <code>{_esc(t.tool_name)}</code> "
                   f"returned in {_ui.ms(t.latency_ms)}"
                   + "".join(f" · {x}" for x in extra if x) + "</div>")
        if not ok:
            out.append(f'<div class="red">{_esc(t.error_type)}: {_esc(t.error_message)}</div>')
        if t.result is not None:
            out.append(f"<details{' open' if not ok else ''}><summary>tool result</summary>"
                       f"<pre>{_esc(t.result[:20_000])}</pre></details>")
    return "".join(out)


def _decision_view(account: tracer.SessionAccount, turn: tracer.Turn) -> None:
    sid = account.session.session_id
    call = _decision(turn)
    if call is None:
        st.info("This turn made no LLM call.")
        if turn.events:  # a guard that stopped the session before the turn's model call
            st.html(_CSS + f'<div class="fr">{_events(turn)}</div>')
        return
    request = _request(sid, turn.index)
    seen = "" if isinstance(request, str) else _conversation(request, _messages_cut(account, turn, call))
    links = [_html.link("Replay this turn", _ui.url("replay", id=sid, turn=turn.index))]
    if not isinstance(request, str):
        links.append(_ui.json_link("session", "the exact request (JSON)", "request"))
    # One element for the whole decision, its two columns side by side: each element costs the
    # browser its own drawing on every load (``_html``).
    st.html(_CSS + f'<div class="fr cols"><div>{_what_it_did(call, turn)}<h4>What the model saw <span class="muted">'
            f'({call.message_count or 0} messages)</span></h4>{seen}</div><div>{_decision_card(call, turn)}'
            f"<p>{' · '.join(links)}</p></div></div>")
    if isinstance(request, str):
        st.info(request, icon=":material/visibility_off:")
    else:
        _ui.json_view("The exact request (JSON)", "request", request)


def _chat(account: tracer.SessionAccount, marks: dict[int, list[tuple[str, str]]]) -> None:
    """The whole conversation as the customer and the agent had it, turn by turn: the last
    decision's request (which repeats the history) and what the model answered to it."""
    sid = account.session.session_id
    turns = [t for t in account.turns if _decision(t) is not None]
    if not turns:
        st.info("This session made no LLM call.")
        return
    last = turns[-1]
    call = _decision(last)
    assert call is not None
    request = _request(sid, last.index)
    if isinstance(request, str):
        st.info(request, icon=":material/visibility_off:")
        return
    compacted = [t.index for t in account.turns for e in t.events if e.get("name") == "context_compacted"]
    if compacted:
        st.info(f"The agent compacted its context at turn {', '.join(map(str, compacted))}: this is the conversation "
                "as the model saw it last, with a summary in place of the dropped turns. Pick an earlier decision "
                "to see what they said.", icon=":material/compress:")
    answer: list[dict[str, Any]] = ([{"type": "text", "text": call.output_text}] if call.output_text else []) + [
        {"type": "tool_use", "name": u.get("name"), "input": u.get("input")} for u in call.tool_uses]
    messages = [*(request.get("messages") or []), *([{"role": "assistant", "content": answer}] if answer else [])]
    if last.tool_calls:  # the last turn's tool results, which no request carried back to the model
        messages.append({"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": t.tool_call_id or t.tool_name, "content": t.result or t.error_message
             or "", "is_error": t.status != "ok"} for t in last.tool_calls]})
    # The k-th model answer is the k-th decision's, unless the agent cut its history.
    answers = [i for i, m in enumerate(messages) if m.get("role") == "assistant"]
    turn_of = dict(zip(answers, (t.index for t in turns))) if len(answers) == len(turns) else {}
    system = request.get("system")
    if system:
        with st.expander("System prompt", expanded=False):
            st.html(_CSS + f'<div class="fr">{_text(_system_text(system))}</div>')
    hidden = _fold(len(messages))
    for i, message in enumerate(messages):
        if i in hidden:
            if i == hidden.start:
                st.html(_CSS + f'<div class="fr">{_folded(hidden)}</div>')
            continue
        content = message.get("content")
        results = isinstance(content, list) and any(isinstance(b, dict) and b.get("type") == "tool_result"
                                                     for b in content)
        role = "assistant" if message.get("role") == "assistant" else "tool" if results else "user"
        turn = turn_of.get(i)
        head = f'<div class="muted">turn {turn}</div>' if turn is not None else ""
        with st.chat_message(role, avatar=":material/build:" if role == "tool" else None):
            st.html(_CSS + f'<div class="fr">{head}{_badges(marks.get(turn, [])) if turn else ""}'
                    f"{_blocks(content)}</div>")


def _trace(session_id: str, marks: dict[int, list[tuple[str, str]]]) -> None:
    spans = _spans(session_id)
    if spans.empty:
        st.info("No spans recorded for this session.")
        return
    t0 = int(spans["start_ns"].min())
    depth: dict[str, int] = {}
    for sid, parent in zip(spans["span_id"], spans["parent_span_id"]):
        depth[sid] = depth.get(parent, -1) + 1 if parent in depth else 0
    view = spans.assign(
        depth=[depth[s] for s in spans["span_id"]],
        start_ms=(spans["start_ns"] - t0) / 1e6, end_ms=(spans["end_ns"] - t0) / 1e6,
        duration_ms=(spans["end_ns"] - spans["start_ns"]) / 1e6,
    )
    # A turn's span carries its marks, in words; a failed span is red.
    flags = ["".join(f"  [{text}]" for text, _ in marks.get(int(t), [])) if pd.notna(t) else "" for t in view["turn"]]
    view["marked"] = [bool(f) for f in flags]
    # Vega trims leading spaces, so the tree's depth is drawn with dots.
    view["span"] = [f"{i:03d} " + "· " * d + n + flag
                    for i, (d, n, flag) in enumerate(zip(view["depth"], view["name"], flags))]
    pick = alt.selection_point(fields=["span_id"], name="span", on="click")
    chart = alt.Chart(view).mark_bar().encode(
        x=alt.X("start_ms:Q", title="ms since the session started"), x2="end_ms:Q",
        y=alt.Y("span:N", sort=None, title=None, axis=alt.Axis(labelLimit=420, labelFontSize=11, labelOverlap=False)),
        color=alt.Color("status_code:N", scale=alt.Scale(domain=["UNSET", "OK", "ERROR"],
                                                          range=["#4c78a8", "#54a24b", "#e45756"]), legend=None),
        stroke=alt.condition("datum.marked", alt.value("#e45756"), alt.value(None)),
        tooltip=["name", alt.Tooltip("duration_ms:Q", format=",.1f"), "status_code", "status_message"],
    ).add_params(pick).properties(height=max(120, 18 * len(view)))
    st.caption("Click a span for its details.")
    event = st.altair_chart(chart, width="stretch", on_select="rerun", key="trace_chart")
    picked = [p.get("span_id") for p in (event.selection.get("span") or []) if isinstance(p, dict)] \
        if event and event.selection else []
    if picked and picked[0] != _ui.param("span"):
        st.query_params["span"] = picked[0]  # the URL is a deep link to the span shown
    span_id = picked[0] if picked else _ui.param("span")
    if span_id:
        _span_details(session_id, span_id, t0)
    with st.expander("span table", expanded=False):
        st.dataframe(view[["span", "duration_ms", "status_code", "status_message", "span_id"]], hide_index=True,
                     width="stretch", column_config={"duration_ms": st.column_config.NumberColumn(format="%.1f ms")})


def _span_details(session_id: str, span_id: str, t0: int) -> None:
    """One span: its status and timing, what went in and came out, its attributes and events."""
    span = _span(session_id, span_id)
    if span is None:
        st.warning(f"This session has no span {span_id}; pick one in the trace above.")
        return
    kind = {"OK": "ok", "ERROR": "bad"}.get(span["status_code"], "")
    head = [f"<h4><code>{_esc(span['name'])}</code> {_badge(span['status_code'].lower(), kind)}</h4>",
            '<div class="grid" style="grid-template-columns:repeat(4,1fr)">'
            + "".join(f"<div><small>{k}</small><b>{_esc(v)}</b></div>" for k, v in (
                ("starts at", _ui.ms((span["start_ns"] - t0) / 1e6)),
                ("duration", _ui.ms((span["end_ns"] - span["start_ns"]) / 1e6)),
                ("kind", span["kind"]), ("span id", span_id[:16]))) + "</div>"]
    if span["status_message"]:
        head.append(f'<div class="red">{_esc(span["status_message"])}</div>')
    if pd.notna(span["arguments"]) or pd.notna(span["result"]) or pd.notna(span["error_type"]):
        if pd.notna(span["arguments"]):
            head.append(f"<h4>Input</h4><pre>{_esc(span['arguments'])}</pre>")
        if pd.notna(span["error_type"]):
            head.append(f'<div class="red">{_esc(span["error_type"])}: {_esc(span["error_message"])}</div>')
        if pd.notna(span["result"]):
            head.append(f"<h4>Output</h4><pre>{_esc(str(span['result'])[:20_000])}</pre>")
    with st.container(border=True, key="span_details"):
        st.html(_CSS + f'<div class="fr">{"".join(head)}</div>')
        if pd.notna(span["llm_turn"]):
            request = _request(session_id, int(span["llm_turn"]))
            _ui.raw_json("Input: the request sent", request)
            if pd.notna(span["response_body"]):
                _ui.raw_json("Output: the response", span["response_body"])
        _ui.raw_json("Attributes", span["attributes"])
        if pd.notna(span["events"]) and span["events"] not in ("[]", ""):
            _ui.raw_json("Events", span["events"])


def _context_diff_view(session_id: str, turns: list[int], current: int) -> None:
    if len(turns) < 2:
        st.info("A context diff needs two decisions; this session has one.")
        return
    a_col, b_col = st.columns(2)
    b_default = turns.index(current) if current in turns else len(turns) - 1
    b = b_col.selectbox("B", turns, index=max(b_default, 1), format_func=lambda t: f"turn {t}", key="ctx_b")
    a = a_col.selectbox("A", turns, index=max(turns.index(b) - 1, 0), format_func=lambda t: f"turn {t}",
                        key="ctx_a")
    d = _context_diff(session_id, a, b)
    if isinstance(d, str):
        st.info(d)
        return
    kept = f" and **{d.messages_kept}** kept after it" if d.messages_kept else ""
    replaced = (f"**{len(d.messages_replaced)}** replaced by what B added to {len(d.messages_amended)} of them, "
                if d.messages_amended else "")
    st.markdown(f"**{d.messages_common}** messages in common at the start{kept}; {replaced}"
                f"**{len(d.messages_added)}** added, **{len(d.messages_removed)}** removed, "
                f"**{len(d.messages_truncated)}** truncated in B.")
    if d.system_changed:
        st.markdown("**System prompt changed**")
        st.code("\n".join(d.system_diff), language="diff")
    else:
        st.caption("system prompt unchanged")
    for title, items in (("Kept in B, with blocks added", d.messages_amended),
                         ("Only in A, replaced by those blocks", d.messages_replaced),
                         ("Added in B", d.messages_added), ("Only in A (removed)", d.messages_removed),
                         ("Truncated in B", d.messages_truncated)):
        if items:
            st.markdown(f"**{title}**")
            st.dataframe(pd.DataFrame(items), hide_index=True, width="stretch")
    if d.tools_added or d.tools_removed:
        st.markdown(f"**Tools** added: {', '.join(d.tools_added) or '–'}; removed: {', '.join(d.tools_removed) or '–'}")
    if d.params_changed:
        st.markdown("**Parameters changed**")
        st.dataframe(pd.DataFrame([{"parameter": k, "A": str(v[0]), "B": str(v[1])}
                                   for k, v in d.params_changed.items()]), hide_index=True)


def _eval_box(session_id: str) -> None:
    """Which eval run and case this session was a trial of, and why the trial failed, with links to
    the run and to the decision the failure judged: the first thing to read when an eval failure
    brought you here."""
    for run, r in _eval_trials(session_id):
        labels = f" ({', '.join(run.labels)})" if run.labels else ""
        head = (f"**Eval trial**: case `{r.case_id}`, trial {r.trial + 1} of {run.trials} in run "
                f"`{run.run_id[:8]}`{labels} of {run.dataset}")
        turn = evals.failing_turn(r)
        with st.container(border=True):
            if r.passed:
                st.markdown(f":green-badge[passed] {head}.")
            else:
                why = r.error or "; ".join(x["reason"] for x in r.scores if not x.get("passed") and x.get("reason"))
                st.markdown(f":red-badge[failed] {head}. Why: {why or 'no scorer said.'}")
            with st.container(horizontal=True):
                _ui.link("evals", "Open the run", run=run.run_id)
                if turn is not None:
                    _ui.link("session", f"Open the decision that failed (turn {turn})", id=session_id, turn=turn)


_after = _ui.cached(_ui.after_deploy)


def _after_deploy_box(session_id: str) -> None:
    """Its online scores, outcome and review: one line says what there is, with the link to its review,
    and a link (``?after=1``) shows them in full, with the button that queues it for review. An
    expander's body, collapsed, was drawn all the same on every load of the page."""
    after = _after(session_id)
    if st.session_state.pop("session_queued", None) == session_id:
        st.success("Queued for review: it waits on the Review page.", icon=":material/check:")
    told = [f"score {after.score:.2f}" if after.score is not None else "scored" if after.scores else "not scored",
            ("resolved" if after.outcomes[0].resolved else "not resolved" if after.outcomes[0].resolved is False
             else "rated") if after.outcomes else "no outcome",
            "not reviewed" if after.review is None else "waiting for review" if after.review.verdict is None
            else f"reviewed {after.review.verdict}"]
    shown = _ui.param("after") == "1"
    kept = {k: v for k, v in _ui.here().items() if k != "after"}
    toggle = _ui.url("session", **kept, **({} if shown else {"after": 1}))
    review = (" · " + _html.link("Open it on the Review page", _ui.url("review", id=session_id))
              if after.review is not None else "")
    _ui.draw(f'<p class="fr-note">After it ended: {_esc(" · ".join(told))} · '
             + _html.link(f"{'hide' if shown else 'show'} the scores, outcome and review", toggle) + f"{review}</p>")
    if not shown:
        return
    _ui.show_after_deploy(after)
    # A plain button, not on_click: a failed write must raise inside the page body, as an error box. Shown
    # with the review it would start, not on every load: an element costs the browser its drawing.
    if after.review is None and st.button(
            "Queue for review", key="session_queue_review", icon=":material/rate_review:",
            help="Puts it in the review queue (why: hand), for someone to give it a verdict."):
        with _ui.source().writing() as store:
            store.queue_reviews([session_id], "hand")
        st.session_state["session_queued"] = session_id
        st.rerun()


def _task_box(s: tracer.SessionSummary, tree: tracer.SessionTree) -> None:
    """The sessions of the task this one is part of: the root, the sub-agents' sessions it started,
    theirs, and so on, each with its own cost and the cost with its sub-agents; a row opens its session.
    Drawn as one element, as is all a page load shows but for a few controls (``_html``)."""
    if len(tree.nodes) < 2:
        return
    total = tree.root.subtree_cost_usd if tree.root.subtree_cost_usd is not None else \
        tree.root.subtree_cost_usd_known_part
    _ui.draw(
        _html.heading("Sessions of this task", help="A session that a sub-agent or a handoff started is a child of "
                      "the session that started it (flightrec.parent_session_id); its cost rolls up into its "
                      "parent's."),
        _html.note(f"{len(tree.nodes)} sessions, {_ui.usd(total)} in all. Click a session to open it."),
        _html.table(
            [{"session": n.session_id[:13] + (" (this one)" if n.session_id == s.session_id else ""),
              "agent": n.agent or "–", "status": n.status, "own cost": _ui.usd(n.cost_usd),
              "with sub-agents": _ui.usd(n.subtree_cost_usd), "LLM calls": f"{n.llm_calls:,}",
              "tokens": f"{n.tokens:,}"} for n in tree.nodes],
            links=[None if n.session_id == s.session_id else _ui.url("session", id=n.session_id) for n in tree.nodes],
            indent=[n.depth for n in tree.nodes], numeric=("own cost", "with sub-agents", "LLM calls", "tokens"),
            tips={"with sub-agents": "Its cost and that of every session under it."}))


def _pickers(indexes: list[int], by_index: dict[int, tracer.Turn], marks: dict[int, list[tuple[str, str]]],
             current: int, view: str) -> None:
    """Every decision as a link, numbered by turn: a turn where something went wrong is underlined (red:
    a guard fired or a tool failed; orange: an alert, a fallback, a compaction), and its tooltip says
    what it decided and what went wrong; the decision shown is written out below. Then the view."""
    worst = {i: "bad" if any(kind == "bad" for _, kind in m) else "warn" for i, m in marks.items() if i in by_index}
    label = _decision_label(by_index[current], [])
    _ui.draw(_CSS, _html.switches("session", _ui.here(), _html.Switch(
                 "Decision", "turn", {str(i): str(i) for i in indexes}, str(current),
                 tips={str(i): _decision_label(by_index[i], marks.get(i, [])) for i in indexes},
                 marks={str(i): kind for i, kind in worst.items()})),
             f'<div class="fr"><p class="fr-note">{_esc(label)} {_badges(marks.get(current, []))}</p></div>',
             _html.switches("session", _ui.here(), _html.Switch("View", "view", _VIEWS, view)))


def _pick_session() -> None:
    recent = _recent()
    st.title("Session")
    if recent.empty:
        st.info("No sessions recorded yet. Run `make demo`, or point an agent at this store.")
        return
    st.info("Pick a session here, or open one from the Sessions page.")
    sid = st.selectbox("Recent sessions", recent["session_id"], index=None, placeholder="a session id",
                       format_func=lambda s: f"{s} · " + " · ".join(
                           str(v) for v in recent.loc[recent["session_id"] == s, ["agent", "status"]].iloc[0]))
    if sid:
        st.query_params["id"] = sid
        st.rerun()


def render() -> None:
    sid = _ui.param("id")
    if sid is None:
        _pick_session()
        return
    account = _account(sid)
    s = account.session
    # Plain text: a title's code span and help icon cost the browser more than the title (RESULTS §79).
    st.title(f"Session {s.session_id[:13]}…")
    _eval_box(s.session_id)
    kind = "ok" if s.status == "ok" else "" if s.status in ("running", "waiting_human") else "bad"
    said = (f"<code>{_esc(s.session_id)}</code> · agent <b>{_esc(s.agent or '–')}</b> · {_badge(s.status, kind)}"
            + (f" {_esc(s.status_reason)}" if s.status_reason else ""))
    totals = [("turns", f"{s.turns}"),
              ("tool calls", f"{s.tool_calls}" + (f' <span class="red">({s.tool_errors} failed)</span>'
                                                  if s.tool_errors else "")),
              ("tokens", _ui.tokens(s.input_tokens + s.output_tokens + s.cache_read_tokens + s.cache_write_tokens)),
              ("cost", _ui.usd(s.cost_usd)), ("duration", _ui.ms(s.duration_ms))]
    tree = _tree(s.session_id)
    here = tree.node(s.session_id)
    if here is not None and any(n.parent_session_id == s.session_id for n in tree.nodes):
        totals.insert(4, ("cost with sub-agents", _ui.usd(here.subtree_cost_usd)))
    alerts = _related(s.session_id)
    # Where to go from here: what it waits for, the session that started it, the alerts it raised.
    links = [("Approve or reject what it waits for", _ui.url("approvals", id=s.session_id))] \
        if s.status == "waiting_human" else []
    if s.parent_session_id:
        parent = tree.node(s.parent_session_id)
        links.append((f"Open the parent session ({parent.agent if parent else 'not in this store'} · "
                      f"{s.parent_session_id[:13]})", _ui.url("session", id=s.parent_session_id)))
    links += [(f"{a.severity}: {a.title[:60]}", _ui.url("alerts", alert=a.alert_id)) for a in alerts.itertuples()]
    st.html(_CSS + f'<div class="fr"><div>{said}</div><div class="grid" style="grid-template-columns:'
            f'repeat({len(totals)},1fr)">' + "".join(f"<div><small>{k}</small><b>{v}</b></div>" for k, v in totals)
            + "</div>" + ("<p>" + " · ".join(_html.link(label, u) for label, u in links) + "</p>"
                          if links else "") + "</div>")
    _task_box(s, tree)
    _after_deploy_box(s.session_id)
    turns = [t for t in account.turns if t.llm_calls or t.tool_calls or t.events]
    if not turns:
        st.info("This session has no decisions recorded yet." + (" It is still running." if s.status == "running"
                                                                  else ""))
        return
    by_index = {t.index: t for t in turns}
    wanted = _ui.int_param("turn")
    if wanted is not None and wanted not in by_index:
        st.warning(f"This session has no turn {wanted}; it has turns {min(by_index)}–{max(by_index)}.")
    indexes = list(by_index)
    marks = _marks(account, alerts)
    current = wanted if wanted in by_index else indexes[0]
    st.query_params["turn"] = str(current)  # keeps the URL a deep link to what is on screen
    # One view at a time: tabs would compute all three on every run.
    view = _ui.param("view") if _ui.param("view") in _VIEWS else "decision"
    st.query_params["view"] = view
    _pickers(indexes, by_index, marks, current, view)
    if view == "trace":
        _trace(s.session_id, marks)
    elif view == "chat":
        _chat(account, marks)
    elif view == "context":
        _context_diff_view(s.session_id, [i for i in indexes if by_index[i].llm_calls], current)
    else:
        _decision_view(account, by_index[current])


_ui.guarded(render)
