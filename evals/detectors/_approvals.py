"""Approvals: ``approval.waiting`` a session parked for a person's approval (status
``waiting_human``) that nobody has decided for too long; ``approval.expired`` an approval that
expired unanswered (an ``approval_expired`` event)."""

from __future__ import annotations

import json
import time
from typing import Any

import tracer

from ._config import DetectConfig
from ._scope import Finding, Scope, scope_head


def _events(text: str | None, *names: str) -> list[dict[str, Any]]:
    try:
        return [e for e in json.loads(text or "[]") if e.get("name") in names]
    except ValueError:
        return []


def waiting(store: tracer.Store, scope: Scope, config: DetectConfig) -> list[Finding]:
    """Sessions waiting for an approval past ``wait_warning_s`` (critical past ``wait_critical_s``,
    or past the deadline the agent gave the approval with nothing expiring it).

    A wait grows while nothing about the session changes, so every run looks at every session of
    the scope's origins that is still ``waiting_human``, not only the sessions in scope: online,
    each run (as any session ends) sees the waits that have passed the threshold since. The wait
    is counted from the latest ``approval_requested`` event's ``requested_at`` (epoch seconds) with
    no ``human_decision`` or ``approval_expired`` for it since, else, for an agent that records no
    such event, from when the session parked (its end). "Now" is ``Scope.now_ns``. Each approval
    (and each severity it reaches) is one observation, so re-running changes nothing.
    """
    a = config.approvals
    now_ns = scope.now_ns if scope.now_ns is not None else time.time_ns()
    out = []
    for p in tracer.pending_approvals(store, f"s.ended AND {scope.of_origins()}"):
        request, approval_id = p.request, p.approval_id
        since_s = float(request.get("requested_at") or p.end_ns / 1e9)
        waited_s = now_ns / 1e9 - since_s
        if waited_s < a.wait_warning_s:
            continue
        deadline = request.get("deadline")
        overdue = bool(deadline) and now_ns / 1e9 > float(deadline)
        severity = "critical" if waited_s >= a.wait_critical_s or overdue else "warning"
        what = p.what or "an approval"
        turn = p.turn if p.turn is not None else p.last_turn
        out.append(Finding(
            "approval.waiting", severity,
            f"{tracer.clip_text(what, 80)} has waited {tracer.format_wait(waited_s)} for a person's decision "
            f"(alert at {tracer.format_wait(a.wait_warning_s)})" + (", past its deadline with nothing expiring it"
                                                         if overdue else ""),
            p.agent, p.route, p.session_id, approval_id or p.session_id, now_ns, [turn] if turn is not None else [],
            {"approval_id": approval_id, "tool": request.get("tool"), "summary": what, "waited_s": round(waited_s),
             "requested_at": since_s, "deadline": deadline, "past_deadline": overdue,
             "counted_from": "the approval_requested event" if request else "when the session parked (its end)",
             "thresholds": {"warning_s": a.wait_warning_s, "critical_s": a.wait_critical_s},
             "decide": f"the dashboard's Approvals page (/approvals?id={p.session_id}) for an agent that registers a "
                       f"decide hook, flightrec agent approve|reject {p.session_id} (the reference agent), or your "
                       "agent's own way"},
            observation=f"{approval_id or p.session_id}:{severity}"))
    return out


def expired(store: tracer.Store, scope: Scope, config: DetectConfig) -> list[Finding]:
    """Approvals that expired unanswered: nobody decided before the deadline, and the agent did what
    it does then (escalate, refuse). One alert per agent, route and tool, each expiry an observation."""
    head, params = scope_head(scope)
    rows = store.sql(f"""{head}
        SELECT u.session_id, t.agent, t.route, u.turn_index, u.end_ns, u.events
        FROM turns u JOIN target t USING (session_id) WHERE u.events LIKE '%approval_expired%'""", params)
    out = []
    for sid, agent, route, turn, seen, events in rows:
        for e in _events(events, "approval_expired"):
            at = e.get("attributes", {})
            tool = at.get("tool") or "?"
            waited = float(at.get("waited_s") or 0.0)
            out.append(Finding(
                "approval.expired", "warning",
                f"an approval of {tool} expired after {tracer.format_wait(waited)} with no decision; the agent went "
                f"on to {at.get('outcome') or 'its fallback'}", agent, route, sid, tool, seen, [turn],
                {"approval_id": at.get("approval_id"), "tool": tool, "waited_s": waited,
                 "timeout_s": at.get("timeout_s"), "outcome": at.get("outcome")},
                observation=f"{sid}:{at.get('approval_id')}"))
    return out
