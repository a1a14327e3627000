"""What every detector works with: the sessions a run looks at (``Scope``), what it finds
(``Finding``), and the SQL each starts from (``TARGET``, ``scope_head``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import tracer

from ._alerts import Severity
from ._config import DetectConfig

LISTED_IDS = 200
"""``Scope.where``: the most session ids put in a query as a list of values."""


@dataclass(frozen=True)
class Scope:
    """The sessions a run looks at: ended ones that ended at or after ``since_ns``, or these ids, of
    the ``origins`` given.

    Production only by default: eval trials misbehave on purpose (that is what their cases test),
    and replays and forks are experiments on recorded sessions, so an alert about one would page
    someone for nothing. The baselines a session is judged against are built from sessions of the
    same origins, so that an eval run's or a fork's costs never move production's medians.
    """

    since_ns: int = 0
    session_ids: tuple[str, ...] | None = None
    rows_from_ns: int = 0
    """No row of a session in scope starts before this; ``detect`` sets it from the sessions' own
    starts. The per-session detectors read only the rows from then on (see ``scope_head``)."""
    origins: tuple[str, ...] | None = ("production",)
    """The ``sessions.origin`` values looked at (``tracer.ORIGINS``); ``None``: every session."""
    now_ns: int | None = None
    """What "now" is to the detectors that measure a wait (``approval.waiting``); ``detect`` sets it
    from the wall clock when it is ``None``, and tests pass their own."""

    def __post_init__(self) -> None:
        unknown = [o for o in self.origins or () if o not in tracer.ORIGINS]
        if unknown or self.origins == ():
            raise tracer.ConfigError(f"origin {', '.join(unknown) or '(none)'}: not a session origin; "
                                     f"use one or more of {', '.join(tracer.ORIGINS)}, or all.")

    def of_origins(self, alias: str = "s") -> str:
        """A SQL condition on ``sessions`` (as ``alias``) that keeps the sessions of the scope's origins
        (the history a baseline is built from). The values are checked, so they are inlined."""
        if self.origins is None:
            return "true"
        return f"{alias}.origin IN ({', '.join(repr(o) for o in self.origins)})"

    def where(self, alias: str = "s") -> tuple[str, list[Any]]:
        """A SQL condition on ``sessions`` (as ``alias``) and its parameters.

        Up to ``LISTED_IDS`` session ids go in as a list of values; more, as one list parameter that
        DuckDB joins on: with 2,000 ids the values cost each query ~45 ms, and a whole run over
        2,000 sessions 1.36-1.51 s against 0.67-0.83 (benchmarks/RESULTS.md §76). With 100 ids the
        values are as fast, and faster on a store of many sessions."""
        sql, params = f"{alias}.ended AND {alias}.end_ns >= ? AND {self.of_origins(alias)}", [self.since_ns]
        if self.session_ids is not None and len(self.session_ids) > LISTED_IDS:
            sql += f" AND {alias}.session_id IN (SELECT unnest(?::VARCHAR[]))"
            params.append(list(self.session_ids))
        elif self.session_ids is not None:
            sql += f" AND {alias}.session_id IN ({', '.join('?' * len(self.session_ids)) or 'NULL'})"
            params += list(self.session_ids)
        return sql, params


def recent_and_reference(recent: int, reference: int, *, names: tuple[str, str] = ("rec", "ref"),
                         order: str = "PARTITION BY agent, route ORDER BY end_ns") -> str:
    """Two SQL window frames over a route's sessions in time order, for a detector that compares a route's
    newest sessions with its own history: ``names[0]``, the ``recent`` rows up to the current one, and
    ``names[1]``, the ``reference`` rows before those."""
    recent_name, reference_name = names
    return (f"{recent_name} AS ({order} ROWS BETWEEN {recent - 1} PRECEDING AND CURRENT ROW), "
            f"{reference_name} AS ({order} ROWS BETWEEN {recent + reference - 1} PRECEDING AND {recent} PRECEDING)")


@dataclass
class Finding:
    """One observation: becomes (or adds to) an alert."""

    detector: str
    severity: Severity
    title: str
    agent: str | None
    route: str | None
    session_id: str | None
    subject: str
    """What the alert is about, beyond the detector, agent and route (a tool and its arguments …)."""
    seen_ns: int
    turns: list[int] = field(default_factory=list)
    evidence: dict[str, Any] = field(default_factory=dict)
    observation: str | None = None
    """The observation's key; the session id unless the detector watches something else."""
    session_ids: list[str] | None = None
    """The sessions the alert points at, newest last, when they are not the one ``session_id`` (a
    window's worst sessions)."""


Detector = Callable[[tracer.Store, Scope, DetectConfig], list[Finding]]

TARGET = "target AS (SELECT s.session_id, s.agent, s.route, s.end_ns FROM sessions s WHERE {where})"
_PER_SESSION_TABLES = ("spans", "llm_calls", "tool_calls", "turns")


def scope_head(scope: Scope) -> tuple[str, list[Any]]:
    """The ``WITH`` head of a per-session detector: ``target``, the sessions in scope, and each table
    it reads cut down to those sessions' rows, under the table's own name (``main.x`` is the table).

    Joining a whole table on session id costs as much as the table, however few sessions a run
    covers; the constant bound on ``start_ns`` (rows are stored about in time order) lets DuckDB
    skip the older row groups and segments by their min/max, so a run's cost follows its sessions.
    That bound is the earliest start in the run, and a session that began long ago (or lasts long)
    puts it far back; so the rows are first found by their session id alone, reading that column
    only, and then read whole by ``rowid``, which DuckDB fetches from the row groups that hold them
    (benchmarks/RESULTS.md §72). One query, so the row ids cannot move in between.
    """
    where, params = scope.where()
    ctes = [TARGET.format(where=where)]
    ctes += [f"{t} AS (SELECT * FROM main.{t} WHERE rowid IN (SELECT rowid FROM main.{t} "
             f"WHERE start_ns >= {int(scope.rows_from_ns)} AND session_id IN (SELECT session_id FROM target)))"
             for t in _PER_SESSION_TABLES]
    return "WITH " + ",\n".join(ctes), params


NAMED = "s.agent IS NOT NULL"
"""``route_history``'s ``which`` for a detector that judges a session by its route's: sessions that name
no agent are every unnamed agent's mixed, and their routes too. With the detector corpus's agents'
and routes' names removed, judging those as one group made ``cost.drift`` and ``tools.diversity``
flag 33 of its 1,775 clean sessions, and find none of its costly ones (benchmarks/RESULTS.md §72)."""


def route_history(scope: Scope, before: int, *, newest: int = 0, which: str = "true") -> str:
    """CTEs after ``target``, for a detector that judges a session against the sessions before it on
    its agent and route; the last, ``history``, holds the sessions it reads of that history, with
    ``history.newest`` marking the agent's ``newest``.

    Those are the ended sessions of the scope's origins that meet ``which`` (SQL on ``sessions s``),
    on the agents in scope (sessions that name none, as plain GenAI instrumentation records them,
    count as one agent; ``NAMED`` leaves them out): on each route of a judged session, every session
    from the ``before`` sessions before its first judged one on (by end time: a detector's windows,
    and the session before for a "held" rule), so that every judged session's window is whole; and
    the agent's ``newest`` sessions, on any route. So a run's cost follows the sessions it judges,
    not the store's history nor the agent's routes; a run over the whole history reads it all, as
    it must (benchmarks/RESULTS.md §72, §76).

    The cut-offs come from a top-N per route and per agent (``max(end_ns, n)``, a heap of n), not
    from ranking every session of the agents: that sort grew with the store, 0.45-0.78 s and 56-64 MB
    a detector on a store of 1,000,000 sessions (§76).
    """
    same = "c.agent IS NOT DISTINCT FROM e.agent AND c.route = e.route"
    ctes = f"""eligible AS NOT MATERIALIZED (
        SELECT s.session_id, s.agent, coalesce(s.route, '') AS route, s.end_ns
        FROM sessions s
        WHERE s.ended AND coalesce(s.agent, '') IN (SELECT coalesce(agent, '') FROM target) AND {scope.of_origins()}
          AND {which}),
    firsts AS (
        SELECT agent, route, min(end_ns) AS first_ns FROM eligible
        WHERE session_id IN (SELECT session_id FROM target) GROUP BY agent, route),
    cutoffs AS (
        SELECT e.agent, e.route,
               least(any_value(c.first_ns),
                     list_min(max(e.end_ns, {int(before)}) FILTER (WHERE e.end_ns < c.first_ns))) AS from_ns
        FROM eligible e JOIN firsts c ON {same} GROUP BY e.agent, e.route)"""
    if newest <= 0:
        return f"""{ctes},
    history AS (
        SELECT e.session_id, e.agent, e.route, e.end_ns, FALSE AS newest
        FROM eligible e JOIN cutoffs c ON {same} WHERE e.end_ns >= c.from_ns)"""
    return f"""{ctes},
    newest AS (SELECT agent, list_min(max(end_ns, {int(newest)})) AS from_ns FROM eligible GROUP BY agent),
    history AS (
        SELECT e.session_id, e.agent, e.route, e.end_ns, e.end_ns >= n.from_ns AS newest
        FROM eligible e LEFT JOIN cutoffs c ON {same} JOIN newest n ON n.agent IS NOT DISTINCT FROM e.agent
        WHERE e.end_ns >= c.from_ns OR e.end_ns >= n.from_ns)"""


def json_value(text: str | None) -> Any:
    try:
        return json.loads(text) if text else None
    except ValueError:
        return text


def guard_stops(store: tracer.Store, scope: Scope, guard: str) -> list[tuple[Any, ...]]:
    """Sessions in which the agent's own ``guard`` fired: (session, agent, route, turns, seen, the event)."""
    head, params = scope_head(scope)
    rows = store.sql(f"""{head}
        SELECT u.session_id, any_value(t.agent), any_value(t.route), list(u.turn_index ORDER BY u.turn_index),
               max(u.end_ns), list(u.events ORDER BY u.turn_index)
        FROM turns u JOIN target t USING (session_id)
        WHERE u.events LIKE '%guard_fired%' AND contains(u.events, ?) GROUP BY u.session_id""",
                     [*params, f'"{guard}"'])
    out = []
    for sid, agent, route, turns, seen, events in rows:
        fired = next((e["attributes"] for ev in events for e in json.loads(ev) if e.get("name") == "guard_fired"
                      and e.get("attributes", {}).get("guard") == guard), None)
        if fired is not None:
            out.append((sid, agent, route, turns, seen, fired))
    return out


def route_label(agent: str | None, route: str | None) -> str:
    return f"agent {agent}" + (f", route {route}" if route else "")
