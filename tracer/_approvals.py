"""Approvals a person has yet to decide, as the trace shows them: sessions parked in ``waiting_human``,
with what each waits on. The ``approval.waiting`` detector and the dashboard's Approvals page read them here.

An agent says what it waits on with an ``approval_requested`` event on a turn (approval id, tool,
summary, ``requested_at`` and ``deadline`` in epoch seconds), and records the outcome with a
``human_decision`` or ``approval_expired`` event naming the same approval id. An agent that records
no such event is still listed, from its session's status and reason.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._store import Store

_REQUESTED = "approval_requested"
_ANSWERED = ("human_decision", "approval_expired")


@dataclass(frozen=True)
class PendingApproval:
    """A session waiting for a person's decision, and the request it waits on."""

    session_id: str
    agent: str | None
    route: str | None
    start_ns: int
    end_ns: int | None
    """When the session parked (its span ended)."""
    reason: str | None
    """The session's status reason ("refund $549.00 … needs a team lead's approval (AP-0001)")."""
    last_turn: int | None
    request: dict[str, Any]
    """The latest ``approval_requested`` event's attributes; empty for an agent that records none."""
    turn: int | None = None
    """The turn that event is on."""

    @property
    def approval_id(self) -> str | None:
        return self.request.get("approval_id")

    @property
    def what(self) -> str | None:
        """What waits: the request's summary, else the session's reason."""
        return self.request.get("summary") or self.reason


def _events(text: str | None) -> list[dict[str, Any]]:
    try:
        return [e for e in json.loads(text or "[]") if e.get("name") in (_REQUESTED, *_ANSWERED)]
    except ValueError:  # retention keeps events' names and times only; a foreign span may keep anything
        return []


def pending_approvals(store: Store, condition: str = "TRUE", params: list[Any] | None = None,
                      ) -> list[PendingApproval]:
    """The sessions in ``waiting_human`` whose latest request is not answered yet, oldest first.

    A request already answered (its decision recorded while the session has yet to carry on) is left out.

    Args:
        condition: A SQL condition on ``sessions s`` that narrows them (origins, ended).
        params: Its parameters.

    Raises:
        StoreError: the query failed.
    """
    rows = store.sql(f"""
        SELECT s.session_id, s.agent, s.route, s.start_ns, s.end_ns, s.status_reason,
               list((u.turn_index, u.events) ORDER BY u.turn_index) FILTER (WHERE u.events LIKE '%approval%'
                                                                              OR u.events LIKE '%human_decision%'),
               max(u.turn_index)
        FROM sessions s LEFT JOIN turns u USING (session_id)
        WHERE s.status = 'waiting_human' AND ({condition})
        GROUP BY ALL ORDER BY s.start_ns, s.session_id""", params)
    out = []
    for sid, agent, route, start_ns, end_ns, reason, turns, last_turn in rows:
        found = [(turn, e) for turn, text in turns or [] for e in _events(text)]
        requested = [(turn, e) for turn, e in found if e["name"] == _REQUESTED]
        turn, request = (requested[-1][0], requested[-1][1].get("attributes", {})) if requested else (None, {})
        approval_id = request.get("approval_id")
        if approval_id and any(e["name"] in _ANSWERED and e.get("attributes", {}).get("approval_id") == approval_id
                               for _, e in found):
            continue  # decided (or expired): the session is about to carry on
        out.append(PendingApproval(sid, agent, route, start_ns, end_ns, reason, last_turn, request, turn))
    return out
