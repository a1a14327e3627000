"""Diffs: two decisions, two whole sessions, or what the model saw in two decisions."""

from __future__ import annotations

import difflib
import json
from typing import Any

from tracer import Store, canonical_json, clip_text

from ._errors import ReplayError
from ._reconstruct import Db, decision_at, decisions, open_store, origin_of, rebuild
from ._records import Change, ContextDiff, Decision, DecisionDiff, Origin, SessionDiff, TurnPair

_PREVIEW = 80


def parse_ref(ref: str) -> tuple[str, int | None]:
    """``SESSION`` or ``SESSION:TURN``.

    Raises:
        ReplayError: the turn is not a positive number.
    """
    sid, sep, turn = ref.rpartition(":")
    if not sep:
        return ref, None
    if not turn.isdigit() or int(turn) < 1:
        raise ReplayError(f"{ref!r} is not SESSION or SESSION:TURN (TURN a number from 1).")
    return sid, int(turn)


def _lines(value: Any) -> list[str]:
    if isinstance(value, str):
        return value.splitlines()
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False).splitlines()


_PLAIN = ("A", "B")
_REPLAYED = ("recorded", "replayed")


def _names(a: str, b: Origin) -> tuple[str, str]:
    """How to name two sessions' sides in a diff: ``recorded`` and ``replayed`` when the session of
    origin ``b`` is a replay or fork of session ``a`` (what the Replay page compares), else ``A`` and ``B``."""
    return _REPLAYED if b.replay_session == a else _PLAIN


def _udiff(a: Any, b: Any, names: tuple[str, str]) -> list[str]:
    return list(difflib.unified_diff(_lines(a), _lines(b), *names, lineterm="", n=1))


def short(d: Decision) -> str:
    """A decision in a few words: ``tool_use issue_refund(order_id=…)`` or ``final: Shall I…``."""
    if d.tool_uses:
        calls = ", ".join(f"{t['name']}({clip_text(json.dumps(t['input'], sort_keys=True, ensure_ascii=False), 70)})"
                          for t in d.tool_uses)
        return f"{d.action} {calls}"
    text = (d.text or "").replace("\n", " ")
    return f"{d.action}: {text[:60]}{'…' if len(text) > 60 else ''}" if text else str(d.action)


def diff_decisions(a: Decision, b: Decision, names: tuple[str, str] = _PLAIN) -> DecisionDiff:
    """Two decisions compared: action, tools and arguments (a JSON diff), text, stop reason, deltas;
    ``names`` label the two sides (see ``_names``)."""
    changes: list[Change] = []
    if a.action != b.action:
        changes.append(Change(field="action", a=a.action, b=b.action))
    names_a, names_b = [t["name"] for t in a.tool_uses], [t["name"] for t in b.tool_uses]
    if names_a != names_b:
        changes.append(Change(field="tools", a=names_a, b=names_b))
    args_a, args_b = [t["input"] for t in a.tool_uses], [t["input"] for t in b.tool_uses]
    if canonical_json(args_a) != canonical_json(args_b):
        changes.append(Change(field="arguments", a=args_a, b=args_b, diff=_udiff(args_a, args_b, names)))
    if (a.text or "") != (b.text or ""):
        changes.append(Change(field="text", a=a.text, b=b.text, diff=_udiff(a.text or "", b.text or "", names)))
    if a.stop_reason != b.stop_reason:
        changes.append(Change(field="stop_reason", a=a.stop_reason, b=b.stop_reason))
    return DecisionDiff(
        a=a, b=b, same=a.choice() == b.choice(), changes=changes,
        delta_input_tokens=b.input_tokens - a.input_tokens, delta_output_tokens=b.output_tokens - a.output_tokens,
        delta_cost_usd=None if a.cost_usd is None or b.cost_usd is None else b.cost_usd - a.cost_usd,
        delta_latency_ms=b.latency_ms - a.latency_ms, labels=names,
    )


def _text(content: Any) -> str:
    """A message's content as one string, tool calls and results included."""
    if isinstance(content, str):
        return content
    parts: list[str] = []
    for block in content or []:
        kind = block.get("type")
        if kind == "text":
            parts.append(block.get("text", ""))
        elif kind == "tool_use":
            parts.append(f"→ {block.get('name')}({json.dumps(block.get('input'), sort_keys=True)})")
        elif kind == "tool_result":
            parts.append(f"← {_text(block.get('content'))}")
        else:
            parts.append(json.dumps(block, sort_keys=True))
    return "\n".join(parts)


def _entry(i: int, message: dict[str, Any]) -> dict[str, Any]:
    text = _text(message.get("content")).replace("\n", " ")
    return {"index": i, "role": message.get("role"), "preview": text[:_PREVIEW] + ("…" if len(text) > _PREVIEW else "")}


def _system_text(system: Any) -> str:
    if system is None:
        return ""
    if isinstance(system, str):
        return system
    return "\n".join(b.get("text", "") for b in system)


def _blocks(message: dict[str, Any]) -> list[Any]:
    content = message.get("content")
    return [{"type": "text", "text": content}] if isinstance(content, str) else list(content or [])


def _truncated(x: dict[str, Any], y: dict[str, Any]) -> bool:
    """B's message is A's with its text shortened (a replay edit that truncates a tool result)."""
    tx, ty = _text(x.get("content")), _text(y.get("content"))
    return x.get("role") == y.get("role") and len(ty) < len(tx) and tx.startswith(ty.rstrip("…. "))


def _amended(x: dict[str, Any], y: dict[str, Any]) -> str | None:
    """The text of B's blocks that A's message lacks (clipped), when B keeps the message (the same role
    and first block) and adds or swaps blocks after it, as a compaction attaches its summary to the
    customer's task; else None."""
    bx, by = _blocks(x), _blocks(y)
    if x.get("role") != y.get("role") or not bx or not by or canonical_json(bx[0]) != canonical_json(by[0]):
        return None
    had = {canonical_json(b) for b in bx}
    added = [b for b in by[1:] if canonical_json(b) not in had]
    if not added:
        return None
    text = _text(added).replace("\n", " ")
    return text[:_PREVIEW] + ("…" if len(text) > _PREVIEW else "")


def diff_context(a: dict[str, Any], b: dict[str, Any], *, a_ref: str = "A", b_ref: str = "B") -> ContextDiff:
    """What the model saw in two requests: system prompt, messages in common, kept, replaced, added,
    removed and truncated, tools, params.

    Messages are aligned, not only compared place by place: after a compaction (B's first message
    is A's task with a summary added, and A's older turns are gone), the task counts as in common
    (amended), the tail B kept counts as kept, and the dropped turns as replaced by the summary.
    """
    sys_a, sys_b = _system_text(a.get("system")), _system_text(b.get("system"))
    ma, mb = a.get("messages") or [], b.get("messages") or []
    common = 0
    amended: list[dict[str, Any]] = []
    while common < min(len(ma), len(mb)):
        x, y = ma[common], mb[common]
        if canonical_json(x) != canonical_json(y):
            added_blocks = None if _truncated(x, y) else _amended(x, y)
            if added_blocks is None:
                break
            amended.append({**_entry(common, y), "added": added_blocks})
        common += 1
    removed: list[dict[str, Any]] = []
    added: list[dict[str, Any]] = []
    truncated: list[dict[str, Any]] = []
    kept = 0
    rest_a, rest_b = ma[common:], mb[common:]
    matcher = difflib.SequenceMatcher(None, [canonical_json(m) for m in rest_a], [canonical_json(m) for m in rest_b],
                                      autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            kept += i2 - i1
            continue
        for k in range(max(i2 - i1, j2 - j1)):
            x = rest_a[i1 + k] if i1 + k < i2 else None
            y = rest_b[j1 + k] if j1 + k < j2 else None
            if x is not None and y is not None and _truncated(x, y):
                tx, ty = _text(x.get("content")), _text(y.get("content"))
                truncated.append({**_entry(common + j1 + k, y), "from_chars": len(tx), "to_chars": len(ty)})
                continue
            if x is not None:
                removed.append(_entry(common + i1 + k, x))
            if y is not None:
                added.append(_entry(common + j1 + k, y))
    # What B dropped while it amended a message it kept is what the amendment (a summary) replaced.
    replaced, removed = (removed, []) if amended else ([], removed)
    tools_a = [t.get("name") for t in a.get("tools") or []]
    tools_b = [t.get("name") for t in b.get("tools") or []]
    skip = {"system", "messages", "tools"}
    params = {k: [a.get(k), b.get(k)] for k in sorted((set(a) | set(b)) - skip) if a.get(k) != b.get(k)}
    return ContextDiff(
        a=a_ref, b=b_ref, system_changed=sys_a != sys_b,
        system_diff=list(difflib.unified_diff(sys_a.splitlines(), sys_b.splitlines(), "A", "B", lineterm="", n=0)),
        messages_common=common, messages_amended=amended, messages_kept=kept, messages_replaced=replaced,
        messages_removed=removed, messages_added=added, messages_truncated=truncated,
        tools_added=[str(n) for n in tools_b if n not in tools_a],
        tools_removed=[str(n) for n in tools_a if n not in tools_b], params_changed=params,
    )


def diff_sessions_in(store: Store, a: str, b: str) -> SessionDiff:
    """Two sessions aligned turn by turn; a fork inherits its origin's turns before the fork point."""
    (sid_a, da), (sid_b, db) = decisions(store, a), decisions(store, b)
    ob = origin_of(store, sid_b)
    fork_at = ob.replay_turn if ob.replay_kind == "fork" and ob.replay_session == sid_a else None
    names = _names(sid_a, ob)
    pairs: list[TurnPair] = []
    first: int | None = None
    for t in sorted(set(da) | set(db)):
        x, y = da.get(t), db.get(t)
        if y is None and fork_at is not None and t < fork_at and x is not None:
            pairs.append(TurnPair(turn=t, a=short(x), b="(inherited)", same=True))
            continue
        same = x is not None and y is not None and x.choice() == y.choice()
        pairs.append(TurnPair(turn=t, a=short(x) if x else None, b=short(y) if y else None, same=same))
        if not same and first is None:
            first = t
    divergence = None
    if first is not None and first in da and first in db:
        divergence = diff_decisions(da[first], db[first], names)
    return SessionDiff(a=sid_a, b=sid_b, turns=pairs, first_divergence=first, divergence=divergence, labels=names)


def diff_in(store: Store, a: str, b: str, *, context: bool = False) -> DecisionDiff | SessionDiff | ContextDiff:
    """``diff`` on an open store."""
    (sa, ta), (sb, tb) = parse_ref(a), parse_ref(b)
    if (ta is None) != (tb is None):
        raise ReplayError("compare a decision with a decision (SESSION:TURN twice) or a session with a session "
                          f"(SESSION twice), not {a!r} with {b!r}.")
    if ta is None or tb is None:
        if context:
            raise ReplayError("--context compares what the model saw in two decisions: give SESSION:TURN twice.")
        return diff_sessions_in(store, sa, sb)
    da, db = decision_at(store, sa, ta), decision_at(store, sb, tb)
    if context:
        body_a, body_b = rebuild(store, da), rebuild(store, db)
        return diff_context(body_a, body_b, a_ref=f"{da.session_id}:{ta}", b_ref=f"{db.session_id}:{tb}")
    return diff_decisions(da, db, _names(da.session_id, origin_of(store, db.session_id)))


def diff(a: str, b: str, *, context: bool = False,
         db: Db = None) -> DecisionDiff | SessionDiff | ContextDiff:
    """Compares two decisions (``SESSION:TURN``), two sessions (``SESSION``), or with ``context``
    what the model saw in two decisions.

    Raises:
        tracer.UnknownSessionError, UnknownTurnError, NoContentError (``context`` only), ReplayError.

    Blocking: opens the store read-only for the duration of the call (or reads it through the
    ``flightrec serve`` that holds it).
    """
    with open_store(db, through_serve=True) as store:
        return diff_in(store, a, b, context=context)

