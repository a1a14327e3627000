"""Retention: expiring old sessions whole or only their content, and deleting one session on request.

The store is content-addressed (docs/schema.md): ``content`` bodies and ``message_chain`` nodes
are shared between calls and between sessions, so the calls of the sessions removed leave
candidates, not a list to delete. A chain node stays while a kept call's chain runs through it
(and then belongs to a session that keeps it, so that the next prune finds it again); a body
stays while a kept call or node refers to it. Nothing dangles: every reference a kept row
holds still resolves.

Expiring content keeps what trends need (tokens, costs, decisions, timings, the spans and their
attributes) and drops what a person said or was told: message, system and tool bodies, request
parameters, responses, reasoning, tool arguments, results and error messages, span events and
status descriptions, the attributes of turn events (their names and times stay) and the
session's status reason (its status stays). Each call is marked (``llm_calls.content_pruned_ns``)
so that replay says "pruned" rather than failing a hash check.

Alerts are the operators' record of what the detectors found, so they outlive the sessions they
cite. A session that goes whole leaves the alerts' session lists, and an alert whose evidence
(tool arguments, results) came from a session that lost its content or went loses that evidence;
title, counts and status stay. Deleting a session on request goes further: its observations go,
and an alert observed in that session alone goes with it, since all it holds came from it.

These functions run inside the caller's transaction, on its connection (``Store`` holds the lock).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import pyarrow as pa

from ._errors import ConfigError, StoreError
from ._records import PruneResult

if TYPE_CHECKING:
    from ._store import Store

PRUNE_BATCH = 200
"""Sessions one prune step removes in one transaction at most: the collector's writer commits
between two steps, so ingest waits for one step at most (benchmarks/bench_prune.py)."""

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 7 * 86_400}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")

_GONE = "SELECT session_id FROM _gone"
_ROWS = f"session_id IN ({_GONE}) AND start_ns BETWEEN $lo AND $hi"
"""A removed session's rows: every row of a session starts within the session's span of time,
which lets DuckDB skip the row groups of other times (rows arrive roughly in time order)."""

_DROP_CALL_CONTENT = """
UPDATE llm_calls SET reasoning = NULL, response_body = NULL, request_params = NULL, system_ref = NULL,
    messages_ref = NULL, tool_refs = NULL, content_pruned_ns = $now
WHERE {rows}
"""
# The loop keys are digests of the arguments and results; a digest of a short value (an order id,
# an e-mail address) is as good as the value to anyone who can guess it, so they go too.
_DROP_TOOL_CONTENT = """
UPDATE tool_calls SET arguments = NULL, result = NULL, error_message = NULL, args_key = NULL, shape_key = NULL,
    outcome_key = NULL
WHERE {rows}
"""
_DROP_SPAN_CONTENT = """
UPDATE spans SET events = NULL, status_message = NULL
WHERE {rows} AND (events IS NOT NULL OR status_message IS NOT NULL)
"""
# A turn event keeps its name and time (a guard fired, an approval was asked for): its attributes
# quote the conversation ("refund $549.00 on A-1003 …").
_DROP_TURN_CONTENT = """
UPDATE turns SET events = to_json(list_transform(CAST(events AS JSON[]),
    lambda e: {{'name': e->>'name', 'time_ns': CAST(e->>'time_ns' AS BIGINT)}}))::VARCHAR
WHERE {rows} AND events IS NOT NULL
"""
_LIVE_SEEDS = """
SELECT l.messages_ref, l.session_id FROM llm_calls l SEMI JOIN _nodes n ON l.messages_ref = n.node
UNION ALL
SELECT m.prev, m.session_id FROM message_chain m SEMI JOIN _nodes n ON m.prev = n.node
ANTI JOIN _nodes c ON m.node = c.node
"""
"""The candidate nodes still in use: the tails of kept calls, and the predecessors of nodes that
are not candidates. Every node before one of them in its chain stays too."""
_DEAD_CONTENT = """
DELETE FROM {content} WHERE hash IN (SELECT hash FROM _bodies)
  AND hash NOT IN (SELECT system_ref FROM llm_calls WHERE system_ref IN (SELECT hash FROM _bodies))
  AND hash NOT IN (SELECT message FROM message_chain WHERE message IN (SELECT hash FROM _bodies))
  AND hash NOT IN (SELECT h FROM (SELECT unnest(tool_refs) AS h FROM llm_calls WHERE tool_refs IS NOT NULL)
                   WHERE h IN (SELECT hash FROM _bodies))
"""


def parse_duration(text: str) -> int:
    """A duration such as ``30d``, ``12h``, ``90m``, ``2w`` or ``45s``, in nanoseconds.

    Raises:
        ConfigError: not a number above 0 with one of those units.
    """
    found = _DURATION.fullmatch(text.strip().lower())
    if found is None:
        raise ConfigError(f"{text!r} is not a duration: give a number and a unit, such as 30d, 12h or 90m "
                          "(units: s, m, h, d, w).")
    seconds = float(found.group(1)) * _UNITS[found.group(2)]
    if seconds <= 0:
        raise ConfigError(f"{text!r} is no time at all: give a duration above 0, such as 30d.")
    return int(seconds * 1e9)


def remove_sessions(con: duckdb.DuckDBPyConnection, session_ids: list[str], *, content_only: bool, now_ns: int,
                    why: str, forget_observations: bool = False, tables: Mapping[str, str] | None = None
                    ) -> PruneResult:
    """Removes the sessions (or, with ``content_only``, their content) and what only they used.

    ``why`` replaces the evidence of alerts that came from them. With ``forget_observations`` (a
    deletion on request) their alert observations go too, and alerts observed in them alone.
    ``tables`` names the tables that changes go to where reads go through a view of another name
    (a lake's ``sessions``, ``content`` and ``message_chain``: ``_lake.TABLES``).
    """
    names = {"sessions": "sessions", "content": "content", "message_chain": "message_chain", **(tables or {})}
    result = PruneResult(sessions=len(session_ids), content_only=content_only)
    if not session_ids:
        return result
    con.register("_gone", pa.table({"session_id": pa.array(session_ids, pa.string())}))
    try:
        lo, hi = con.execute(f"SELECT min(start_ns), max(end_ns) FROM sessions WHERE session_id IN ({_GONE})"
                             ).fetchone()
        span = {"lo": lo, "hi": hi}
        calls = con.execute(f"SELECT system_ref, tool_refs FROM llm_calls WHERE {_ROWS}", span).fetchall()
        bodies = {h for system, tools in calls for h in ([system] if system else []) + list(tools or [])}
        nodes = {n: (p, m) for n, p, m in con.execute(
            f"SELECT node, prev, message FROM message_chain WHERE session_id IN ({_GONE})").fetchall()}
        if content_only:
            result.llm_calls = _count(con, _DROP_CALL_CONTENT.format(rows=_ROWS), {**span, "now": now_ns})
            result.tool_calls = _count(con, _DROP_TOOL_CONTENT.format(rows=_ROWS), span)
            result.spans = _count(con, _DROP_SPAN_CONTENT.format(rows=_ROWS), span)
            result.turns = _count(con, _DROP_TURN_CONTENT.format(rows=_ROWS), span)
            con.execute(f"UPDATE {names['sessions']} SET content_pruned_ns = $now, status_reason = NULL "
                        f"WHERE session_id IN ({_GONE})", {"now": now_ns})
        else:
            for table in ("spans", "turns", "llm_calls", "tool_calls"):
                setattr(result, table, _count(con, f"DELETE FROM {table} WHERE {_ROWS}", span))
            con.execute(f"DELETE FROM {names['sessions']} WHERE session_id IN ({_GONE})")
            result.eval_results = _count(
                con, f"UPDATE eval_results SET session_id = NULL WHERE session_id IN ({_GONE})")
            for table in ("session_scores", "session_outcomes", "reviews"):  # what was said of them goes with them
                con.execute(f"DELETE FROM {table} WHERE session_id IN ({_GONE})")
        dead_messages = _collect_chain(con, nodes, result, names["message_chain"])
        bodies |= dead_messages
        if bodies:
            con.register("_bodies", pa.table({"hash": pa.array(sorted(bodies), pa.string())}))
            try:
                result.content = _count(con, _DEAD_CONTENT.format(content=names["content"]))
            finally:
                con.unregister("_bodies")
        _unlink_alerts(con, set(session_ids), why, forget=not content_only, forget_observations=forget_observations,
                       result=result)
    finally:
        con.unregister("_gone")
    return result


def _count(con: duckdb.DuckDBPyConnection, sql: str, params: dict[str, int] | None = None) -> int:
    """Runs a DELETE or UPDATE; returns the rows it changed."""
    row = con.execute(sql, params or {}).fetchone()
    return int(row[0]) if row else 0


def _collect_chain(con: duckdb.DuckDBPyConnection, nodes: dict[str, tuple[str | None, str]],
                   result: PruneResult, chain: str) -> set[str]:
    """Deletes the candidate ``nodes`` (those the removed sessions wrote) that no kept call's chain
    runs through, hands the others to a session that uses them; returns the dead nodes' messages."""
    if not nodes:
        return set()
    con.register("_nodes", pa.table({"node": pa.array(list(nodes), pa.string())}))
    try:
        owner: dict[str, str] = {}
        stack = con.execute(_LIVE_SEEDS).fetchall()
        while stack:
            node, session_id = stack.pop()
            if node in nodes and node not in owner:
                owner[node] = session_id
                prev = nodes[node][0]
                if prev is not None:
                    stack.append((prev, session_id))
    finally:
        con.unregister("_nodes")
    dead = [n for n in nodes if n not in owner]
    if dead:
        con.register("_dead", pa.table({"node": pa.array(dead, pa.string())}))
        try:
            result.chain_nodes = _count(con, f"DELETE FROM {chain} WHERE node IN (SELECT node FROM _dead)")
        finally:
            con.unregister("_dead")
    if owner:
        con.register("_kept", pa.table({"node": pa.array(list(owner), pa.string()),
                                        "session_id": pa.array(list(owner.values()), pa.string())}))
        try:
            con.execute(f"UPDATE {chain} SET session_id = k.session_id FROM _kept k WHERE {chain}.node = k.node")
        finally:
            con.unregister("_kept")
    return {nodes[n][1] for n in dead}


def _unlink_alerts(con: duckdb.DuckDBPyConnection, gone: set[str], why: str, *, forget: bool,
                   forget_observations: bool, result: PruneResult) -> None:
    """Takes the sessions out of the alerts that cite them (see the module docstring)."""
    rows = con.execute(
        f"""SELECT fingerprint, session_id, session_ids, turns, count FROM alerts
            WHERE session_id IN ({_GONE}) OR ($forget AND list_has_any(session_ids, $ids))""",
        {"forget": forget, "ids": sorted(gone)}).fetchall()
    evidence = json.dumps({"removed": why})
    for fingerprint, session_id, session_ids, turns, count in rows:
        if forget_observations:
            dropped = _count(
                con, f"DELETE FROM alert_observations WHERE fingerprint = $fp AND observation IN ({_GONE})",
                {"fp": fingerprint})
            count -= dropped
            if dropped and count <= 0:  # observed in these sessions alone: nothing of it is anyone else's
                con.execute("DELETE FROM alert_observations WHERE fingerprint = $fp", {"fp": fingerprint})
                con.execute("DELETE FROM alerts WHERE fingerprint = $fp", {"fp": fingerprint})
                result.alerts_deleted += 1
                continue
        kept_ids = [s for s in session_ids if s not in gone] if forget else session_ids
        latest = session_id
        if forget and session_id in gone:
            latest, turns = (kept_ids[-1] if kept_ids else None), []
        con.execute(
            """UPDATE alerts SET session_id = $latest, session_ids = $ids, turns = $turns, count = $count,
                   evidence = CASE WHEN $scrub THEN $evidence ELSE evidence END
               WHERE fingerprint = $fp""",
            {"latest": latest, "ids": kept_ids, "turns": turns, "count": count, "scrub": session_id in gone,
             "evidence": evidence, "fp": fingerprint})
        result.alerts_changed += 1


def compact(path: str) -> tuple[int, int]:
    """Rewrites the store file with its live data only (``COPY FROM DATABASE``) and puts it in
    place of the old one; returns the file's size before and after, in bytes.

    DuckDB reuses the blocks that deleted rows free, but it does not give them back to the file
    system, and until they are reused they still hold the deleted bytes; a copy holds neither.
    The caller must have closed its own connection: the file must be free of every process.

    Raises:
        StoreError: the file is held by another process, or the copy failed; the old file stays.
    """
    fresh = f"{path}.compact"
    Path(fresh).unlink(missing_ok=True)
    before = os.path.getsize(path)
    con = duckdb.connect()
    try:
        # A copy of a large store takes seconds, and DuckDB would draw its progress bar on stdout,
        # into `prune --compact --json`'s output.
        con.execute("SET enable_progress_bar = false")
        # A literal: DuckDB before 2.0 takes no parameter in ATTACH.
        con.execute(f"ATTACH {_sql_string(path)} AS old")  # for writing: no other process may hold it meanwhile
        con.execute(f"ATTACH {_sql_string(fresh)} AS fresh")
        con.execute("COPY FROM DATABASE old TO fresh")
        con.execute("DETACH fresh")
        con.execute("DETACH old")
    except BaseException as exc:
        con.close()
        Path(fresh).unlink(missing_ok=True)
        if isinstance(exc, duckdb.Error):
            raise StoreError(f"compacting {path} failed, and the file is as it was: {str(exc).splitlines()[0]}. If "
                             "another process holds the file, stop it and run this again.") from None
        raise
    con.close()
    os.replace(fresh, path)
    return before, os.path.getsize(path)


def _sql_string(text: str) -> str:
    """``text`` as an SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def reference_problems(store: Store) -> dict[str, int]:
    """Rows that break the store's references, or that nothing refers to any more, by kind; empty
    for a consistent store. What retention promises (nothing dangles, nothing is left that nothing
    uses), checked: tests and ``benchmarks/bench_prune.py`` run it after every removal.

    Blocking: a dozen scans of the store's tables, on the caller's thread.
    """
    checks = {
        "system_ref without content": "SELECT count(*) FROM llm_calls WHERE system_ref NOT IN "
                                      "(SELECT hash FROM content)",
        "tool_ref without content": """SELECT count(*) FROM (SELECT unnest(tool_refs) AS h FROM llm_calls)
                                       WHERE h NOT IN (SELECT hash FROM content)""",
        "messages_ref without node": "SELECT count(*) FROM llm_calls WHERE messages_ref NOT IN "
                                     "(SELECT node FROM message_chain)",
        "node without prev": "SELECT count(*) FROM message_chain WHERE prev NOT IN (SELECT node FROM message_chain)",
        "node without message": "SELECT count(*) FROM message_chain WHERE message NOT IN (SELECT hash FROM content)",
        "content nothing uses": """SELECT count(*) FROM content WHERE hash NOT IN (
                                       SELECT system_ref FROM llm_calls WHERE system_ref IS NOT NULL
                                       UNION ALL SELECT unnest(tool_refs) FROM llm_calls
                                       UNION ALL SELECT message FROM message_chain)""",
        "node nothing uses": """SELECT count(*) FROM message_chain WHERE node NOT IN (
                                    SELECT messages_ref FROM llm_calls WHERE messages_ref IS NOT NULL
                                    UNION ALL SELECT prev FROM message_chain WHERE prev IS NOT NULL)""",
        "node of no session": "SELECT count(*) FROM message_chain WHERE session_id NOT IN "
                              "(SELECT session_id FROM sessions)",
        # NULL NOT IN (an empty set) is true: the NULLs are left out first.
        "eval result of no session": "SELECT count(*) FROM eval_results WHERE session_id IS NOT NULL AND "
                                     "session_id NOT IN (SELECT session_id FROM sessions)",
        "alert of no session": "SELECT count(*) FROM alerts WHERE session_id IS NOT NULL AND "
                               "session_id NOT IN (SELECT session_id FROM sessions)",
        "alert citing no session": """SELECT count(*) FROM (SELECT unnest(session_ids) AS s FROM alerts)
                                      WHERE s NOT IN (SELECT session_id FROM sessions)""",
    }
    for table in ("spans", "turns", "llm_calls", "tool_calls"):
        checks[f"{table} of no session"] = f"SELECT count(*) FROM {table} WHERE session_id NOT IN " \
                                           "(SELECT session_id FROM sessions)"
    return {name: n for name, sql in checks.items() if (n := store.sql(sql)[0][0])}
