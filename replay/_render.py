"""Text output of the replay commands."""

from __future__ import annotations

import difflib
import json
from typing import Any

import tracer

from ._diff import short
from ._records import ContextDiff, DecisionDiff, ForkResult, Reconstruction, RerunResult, RunResult, SessionDiff

_DIFF_LINES = 40
"""Lines of a rerun's divergence diff shown before ``--json`` is needed."""


def _signed(v: float | None, fmt: str = "{:+d}") -> str:
    return "unknown" if v is None else fmt.format(v)


_FLAGS = {"model": "--model NAME", "max_tokens": "--max-tokens N"}


def reconstructed(source: str | None, notes: list[str]) -> list[str]:
    """The marking of a request that is not the exact one sent (reconstructed from semantic conventions, or
    redacted at capture), and what it changed or left out."""
    source_line = [] if source is None else [
        f"source    RECONSTRUCTED FROM SEMANTIC CONVENTIONS ({source}), not the exact request sent: "
        "there is no recorded hash to verify it by"]
    return [*source_line, *(f"note      {n}" for n in notes)]


def reconstruction(r: Reconstruction) -> str:
    if r.reconstructed_from is not None:
        check = "of the reconstructed request; no hash was recorded to check it against"
    else:
        check = "matches the recorded hash" if r.exact else f"DIFFERS from the recorded {r.recorded_sha256}"
    messages = r.request.get("messages") or []
    lines = [
        f"session   {r.session_id} · turn {r.turn} · span {r.span_id}",
        *reconstructed(r.reconstructed_from, r.notes),
        *(f"missing   {m}: not recorded, and the Messages API requires it; a re-run needs {_FLAGS.get(m, m)}"
          for m in r.missing),
        f"sha256    {r.sha256} ({check})",
        f"decided   {short(r.decision)}",
        f"request   model {r.request.get('model')} · {len(messages)} messages (indices 0..{len(messages) - 1}) · "
        f"{len(r.request.get('tools') or [])} tools" + (f" · betas {', '.join(r.betas)}" if r.betas else ""),
        "",
        json.dumps(r.request, indent=2, ensure_ascii=False),
    ]
    return "\n".join(lines)


def run_result(r: RunResult) -> str:
    n = len(r.trials)
    lines = [f"origin    {r.origin.session_id} turn {r.origin.turn}: {short(r.origin)}",
             *reconstructed(r.reconstructed_from, r.notes),
             f"re-run    {n} trial{'s' * (n != 1)} · answered by {r.model} · recorded as session "
             f"{r.replay_session_id}"]
    for i, d in enumerate(r.trials, 1):
        mark = "changed" if d.choice() != r.origin.choice() else "same"
        lines.append(f"  trial {i}: {mark:7} {short(d)}")
    if r.changed:
        lines.append(f"changed   {r.changed}/{n} trials decided differently from the recording")
    else:
        lines.append(f"unchanged {n}/{n} trials decided as the recording did")
    return "\n".join(lines)


def decision_diff(d: DecisionDiff) -> str:
    (la, lb), w = d.labels, max(map(len, d.labels))
    lines = [f"{la:{w}}  {d.a.session_id}:{d.a.turn}  {short(d.a)}",
             f"{lb:{w}}  {d.b.session_id}:{d.b.turn}  {short(d.b)}",
             "same decision" if d.same else "the decision changed"]
    for c in d.changes:
        if c.diff:
            lines.append(f"{c.field}:")
            lines += [f"  {line}" for line in c.diff]
        else:
            lines.append(f"{c.field}: {c.a!r} → {c.b!r}")
    lines.append(f"deltas: input tokens {_signed(d.delta_input_tokens)}, "
                 f"output tokens {_signed(d.delta_output_tokens)}, "
                 f"cost {tracer.format_usd(d.delta_cost_usd, signed=True)}, latency {d.delta_latency_ms:+.0f} ms")
    return "\n".join(lines)


def session_diff(d: SessionDiff) -> str:
    (la, lb), w = d.labels, max(map(len, d.labels))
    lines = [f"{la:{w}}  {d.a}", f"{lb:{w}}  {d.b}", ""]
    for p in d.turns:
        mark = " " if p.same else "≠"
        lines.append(f"{mark} turn {p.turn:>3}  {la + ':':{w + 1}} {p.a or '—'}")
        lines.append(f"{'':12}{lb + ':':{w + 1}} {p.b or '—'}")
    lines.append("")
    if d.first_divergence is None:
        lines.append("the sessions take the same path")
    else:
        lines.append(f"first divergence at turn {d.first_divergence}")
        if d.divergence is not None:
            lines.append(decision_diff(d.divergence))
    return "\n".join(lines)


def context_diff(d: ContextDiff) -> str:
    lines = [f"A  {d.a}", f"B  {d.b}"]
    if d.system_changed:
        lines.append("system prompt changed:")
        lines += [f"  {line}" for line in d.system_diff if not line.startswith(("---", "+++"))]
    else:
        lines.append("system prompt unchanged")
    lines.append(f"messages: {d.messages_common} in common at the start"
                 + (f" ({len(d.messages_amended)} with blocks added in B)" if d.messages_amended else "")
                 + (f", {d.messages_kept} kept after it" if d.messages_kept else ""))

    def entries(title: str, items: list[dict[str, Any]]) -> None:
        if items:
            lines.append(f"{title}:")
            lines.extend(f"  [{e['index']}] {e['role']}: {e['preview']}" for e in items)

    if d.messages_amended:
        lines.append("amended in B (kept, with blocks added):")
        lines.extend(f"  [{e['index']}] {e['role']}: {e['preview']}\n      + {e['added']}" for e in d.messages_amended)
    entries("replaced in B by the blocks added (only in A)", d.messages_replaced)
    entries("removed (only in A)", d.messages_removed)
    entries("added (only in B)", d.messages_added)
    entries("truncated in B", d.messages_truncated)
    if d.tools_added or d.tools_removed:
        lines.append(f"tools: +{', '.join(d.tools_added) or '—'}  -{', '.join(d.tools_removed) or '—'}")
    for k, (a, b) in d.params_changed.items():
        lines.append(f"{k}: {a!r} → {b!r}")
    return "\n".join(lines)


def fork_result(r: ForkResult) -> str:
    lines = [f"origin    {r.origin.session_id} turn {r.origin.turn}: {short(r.origin)}",
             *reconstructed(r.reconstructed_from, r.notes),
             f"fork      session {r.session_id} · {r.status}: {r.reason}",
             f"model     {r.model}" + (f" · live tools of agent {r.agent}" if r.agent else ""),
             f"tools     {r.recorded_tool_calls} served from the recording, {r.live_tool_calls} run live"]
    lines += [f"  turn {d.turn:>3}: {short(d)}" for d in r.decisions]
    return "\n".join(lines)


def _readable(value: Any) -> Any:
    """``value`` with JSON text inside it (tool results) parsed, so that a line diff points at the field."""
    if isinstance(value, dict):
        return {k: _readable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_readable(v) for v in value]
    if isinstance(value, str) and value[:1] in "{[":
        try:
            return _readable(json.loads(value))
        except ValueError:
            return value
    return value


def rerun_result(r: RerunResult) -> str:
    if r.same_path:
        return f"session {r.session_id}: the agent took the recorded path ({r.turns_checked} decisions checked)"
    d = r.first_divergence
    assert d is not None
    head = f"session {r.session_id}: first divergence at turn {d.turn}: {d.what}"
    if d.expected is None and d.actual is None:
        return head

    def lines(v: Any) -> list[str]:
        return json.dumps(_readable(v), indent=2, ensure_ascii=False, sort_keys=True).splitlines()

    diff = list(difflib.unified_diff(lines(d.expected), lines(d.actual), "recorded", "agent", n=2, lineterm=""))
    shown = diff[:_DIFF_LINES] + ([f"... {len(diff) - _DIFF_LINES} more lines (--json has all)"]
                                 if len(diff) > _DIFF_LINES else [])
    return "\n".join([head, *("  " + x for x in shown)])
