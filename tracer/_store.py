"""The DuckDB trace store: one file, one writing process, add-only migrations.

``Store`` is the narrow interface that replay, evals and the dashboard use; a ClickHouse
backend would implement the same methods. ``Store(":memory:")`` is its in-memory twin for tests.

Every ``duckdb.Error`` is mapped here to a ``StoreError`` that says what to do next.
"""

from __future__ import annotations

import bisect
import dataclasses
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

if TYPE_CHECKING:  # pandas costs the CLI a third of a second to import; only the dashboard uses frame()
    import pandas as pd

from . import _chat_attributes as _chat
from . import _lake
from ._audit import ALERT_ACTIONS, AuditAction, AuditVia, audit_entry
from ._canonical import canonical_json, sha256_hex
from ._errors import (
    ConfigError,
    FlightrecError,
    NotRebuildableError,
    SchemaTooNewError,
    StoreError,
    StoreInvalidatedError,
    StoreLockedError,
    StoreMemoryError,
    UnknownAlertError,
    UnknownEvalRunError,
    UnknownSessionError,
    UnstorableError,
)
from ._holder import find_holder
from ._ingest import _BIGINT_SUMS, _SESSION_SUMS, LLM_CALL_COLUMNS, Batch
from ._loops import outcome_key_sql
from ._migrations import LATEST, MIGRATIONS
from ._origin import SessionMarks
from ._records import (
    AgentRun,
    AlertRecord,
    AuditEntry,
    CallOutline,
    CallParts,
    EvalResultRecord,
    EvalRunRecord,
    LlmCall,
    OutcomeRecord,
    PruneResult,
    ReviewRecord,
    SessionAccount,
    SessionNode,
    SessionScore,
    SessionSummary,
    SessionTree,
    ToolCallRecord,
    Turn,
    VerifyResult,
)
from ._retention import PRUNE_BATCH, remove_sessions
from ._spill import recover

log = logging.getLogger("flightrec")
DEFAULT_DB = "flightrec.duckdb"
_NEWEST_MESSAGES = 3
_CONTEXT_EVENTS = ("context_warning", "context_compacted")
"""Events on which an agent that manages its own context records the window it works to (``window``, ``model``)."""
_KEYS_PER_QUERY = 1_000
_LOCK_HOLDER = re.compile(r"Conflicting lock is held in (.+?) \(PID (\d+)\)")

_COLUMNS = {
    "spans": ("trace_id", "span_id", "parent_span_id", "session_id", "name", "kind", "start_ns", "end_ns",
              "status_code", "status_message", "attributes", "events", "links", "resource", "scope"),
    "llm_calls": LLM_CALL_COLUMNS,
    "tool_calls": ("span_id", "trace_id", "session_id", "turn_index", "tool_name", "tool_call_id", "start_ns",
                   "end_ns", "status", "error_type", "error_message", "arguments", "result", "idempotency_key",
                   "retries", "circuit_state", "args_key", "shape_key"),
    "turns": ("session_id", "turn_index", "trace_id", "span_id", "start_ns", "end_ns", "events"),
}
_STORED_SPANS = """
SELECT b.trace_id, b.span_id FROM _batch b
SEMI JOIN (SELECT trace_id, span_id FROM spans WHERE {ranges}) s USING (trace_id, span_id)
"""
"""The spans of a batch already in the store. A retry repeats a span's end time. Spans are sent when
they end, so the stored rows are about in order of their end, and a batch's ends lie in a few ranges
(``_time_ranges``): DuckDB skips the row groups of every other time by their least and greatest end.
Not by start: a session's root span starts when the session began, so the start times of a batch,
and of every row group, reach back as far as its longest session (benchmarks/RESULTS.md §71)."""
_RANGE_GAP_NS = 1_000_000_000
"""A gap between a batch's end times wider than this splits them into two ranges."""
_MOST_RANGES = 32
"""At most this many ranges a check: past it, the narrowest gaps are not split."""
_LLM = {c: i for i, c in enumerate(_COLUMNS["llm_calls"])}
_SESSION_COLUMNS = (
    "session_id", "trace_id", "agent", "start_ns", "end_ns", "ended", "status", "status_reason", "content_mode",
    *_SESSION_SUMS, "cost_usd", "origin", "eval_run_id", "eval_case_id", "source_session_id", "route", "tags",
    "parent_session_id",
)


_SESSION_MARKS = ("eval_run_id", "eval_case_id", "source_session_id", "route", "tags", "parent_session_id")


_KEY_BYTES = 80
"""Memory DuckDB holds for each row of a table with a primary key, once the table is written to: it
loads the key's index (an adaptive radix tree) whole on the first insert after the file is opened or
checkpointed, and neither spills nor frees it until the next checkpoint. 74.5 bytes a key measured, for
414,792 keys of 32-character content hashes, chain nodes and session ids, 73.7 for 1,201,589; on six
agents of other shapes, about 72 a key and a few MB for the indexes' first blocks, which the working
memory covers (benchmarks/RESULTS.md §81)."""


@dataclasses.dataclass
class _MemoryBound:
    """The memory a process holds a database's DuckDB to (``Store.limit_memory``), and what is lent."""

    working: int
    """Megabytes for everything but the keys' indexes: rows awaiting a checkpoint, cached blocks, queries."""
    keys: int
    """Bytes the keys' indexes take once loaded, about (``_KEY_BYTES`` a row of a keyed table)."""
    shown: str = ""
    """DuckDB's ``memory_limit`` as last set to ``mb``: another means the database was opened anew since."""
    lent: int = 0
    """Megabytes DuckDB is let now: ``mb``, or more while memory is lent."""
    lenders: int = 0
    checkpointing: bool = False

    @property
    def mb(self) -> int:
        return self.working + -(-self.keys // 10**6)  # DuckDB's MB


_memory_bounds: dict[str, _MemoryBound] = {}
"""By database (``Store._key``): handles on one file share DuckDB's settings, so they share its bound."""
_memory_bounds_lock = threading.Condition()


def _combined_session(first: str, other: str) -> str:
    """The SET clause that adds session row ``other`` into ``first``: counts add up, the span of
    time widens, and ``first``'s end, status and names win where it has them. A batch's origin is
    NULL until the session's root span arrives (its turns come first); an origin other than
    production, once known, stays."""
    return f"""
    trace_id = coalesce({first}.trace_id, {other}.trace_id),
    agent = coalesce({first}.agent, {other}.agent),
    start_ns = least({first}.start_ns, {other}.start_ns),
    end_ns = greatest({first}.end_ns, {other}.end_ns),
    ended = {first}.ended OR {other}.ended,
    status = CASE WHEN {first}.ended THEN {first}.status ELSE {other}.status END,
    status_reason = CASE WHEN {first}.ended THEN {first}.status_reason ELSE {other}.status_reason END,
    content_mode = coalesce({first}.content_mode, {other}.content_mode),
    {", ".join(f"{c} = {_saturated(f'{first}.{c}', f'{other}.{c}', c)}" for c in _SESSION_SUMS)},
    cost_usd = {first}.cost_usd + {other}.cost_usd,
    origin = CASE WHEN coalesce({first}.origin, 'production') = 'production' THEN {other}.origin
                  ELSE {first}.origin END,
    {", ".join(f"{c} = coalesce({first}.{c}, {other}.{c})" for c in _SESSION_MARKS)}"""


def _saturated(a: str, b: str, column: str) -> str:
    """``a + b`` held at the column's largest value: a session whose count would overflow stays
    writable (its count stays at the bound). Ingest bounds each call's counts (``_validate``), so
    only about 2^31 spans in one session reach it."""
    if column in _BIGINT_SUMS:
        return f"CAST(least(CAST({a} AS HUGEINT) + {b}, {2**63 - 1}) AS BIGINT)"
    return f"CAST(least(CAST({a} AS BIGINT) + {b}, {2**31 - 1}) AS INTEGER)"


# A batch's row is the newer one: its end and status win. An update of the stored sessions and an
# insert of the others cost about half of one INSERT … ON CONFLICT DO UPDATE (see benchmarks/RESULTS.md §24).
_SESSION_UPDATE = f"""
UPDATE sessions SET {_combined_session("b", "sessions")}
FROM _batch b WHERE sessions.session_id = b.session_id
RETURNING session_id
"""
_SESSION_FILTER_IDS = 256
"""The most session ids the sessions UPDATE passes to its scan of ``sessions`` as a filter (``_upsert_sessions``)."""
_SESSION_INSERT = (f"INSERT INTO sessions ({', '.join(_SESSION_COLUMNS)}) "
                   "SELECT * REPLACE (coalesce(origin, 'production') AS origin) FROM _batch")
_MERGED_TABLES = ("spans", "llm_calls", "tool_calls", "turns", "message_chain")
_SESSION_MERGE = f"""
UPDATE sessions SET {_combined_session("sessions", "a")}
FROM (SELECT * FROM sessions WHERE session_id = $old) a
WHERE sessions.session_id = $new
"""
"""Adds a session stored under its trace id into the named session it turned out to belong to."""
_CLOSE_INACTIVE = """
UPDATE sessions SET ended = true, status_reason = $reason,
    status = CASE WHEN (SELECT last(c.action ORDER BY c.start_ns) FROM llm_calls c
                        WHERE c.session_id = sessions.session_id) = 'final' THEN 'ok' ELSE 'incomplete' END
WHERE NOT ended AND end_ns < $before
RETURNING session_id
"""
_ALERT_COLUMNS = ("fingerprint", "alert_id", "detector", "family", "severity", "title", "agent", "route", "session_id",
                  "turns", "session_ids", "evidence", "status", "first_seen_ns", "last_seen_ns", "count")
_ALERT_SQL = f"SELECT {', '.join(_ALERT_COLUMNS)} FROM alerts"
_ALERT_SESSIONS = 20
"""Sessions an alert remembers."""

_AUDIT_COLUMNS = ("at_ns", "actor", "action", "target", "via", "detail")
_AUDIT_INSERT = f"INSERT INTO audit_log ({', '.join(_AUDIT_COLUMNS)}) VALUES (?, ?, ?, ?, ?, ?)"
"""The one statement that writes the audit log: nothing updates or deletes a row."""

_OUTCOME_COLUMNS = ("outcome_id", "session_id", "at_ns", "resolved", "score", "note", "source", "actor")
_SCORE_COLUMNS = ("session_id", "scorer", "version", "value", "passed", "weight", "reason", "scored_ns", "cost_usd",
                  "chosen_by")
_REVIEW_COLUMNS = ("session_id", "queued_by", "queued_ns", "verdict", "category", "note", "reviewer", "reviewed_ns")
REVIEW_VERDICTS = ("good", "bad")
QUEUED_BY = ("sample", "alert", "score", "hand")
"""Why a session is in the review queue (``ReviewRecord.queued_by``)."""

_EVAL_RUN_SQL = """
SELECT run_id, started_ns, ended_ns, dataset, dataset_sha256, agent, settings, trials, seed, case_tags, cases,
       passed_trials, total_trials, mean_score, cost_usd, wall_s,
       (SELECT list(label ORDER BY label) FROM eval_labels l WHERE l.run_id = r.run_id)
FROM eval_runs r
"""

_SUMMARY_SQL = """
SELECT session_id, agent, start_ns, (end_ns - start_ns) / 1e6, status, status_reason, content_mode, turns,
       llm_calls, llm_errors, tool_calls, tool_errors, input_tokens, output_tokens, cache_read_tokens,
       cache_write_tokens, cost_usd, unpriced_calls, parent_session_id
FROM sessions
"""
_TREE_DEPTH = 32
"""How deep ``session_tree`` follows parents and children: a cycle (ids reused by a sender) stops there."""
_TREE_SQL = f"""
WITH RECURSIVE edges AS MATERIALIZED (
    SELECT session_id, parent_session_id FROM sessions WHERE parent_session_id IS NOT NULL
), up(session_id, depth) AS (
    SELECT $sid, 0
    UNION ALL
    SELECT e.parent_session_id, up.depth + 1 FROM up JOIN edges e USING (session_id)
    WHERE up.depth < {_TREE_DEPTH} AND e.parent_session_id <> $sid
), root AS (
    SELECT up.session_id FROM up SEMI JOIN sessions s USING (session_id) ORDER BY up.depth DESC LIMIT 1
), down(session_id, depth, path) AS (
    SELECT session_id, 0, [session_id] FROM root
    UNION ALL
    SELECT e.session_id, d.depth + 1, list_append(d.path, e.session_id)
    FROM down d JOIN edges e ON e.parent_session_id = d.session_id
    WHERE d.depth < {_TREE_DEPTH} AND NOT list_contains(d.path, e.session_id)
)
SELECT s.session_id, s.parent_session_id, min(d.depth), s.agent, s.status, s.start_ns, s.llm_calls,
       s.input_tokens + s.output_tokens + s.cache_read_tokens + s.cache_write_tokens, s.cost_usd, s.unpriced_calls
FROM down d JOIN sessions s USING (session_id)
GROUP BY ALL ORDER BY s.start_ns
"""
"""The tree of sessions that ``$sid`` belongs to: up to its root, then down through every child.
The edges are read once (``MATERIALIZED``): on a lake ``sessions`` is a view that adds up deltas."""


def _day(ns: int) -> str:
    """A date for messages, in UTC."""
    return datetime.fromtimestamp(ns / 1e9, timezone.utc).strftime("%Y-%m-%d")


def check_outcome(resolved: bool | None, score: float | None) -> None:
    """What every way of recording an outcome checks (``Store.record_outcome``, ``Recorder.outcome``).

    Raises:
        ConfigError: neither is given, or the score is not a number from 0 to 1.
    """
    if resolved is None and score is None:
        raise ConfigError("an outcome needs resolved (true or false) or a score from 0 to 1; give one or both.")
    if score is not None and (isinstance(score, bool) or not isinstance(score, (int, float))
                              or not 0.0 <= score <= 1.0):
        raise ConfigError(f"an outcome's score must be a number from 0 to 1, got {score!r}.")


def default_db_path(db: str | os.PathLike[str] | None = None) -> str:
    """``db`` if given, else ``$FLIGHTREC_DB``, else ``./flightrec.duckdb``."""
    return os.fspath(db) if db else os.environ.get("FLIGHTREC_DB") or DEFAULT_DB


def store_exists(path: str) -> bool:
    """Whether a store is at ``path`` (a lake is taken to be: opening it says if not)."""
    return _lake.is_lake(path) or path == ":memory:" or Path(path).exists()


def _listing(command: str, path: str) -> str:
    """The ``flightrec`` command that lists what a store at ``path`` holds (``--db`` unless it is the default)."""
    return f"flightrec {command}" + ("" if path == DEFAULT_DB else f" --db {path}")


def _map_open_error(path: str, exc: duckdb.Error) -> StoreError:
    text = str(exc)
    lock = _LOCK_HOLDER.search(text)
    if lock or "Could not set lock" in text:
        served = find_holder(path, int(lock.group(2)) if lock else None)
        if served is not None:
            again = _listing("traces list", path)
            return StoreLockedError(
                f"the trace store {path} is held by `flightrec serve` (PID {served.pid}, {served.url}). Commands "
                f"that read it, and alert and label changes, go through that serve (`{again}` works now); this one "
                "needs the file itself: stop that serve (Ctrl-C where it runs), or use another file with --db / "
                "FLIGHTREC_DB.", holder=served)
        who = f"process {lock.group(2)} ({lock.group(1)})" if lock else "another process"
        if "read-only mode" in text:  # DuckDB's hint when the holder only reads: readers may share the file
            return StoreLockedError(
                f"the trace store {path} is open read-only in {who} (`flightrec dashboard` opens it so), which "
                "keeps writers out until it closes: stop that process, or use another file with --db / "
                "FLIGHTREC_DB. Commands that only read work beside it.")
        return StoreLockedError(
            f"the trace store {path} is open for writing in {who}. A DuckDB file has a single writer: "
            "wait for that process to finish, stop it, or use another file with --db / FLIGHTREC_DB. "
            "To collect from several processes at once, run `flightrec serve` and send OTLP to it."
        )
    if "created with an newer version of DuckDB" in text or "created with a newer version of DuckDB" in text:
        return StoreError(
            f"the trace store {path} was written by a newer DuckDB than this flightrec's "
            f"(duckdb {duckdb.__version__}), which cannot read it: flightrec[lake] pins the duckdb that DuckLake's "
            "extensions are built for. Open it from a venv without the lake extra; to import it into a lake, first "
            "write a copy this duckdb reads (README, Scale out: \"A file from a newer duckdb\").")
    if "not a valid DuckDB database" in text or "Invalid Input Error" in text:
        return StoreError(f"{path} is not a flightrec trace store (not a DuckDB file). Pass another path with --db.")
    return StoreError(f"cannot open the trace store {path}: {text.splitlines()[0]}. "
                      "Check that the directory exists and is writable, or pass another path with --db.")


def _table(columns: tuple[str, ...], rows: list[tuple[Any, ...]], types: list[pa.DataType] | None = None,
           ) -> pa.Table:
    if types is None:
        return pa.Table.from_arrays([pa.array(col) for col in zip(*rows)], names=list(columns))
    return pa.Table.from_arrays([_column(col, t) for col, t in zip(zip(*rows), types)], names=list(columns))


def _without(batch: Batch, stored: set[tuple[str, str]]) -> Batch:
    """``batch`` less the spans in ``stored`` and all but the first of a span given twice, with the
    rows derived from them; its sessions' sums are counted again from the rows kept, in the order
    the ingestor added them (so that a cost sums to the same float)."""
    kept = Batch(content=batch.content, chain=batch.chain, merges=batch.merges, outcomes=batch.outcomes)
    kept.spans = _first(batch.spans, stored, 0, 1)
    kept.llm_calls = _first(batch.llm_calls, stored, 1, 0)
    kept.tool_calls = _first(batch.tool_calls, stored, 1, 0)
    kept.turns = _first(batch.turns, stored, 2, 3)
    live = {r[3] for r in kept.spans}
    # A session whose spans were all stored before gets no row: one stored under its trace id and
    # since merged into a named session must not come back.
    sessions = kept.sessions = {k: dataclasses.replace(d, cost_usd=0.0, sums=dict.fromkeys(_SESSION_SUMS, 0))
                                for k, d in batch.sessions.items() if k in live}
    for row in kept.llm_calls:
        d = sessions[row[_LLM["session_id"]]]
        s = d.sums
        ok = row[_LLM["status"]] != "error"
        s["llm_calls"] += 1
        s["llm_errors"] += not ok
        for c in ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens"):
            s[c] += row[_LLM[c]] or 0
        if row[_LLM["cost_usd"]] is not None:
            d.cost_usd += row[_LLM["cost_usd"]]
        elif ok:
            s["unpriced_calls"] += 1
    for row in kept.tool_calls:
        s = sessions[row[2]].sums
        s["tool_calls"] += 1
        s["tool_errors"] += row[8] == "error"
    for row in kept.turns:
        sessions[row[0]].sums["turns"] += 1
    return kept


def _marks(marks: SessionMarks | None) -> tuple[Any, ...]:
    """A session row's origin, its ids, route, tags and parent, in ``_SESSION_COLUMNS`` order (NULL: not known yet)."""
    if marks is None:
        return (None,) * 7
    return (marks.origin, marks.eval_run_id, marks.eval_case_id, marks.source_session_id, marks.route, marks.tags,
            marks.parent_session_id)


def _first(rows: list[tuple[Any, ...]], stored: set[tuple[str, str]], trace: int, span: int,
           ) -> list[tuple[Any, ...]]:
    """The rows of spans not in ``stored``, each span's first only."""
    seen = set(stored)
    kept: list[tuple[Any, ...]] = []
    for row in rows:
        key = (row[trace], row[span])
        if key not in seen:
            seen.add(key)
            kept.append(row)
    return kept


def _over(con: duckdb.DuckDBPyConnection, table: pa.Table, sql: str,
          params: dict[str, Any] | None = None) -> duckdb.DuckDBPyConnection:
    """Runs ``sql``, which reads ``table`` as ``_batch``.

    DuckDB finds the table by its variable's name in this frame (a replacement scan): registering
    it as a view and dropping that costs a commit ~0.8 ms a table more (benchmarks/RESULTS.md §62).
    """
    _batch = table  # noqa: F841 - read by the SQL, through DuckDB's replacement scan
    return con.execute(sql, params)


def _time_ranges(ns: list[int]) -> list[tuple[int, int]]:
    """The ranges that hold every time of ``ns`` (not empty), split at its gaps wider than
    ``_RANGE_GAP_NS``, at most ``_MOST_RANGES`` of them (the widest gaps split first): a batch's
    spans mostly ended in the last moment, but some come late (a process's spill file sent at its
    next start, a client's retries after an outage), and one range would read everything between."""
    lo, hi = min(ns), max(ns)
    if hi - lo <= _RANGE_GAP_NS:  # the usual batch: every span of the last moment
        return [(lo, hi)]
    times = sorted(set(ns))
    gaps = [i for i in range(1, len(times)) if times[i] - times[i - 1] > _RANGE_GAP_NS]
    cuts = sorted(sorted(gaps, key=lambda i: times[i] - times[i - 1])[-(_MOST_RANGES - 1):]) if gaps else []
    bounds = [0, *cuts, len(times)]
    return [(times[a], times[b - 1]) for a, b in zip(bounds, bounds[1:])]


def _column(values: tuple[Any, ...], type_: pa.DataType) -> pa.Array:
    # Given its column's type, pyarrow converts without inferring one first, in about half the time.
    try:
        return pa.array(values, type=type_)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        # A value of another type (a turn index sent as a string by other instrumentation): DuckDB
        # casts it on insert, as it did before columns were typed.
        return pa.array(values)


_INSERTS = (
    ("spans", "INSERT INTO spans SELECT * FROM _batch"),
    # Named: columns the ingest never fills (content_pruned_ns, written by retention) stay NULL.
    ("llm_calls", f"INSERT INTO llm_calls ({', '.join(_COLUMNS['llm_calls'])}) SELECT * FROM _batch"),
    # The outcome key is computed here, in DuckDB's vectorised regular expressions (see tracer._loops).
    ("tool_calls", "INSERT INTO tool_calls SELECT *, "
                   f"{outcome_key_sql('result', 'error_type', 'error_message', 'status')} FROM _batch"),
    ("turns", "INSERT INTO turns SELECT * FROM _batch"),
    ("content", "INSERT OR IGNORE INTO content SELECT * FROM _batch"),
    ("chain", "INSERT OR IGNORE INTO message_chain SELECT * FROM _batch"),
    # Without OR IGNORE, so that a lake (no keys) runs the same statement: a retried span's outcome is stored once.
    ("outcomes", "INSERT INTO session_outcomes SELECT * FROM _batch ANTI JOIN session_outcomes "
                 "USING (outcome_id)"),
)
"""What ``write`` runs for each table of a batch, in this order."""
_KEYED_INSERTS = ("content", "chain", "sessions", "outcomes")
"""The tables of a batch whose rows a primary key indexes (``_KEY_BYTES``)."""
_LAKE_INSERTS = (
    *((name, sql) for name, sql in _INSERTS if name not in ("content", "chain", "outcomes")),
    # Content-addressed rows are appended: another collector may have stored one too, and the views
    # (``_lake.py``) show each once. Each collector's ingest sends a body only once while it remembers it.
    ("content", f"INSERT INTO {_lake.TABLES['content']} SELECT * FROM _batch"),
    ("chain", f"INSERT INTO {_lake.TABLES['message_chain']} SELECT * FROM _batch"),
    *((name, sql) for name, sql in _INSERTS if name == "outcomes"),
)
"""What ``write`` runs on a lake."""
_LAKE_SESSION_INSERT = (f"INSERT INTO session_deltas ({', '.join(_SESSION_COLUMNS)}, committed_ns) "
                        "SELECT *, $now FROM _batch")
_LAKE_CLOSE_INACTIVE = f"""
INSERT INTO session_deltas (session_id, start_ns, end_ns, ended, status, status_reason,
    {', '.join(_SESSION_SUMS)}, cost_usd, committed_ns)
SELECT session_id, start_ns, end_ns, true, CASE WHEN (SELECT last(c.action ORDER BY c.start_ns) FROM llm_calls c
                        WHERE c.session_id = s.session_id) = 'final' THEN 'ok' ELSE 'incomplete' END,
    $reason, {', '.join('0' for _ in _SESSION_SUMS)}, 0, $now
FROM sessions s WHERE NOT ended AND end_ns < $before
"""
"""``_CLOSE_INACTIVE`` on a lake: a delta that ends the session, which the sessions view takes as its status."""
_LAKE_INACTIVE = "SELECT session_id FROM sessions WHERE NOT ended AND end_ns < $before"


def _failed(doing: str, exc: duckdb.Error) -> StoreError:
    """The error to raise for DuckDB's ``exc`` while ``doing`` ("writing to the trace store X"). A fatal one
    means DuckDB has invalidated the database: nothing more can be written through any handle of this
    process until the file is opened again (``StoreInvalidatedError``)."""
    if isinstance(exc, duckdb.FatalException):
        return StoreInvalidatedError(f"{doing} failed, and DuckDB has invalidated the store until it is opened "
                                     f"again: {exc}")
    return StoreError(f"{doing} failed: {exc}")


class Store:
    """A flightrec trace store in one DuckDB file.

    A writable store takes DuckDB's file lock for as long as it is open, so open it in one
    process only (the agent's, or ``flightrec serve``). Methods are safe to call from several
    threads of that process: a lock serialises them. Opening it for writing first stores the spans
    that killed recorders left in the spill beside it (``<db>.spill/``, see ``_spill.py``).
    """

    def __init__(self, path: str | os.PathLike[str] | None = None, *, read_only: bool = False) -> None:
        self.path = default_db_path(path)
        self.read_only = read_only
        self._lock = threading.RLock()
        self.lake = _lake.is_lake(self.path)
        """Whether the store is a lake (``_lake.py``): many processes write it, sessions are deltas."""
        self.shown = _lake.masked(self.path)
        """The path or URL, as messages may print it."""
        if self.lake:
            self._con = _lake.connect(self.path, read_only=read_only)
            try:
                _lake.migrate(self._con, self.shown, read_only=read_only)
            except BaseException:
                self._con.close()
                raise
            if not read_only:
                recover(self)  # what recorders killed on this machine spilled (``_spill.spill_dir``)
            return
        in_memory = self.path == ":memory:"
        if read_only and not store_exists(self.path):
            raise StoreError(
                f"no trace store at {self.path}. Record some sessions first (for example `make demo`), "
                "or point --db / FLIGHTREC_DB at an existing file."
            )
        try:
            self._con = duckdb.connect(self.path, read_only=read_only and not in_memory)
        except duckdb.Error as exc:
            raise _map_open_error(self.path, exc) from None
        try:
            # DuckDB draws a progress bar on stdout for a long statement (migration 10 reads the whole
            # store): into the output of whatever command opened the store, `--json` included.
            self._con.execute("SET enable_progress_bar = false")
            self._migrate()
        except BaseException:
            self._con.close()
            raise
        if not read_only and not in_memory:
            recover(self)  # the spans a killed recorder left in the spill beside the file; never raises

    # -- schema ------------------------------------------------------------------------------

    def _migrate(self) -> None:
        con = self._con
        # fetchall, not fetchone: a result left unread keeps its transaction open, and an open
        # transaction on any connection makes the writer's CHECKPOINT fail (serve's read API opens one).
        has_table = con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'schema_migrations'"
        ).fetchall()[0][0]
        applied = 0
        if has_table:
            applied = con.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchall()[0][0]
        if applied > LATEST:
            raise SchemaTooNewError(
                f"the trace store {self.path} has schema version {applied}, but this flightrec knows only up to "
                f"{LATEST}. Upgrade flightrec (pip install -U flightrec), or use another file with --db."
            )
        if applied == LATEST:
            return
        if self.read_only:
            raise StoreError(
                f"the trace store {self.path} needs schema migrations {applied + 1}..{LATEST}, and it is open "
                "read-only. Open it once for writing (run any recording with this --db), then retry."
            )
        if applied:  # said, since a migration may rewrite tables (12 does: about 5 s a million spans)
            log.warning("flightrec: upgrading the trace store %s from schema version %d to %d, once; a store of "
                        "millions of spans takes a while", self.path, applied, LATEST)
        try:
            con.execute("BEGIN")
            con.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations "
                "(version INTEGER PRIMARY KEY, name VARCHAR NOT NULL, applied_at TIMESTAMP NOT NULL)"
            )
            for m in MIGRATIONS:
                if m.version > applied:
                    con.execute(m.sql)
                    con.execute("INSERT INTO schema_migrations VALUES (?, ?, now())", [m.version, m.name])
            con.execute("COMMIT")
        except duckdb.Error as exc:
            _lake.rollback(con)
            raise StoreError(f"migrating the trace store {self.path} failed: {exc}") from None

    def schema_version(self) -> int:
        with self._lock:
            return self._con.execute("SELECT max(version) FROM schema_migrations").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._con.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing -----------------------------------------------------------------------------

    def defer_checkpoints(self, wal_size: str) -> None:
        """Lets the write-ahead log grow to ``wal_size`` (``"128MB"``) before DuckDB checkpoints it.

        A commit is durable either way (the log is synced); fewer, larger checkpoints cost less in
        all, and a restart after a crash replays about this much log at most.
        """
        with self._lock:
            self._con.execute(f"SET checkpoint_threshold = '{wal_size}'")

    def limit_memory(self, mb: int) -> None:
        """Bounds the memory DuckDB holds to ``mb`` megabytes, and what the primary keys' indexes take
        besides: rows committed but not yet checkpointed, cached blocks, and what queries work in. Past
        it, DuckDB spills to a directory beside the file (``<db>.tmp``, removed on close) instead of
        growing. The indexes cannot spill: DuckDB loads one whole on the first insert into its table, so
        they are counted apart and the bound grows with them as the store does (``key_bytes``). Held to
        ``mb`` alone, a store of about 350,000 realistic spans no longer took a commit within 48 MB
        (benchmarks/RESULTS.md §81). The setting is the database's: every handle this process has on the
        file gets it (``lend_memory`` lifts it for a while).
        """
        with _memory_bounds_lock:
            bound = _memory_bounds[self._key] = _MemoryBound(mb, self._counted_key_bytes())
            self._hold(bound)

    def key_bytes(self) -> int:
        """What the indexes of the store's primary keys take in memory once loaded, about: as ``limit_memory``
        counts them (0 on a lake, which has no keys)."""
        with _memory_bounds_lock:
            bound = _memory_bounds.get(self._key)
            return bound.keys if bound is not None else self._counted_key_bytes()

    def _counted_key_bytes(self) -> int:
        if self.lake:
            return 0
        with self._lock:
            tables = [t for t, in self._con.execute(
                "SELECT DISTINCT table_name FROM duckdb_constraints() WHERE constraint_type = 'PRIMARY KEY' "
                "AND database_name = current_database()").fetchall()]
            counts = " + ".join(f"(SELECT count(*) FROM {t})" for t in tables)
            rows = self._con.execute(f"SELECT {counts}").fetchone()[0]
        return int(rows) * _KEY_BYTES

    def _hold(self, bound: _MemoryBound) -> None:
        """Sets DuckDB's limit to ``bound.mb``, unless memory lent now covers it (the last lender sets
        it); under ``_memory_bounds_lock``."""
        if bound.lenders and bound.lent >= bound.mb:
            return
        self._set_memory(bound.mb)
        bound.lent, bound.shown = bound.mb, self._setting("memory_limit")

    def _hold_or_later(self, bound: _MemoryBound) -> None:
        """``_hold`` for a lower bound, which DuckDB cannot take while queries under way pin more than it:
        it keeps what it holds, and the next lender's leaving or checkpoint tries again."""
        try:
            self._hold(bound)
        except StoreError as exc:
            log.warning("flightrec: %s; DuckDB keeps %d MB until later", exc, bound.lent)

    def _keys_added(self, rows: int) -> None:
        """Raises the bound for ``rows`` rows just committed into keyed tables (an overcount, for
        rows an insert ignored or an update matched: the next checkpoint counts them again)."""
        with _memory_bounds_lock:
            bound = _memory_bounds.get(self._key)
            if bound is None or not rows:
                return
            before = bound.mb
            bound.keys += rows * _KEY_BYTES
            if bound.mb > before:
                self._hold(bound)

    @contextmanager
    def lend_memory(self, mb: int) -> Iterator[None]:
        """Lets DuckDB hold up to ``mb`` megabytes while inside, and the keys' indexes besides, if
        ``limit_memory`` holds the database to less: for work whose queries need more than the bound,
        such as the online detectors' run beside the collector's writes (benchmarks/RESULTS.md §75). The
        writer's rows share what is lent meanwhile. The bound is set back when the last lender leaves;
        if DuckDB cannot free enough then (it keeps what queries under way pin), the next lender's
        leaving tries again.

        Lending and ``checkpoint`` take turns: a checkpoint during which the memory was taken back
        wrote ~97 MB for a 23 MB log, and left the file up to 70% larger (§75).
        """
        with _memory_bounds_lock:
            bound = _memory_bounds.get(self._key)
            if bound is not None and not bound.lenders and self._setting("memory_limit") != bound.shown:
                del _memory_bounds[self._key]  # every handle closed, and the file opened again: unbounded
                bound = None
            if bound is not None:
                _memory_bounds_lock.wait_for(lambda: not bound.checkpointing)
                lent = bound.mb - bound.working + mb
                if lent > bound.lent:
                    self._set_memory(lent)
                    bound.lent = lent
                bound.lenders += 1
        try:
            yield
        finally:
            if bound is not None:
                with _memory_bounds_lock:
                    bound.lenders -= 1
                    if not bound.lenders and bound.lent > bound.mb:
                        self._hold_or_later(bound)

    @property
    def _key(self) -> str:
        """What DuckDB keys its database by within a process: handles on one file share settings; each
        in-memory one is a database of its own."""
        if self.path == ":memory:":
            return f":memory:{id(self)}"
        return self.path if self.lake else os.path.abspath(self.path)

    def _setting(self, name: str) -> Any:
        """A DuckDB setting's value (the database's, for most), as ``current_setting`` shows it."""
        with self._lock:
            return self._con.execute("SELECT current_setting(?)", [name]).fetchall()[0][0]

    def _set_memory(self, mb: int) -> None:
        with self._lock:
            try:
                self._con.execute(f"SET memory_limit = '{int(mb)}MB'")
            except duckdb.Error as exc:
                raise StoreError(f"setting the trace store {self.path}'s memory limit to {int(mb)} MB failed: "
                                 f"{exc}") from None

    def limit_threads(self, n: int) -> int:
        """Lets DuckDB run each statement of this store on at most ``n`` threads; returns the limit
        before. The setting is the database's: every other handle this process has on the same file
        (a dashboard's, say) gets it too, until it is set back."""
        with self._lock:
            try:
                before = self._setting("threads")
                self._con.execute(f"SET threads = {int(n)}")
            except duckdb.Error as exc:
                raise StoreError(f"setting the trace store {self.path}'s threads failed: {exc}") from None
        return int(before)

    _write_types: dict[str, list[pa.DataType]] | None = None
    """The Arrow type of each column ``_tables`` fills, read from the schema on first use."""

    def _tables(self, batch: Batch) -> dict[str, pa.Table]:
        """A batch's rows as the Arrow tables ``write`` inserts, by name in ``_INSERTS``."""
        types = self._write_types
        if types is None:
            with self._lock, self._con.cursor() as cursor:  # a cursor: the connection may hold a result
                if self.lake:
                    cursor.execute(f"USE {_lake.ALIAS}")  # a cursor starts in DuckDB's own database
                types = self._write_types = {
                    name: cursor.sql(f"SELECT {', '.join(columns)} FROM {name} LIMIT 0").to_arrow_table().schema.types
                    for name, columns in (*_COLUMNS.items(), ("sessions", _SESSION_COLUMNS),
                                          ("session_outcomes", _OUTCOME_COLUMNS))
                }
        tables: dict[str, pa.Table] = {}
        if batch.outcomes:
            tables["outcomes"] = _table(_OUTCOME_COLUMNS, batch.outcomes, types["session_outcomes"])
        if not batch.spans:
            return tables
        for name, columns in _COLUMNS.items():
            rows = getattr(batch, name)
            if rows:
                tables[name] = _table(columns, rows, types[name])
        string = pa.string()
        if batch.content:
            tables["content"] = pa.table({
                "hash": pa.array(list(batch.content), string),
                "kind": pa.array([k for k, _ in batch.content.values()], string),
                "body": pa.array([b for _, b in batch.content.values()], string),
            })
        if batch.chain:
            tables["chain"] = pa.table({
                "node": pa.array(list(batch.chain), string),
                "prev": pa.array([p for p, _, _ in batch.chain.values()], string),
                "message": pa.array([m for _, m, _ in batch.chain.values()], string),
                "session_id": pa.array([s for _, _, s in batch.chain.values()], string),
            })
        if batch.sessions:
            rows = [
                (d.session_id, d.trace_id, d.agent, d.start_ns, d.end_ns, d.ended,
                 d.status if d.ended else "running", d.status_reason, d.content_mode,
                 *(d.sums[c] for c in _SESSION_SUMS), d.cost_usd, *_marks(d.marks))
                for d in batch.sessions.values()
            ]
            tables["sessions"] = _table(_SESSION_COLUMNS, rows, types["sessions"])
        return tables

    def write(self, batch: Batch) -> None:
        """Commits one batch atomically: all of it lands, or none of it does.

        A span the store has already (a retried request) or that the batch gives twice is stored
        once, with its calls and turn, and counts once in its session's sums.

        Raises:
            UnstorableError: a value of the batch does not fit its column; nothing was written.
            StoreError: the write failed (disk full, read-only store …); nothing was written.
        """
        tables = self._tables(batch)
        if not tables:
            return
        con = self._con
        with self._lock:
            try:
                con.execute("BEGIN")
                # Checked inside the transaction, under the lock: nothing can store these spans meanwhile.
                stored = self._stored_spans(batch, tables["spans"]) if "spans" in tables else None
                if stored is not None:
                    batch = _without(batch, stored)
                    tables = self._tables(batch)
                for name, sql in _LAKE_INSERTS if self.lake else _INSERTS:
                    table = tables.get(name)
                    if table is not None:
                        _over(con, table, sql)
                if "sessions" in tables:
                    if self.lake:  # a lake adds the session's delta; the sessions view adds them up
                        _over(con, tables["sessions"], _LAKE_SESSION_INSERT, {"now": time.time_ns()})
                    else:
                        self._upsert_sessions(tables["sessions"])
                for old, new in batch.merges.items():
                    self._merge_session(old, new)
                con.execute("COMMIT")
            except BaseException as exc:
                # Whatever failed, the transaction must not stay open: every later write would fail.
                _lake.rollback(con)
                if isinstance(exc, (duckdb.DataError, duckdb.IntegrityError)):  # conversions, ranges, NOT NULL
                    raise UnstorableError(f"the trace store {self.path} cannot take these spans: {exc}") from None
                if isinstance(exc, duckdb.Error):
                    raise _failed(f"writing to the trace store {self.path}", exc) from None
                raise
            finally:
                # Set by _upsert_sessions, and kept by a rollback. An invalidated database refuses it too:
                # the error raised then says so.
                if "sessions" in tables and not self.lake:
                    with suppress(duckdb.Error):
                        con.execute("RESET dynamic_or_filter_threshold")
        if not self.lake:  # outside the store's lock, which lend_memory takes after the bounds' lock
            self._keys_added(sum(tables[n].num_rows for n in _KEYED_INSERTS if n in tables))

    def _upsert_sessions(self, sessions: pa.Table) -> None:
        """Adds the batch's session rows into the stored ones and inserts the rest (in the caller's transaction)."""
        con = self._con
        # The UPDATE's hash join passes the batch's ids down to the scan of ``sessions`` as a filter of
        # those ids only up to DuckDB's ``dynamic_or_filter_threshold`` (50); past it, only their least
        # and greatest, which prune nothing when ids are spread over the table (random conversation ids,
        # sessions keyed by their trace id): the UPDATE then read every stored session, 68.6 ms for 100 at
        # 1,000,000 stored, against 11.0 with the filter. Up to _SESSION_FILTER_IDS ids the filter costs no
        # more on a small store; 500 cost 4 ms more there, 2,000 20 ms (benchmarks/RESULTS.md §69).
        con.execute(f"SET dynamic_or_filter_threshold = {_SESSION_FILTER_IDS}")  # ``write`` resets it
        updated = pa.array([r[0] for r in _over(con, sessions, _SESSION_UPDATE).fetchall()], pa.string())
        new = sessions if not len(updated) else sessions.filter(
            pc.invert(pc.is_in(sessions.column("session_id"), value_set=updated)))
        if new.num_rows:
            _over(con, new, _SESSION_INSERT)

    def _stored_spans(self, batch: Batch, spans: pa.Table) -> set[tuple[str, str]] | None:
        """The (trace id, span id) of the batch's spans that the store has already, or ``None`` when
        there are none and no span comes twice in the batch (the usual case: nothing to drop)."""
        ranges = _time_ranges(spans.column("end_ns").to_pylist())
        where = " OR ".join(f"end_ns BETWEEN $lo{i} AND $hi{i}" for i in range(len(ranges)))
        params = {f"{bound}{i}": ns for i, r in enumerate(ranges) for bound, ns in zip(("lo", "hi"), r)}
        stored = {tuple(r) for r in _over(self._con, spans, _STORED_SPANS.format(ranges=where), params).fetchall()}
        if not stored and len({(r[0], r[1]) for r in batch.spans}) == len(batch.spans):
            return None
        return stored

    def _merge_session(self, old: str, new: str) -> None:
        """Moves the rows of session ``old`` into ``new`` (in the caller's transaction)."""
        con = self._con
        if self.lake:  # the deltas move too, and the sessions view adds them into the named session
            for table in (*_MERGED_TABLES, "sessions"):
                con.execute(f"UPDATE {_lake.TABLES.get(table, table)} SET session_id = $new WHERE session_id = $old",
                            {"old": old, "new": new})
            return
        for table in _MERGED_TABLES:
            con.execute(f"UPDATE {table} SET session_id = $new WHERE session_id = $old", {"old": old, "new": new})
        if con.execute("SELECT 1 FROM sessions WHERE session_id = $old", {"old": old}).fetchone() is None:
            return
        con.execute(_SESSION_MERGE, {"old": old, "new": new})
        con.execute("DELETE FROM sessions WHERE session_id = $old", {"old": old})

    def close_inactive(self, before_ns: int, reason: str) -> list[str]:
        """Ends the sessions still running whose last span ended before ``before_ns``; returns their ids.

        For sessions whose end never arrives (a producer that sends no root span, an agent that
        died): metrics and detectors look only at ended sessions. The status is ``ok`` when the
        last decision was a final answer and ``incomplete`` otherwise; ``reason`` says why it ended.
        """
        with self._lock:
            try:
                if self.lake:  # DuckLake has no RETURNING for an insert: the ids, then their deltas
                    con = self._con
                    con.execute("BEGIN")
                    rows = con.execute(_LAKE_INACTIVE, {"before": before_ns}).fetchall()
                    con.execute(_LAKE_CLOSE_INACTIVE, {"before": before_ns, "reason": reason, "now": time.time_ns()})
                    con.execute("COMMIT")
                else:
                    rows = self._con.execute(_CLOSE_INACTIVE, {"before": before_ns, "reason": reason}).fetchall()
            except duckdb.Error as exc:
                if self.lake:
                    _lake.rollback(self._con)
                raise _failed(f"writing to the trace store {self.path}", exc) from None
        return [r[0] for r in rows]

    # -- retention (_retention.py) ----------------------------------------------------------

    def prune_step(self, before_ns: int, *, content_only: bool = False, batch: int = PRUNE_BATCH) -> PruneResult:
        """Removes the oldest sessions whose last span ended before ``before_ns`` (with
        ``content_only``, their content alone, from those that still have it), at most ``batch``
        of them, in one transaction; returns what went. Call it again while the result says
        ``more``: a writer sharing the file commits between two steps.

        Raises:
            StoreError: the write failed; nothing was removed.
        """
        pending = "AND content_pruned_ns IS NULL" if content_only else ""
        result = self._retain(
            f"SELECT session_id FROM sessions WHERE end_ns < ? {pending} ORDER BY end_ns LIMIT ?", [before_ns, batch],
            content_only=content_only,
            why="this alert's evidence came from a session whose content retention removed" if content_only
            else "this alert's evidence came from a session that retention removed")
        return result.model_copy(update={"more": result.sessions >= batch})

    def delete_session(self, session_id: str) -> PruneResult:
        """Removes one session entirely (a person's data, on request) and what only it used; returns
        what went. Eval results that ran it stay, unlinked; see ``_retention.py`` for alerts.

        Raises:
            UnknownSessionError: no session has exactly this id (a prefix is not enough to delete).
            StoreError: the write failed; nothing was removed.
        """
        if not self._query("SELECT 1 FROM sessions WHERE session_id = ?", [session_id]):
            found = self._query("SELECT session_id FROM sessions WHERE starts_with(session_id, ?) LIMIT 2",
                                [session_id]) if session_id else []
            also = f" It is the start of session {found[0][0]}: pass the full id to delete that one." \
                if len(found) == 1 else ""
            raise UnknownSessionError(
                f"no session {session_id!r} in {self.path}.{also} Deleting takes a session's full id: list them with "
                f"`{_listing('traces list', self.path)}`.")
        return self._retain("SELECT ?", [session_id], content_only=False, forget_observations=True,
                            why="this alert's evidence came from a session deleted on request")

    def _retain(self, select: str, params: list[Any], *, content_only: bool, why: str,
                forget_observations: bool = False) -> PruneResult:
        con = self._con
        with self._lock:
            try:
                con.execute("BEGIN")
                ids = [r[0] for r in con.execute(select, params).fetchall()]
                result = remove_sessions(con, ids, content_only=content_only, now_ns=time.time_ns(), why=why,
                                         forget_observations=forget_observations,
                                         tables=_lake.TABLES if self.lake else None)
                con.execute("COMMIT")
            except BaseException as exc:
                _lake.rollback(con)
                if isinstance(exc, duckdb.Error):
                    raise StoreError(f"removing sessions from the trace store {self.path} failed: {exc}") from None
                raise
        return result

    # -- a lake's upkeep (_lake.py) ------------------------------------------------------------

    def _lake_only(self, what: str) -> None:
        if not self.lake:
            raise ConfigError(f"{what} is for a lake (--db ducklake:…), and {self.path} is a DuckDB file.")

    def maintain_lake(self, *, keep_snapshots_s: float = _lake.KEEP_SNAPSHOTS_S) -> _lake.Maintained:
        """One maintenance round (``_lake.maintain``): session deltas rolled up, duplicate content
        removed, small files merged, old snapshots expired and their files deleted.

        Raises:
            ConfigError: the store is a file, not a lake.
            StoreError: a step failed; what it changed was rolled back.
        """
        self._lake_only("maintenance")
        with self._lock:
            try:
                return _lake.maintain(self._con, now_ns=time.time_ns(), keep_snapshots_s=keep_snapshots_s)
            except duckdb.Error as exc:
                raise StoreError(f"maintaining the lake {self.shown} failed: {_lake.masked(str(exc))}. Nothing "
                                 "of the step that failed was changed; run it again.") from None

    def import_file(self, path: str, *, progress: Callable[[int, int], None] | None = None) -> _lake.Imported:
        """Copies the file store at ``path`` into this lake (``_lake.import_file``); run it again
        to resume, or to copy what the file gained since.

        Raises:
            ConfigError: this store is a file, not a lake.
            StoreError: the file is missing, held by a writer, or of another schema version.
        """
        self._lake_only("importing a file")
        with self._lock:
            try:
                return _lake.import_file(self._con, path, now_ns=time.time_ns(), progress=progress)
            except duckdb.Error as exc:
                raise StoreError(f"importing {path} into the lake {self.shown} failed: {_lake.masked(str(exc))}. "
                                 "What was committed stays; run it again to go on.") from None

    def checkpoint(self) -> bool:
        """Writes the log into the file (``CHECKPOINT``), so that the blocks removed rows held are
        free for new data; the file does not shrink (see ``_retention.compact``). Returns False
        when another connection's transaction is open (a read under way in serve), or memory is lent
        (``lend_memory``): DuckDB's next automatic checkpoint then frees them. A database held to a
        bound counts its keys anew after, for the rows removed and the rows an insert ignored (``limit_memory``).

        Raises:
            StoreError: the checkpoint failed otherwise (disk full …).
        """
        if self.lake:  # no log to write out; on a lake CHECKPOINT is `maintain`'s whole upkeep
            return True
        with _memory_bounds_lock:
            bound = _memory_bounds.get(self._key)
            if bound is not None:
                if bound.lenders:  # a run of reads under way, with memory lent (``lend_memory``)
                    return False
                bound.checkpointing = True
        try:
            with self._lock:
                try:
                    self._con.execute("CHECKPOINT")
                except duckdb.TransactionException:
                    return False
                except duckdb.Error as exc:
                    raise _failed(f"checkpointing the trace store {self.path}", exc) from None
        finally:
            if bound is not None:
                with _memory_bounds_lock:
                    bound.checkpointing = False
                    _memory_bounds_lock.notify_all()
        if bound is not None:  # the indexes are written out and unloaded: count their keys anew
            with _memory_bounds_lock:
                bound.keys = self._counted_key_bytes()
                self._hold_or_later(bound)
        return True

    # -- reading -----------------------------------------------------------------------------

    def _query(self, sql: str, params: list[Any] | dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                return self._con.execute(sql, params or []).fetchall()
            except duckdb.OutOfMemoryException as exc:
                raise StoreMemoryError(f"reading the trace store {self.path} failed: {exc}") from None
            except duckdb.Error as exc:
                raise StoreError(f"reading the trace store {self.path} failed: {exc}") from None

    @staticmethod
    def _summary(row: tuple[Any, ...]) -> SessionSummary:
        (sid, agent, start, dur, status, reason, mode, turns, calls, call_err, tools, tool_err,
         tin, tout, cread, cwrite, cost, unpriced, parent) = row
        return SessionSummary(
            session_id=sid, agent=agent, start_ns=start, duration_ms=dur, status=status, status_reason=reason,
            content_mode=mode, turns=turns, llm_calls=calls, llm_errors=call_err, tool_calls=tools,
            tool_errors=tool_err, input_tokens=tin, output_tokens=tout, cache_read_tokens=cread,
            cache_write_tokens=cwrite, cost_usd=None if unpriced else cost, cost_usd_known_part=cost,
            parent_session_id=parent,
        )

    def list_sessions(self, *, limit: int = 50, offset: int = 0, agent: str | None = None) -> list[SessionSummary]:
        """Sessions, newest first."""
        where, params = ("WHERE agent = ?", [agent]) if agent else ("", [])
        rows = self._query(f"{_SUMMARY_SQL} {where} ORDER BY start_ns DESC LIMIT ? OFFSET ?", [*params, limit, offset])
        return [self._summary(r) for r in rows]

    def count_sessions(self) -> int:
        return self._query("SELECT count(*) FROM sessions")[0][0]

    def get_session(self, session_id: str) -> SessionSummary:
        """One session's totals.

        Raises:
            UnknownSessionError: no session has this id (a unique prefix of 8+ characters also matches).
        """
        row = self._by_id_or_prefix(_SUMMARY_SQL, "session_id", session_id, shortest=8, error=UnknownSessionError,
                                    noun="session id")
        if row is None:
            raise UnknownSessionError(
                f"no session {session_id!r} in {self.path}. List the sessions with "
                f"`{_listing('traces list', self.path)}`.")
        return self._summary(row)

    def session_tree(self, session_id: str) -> SessionTree:
        """The tree of sessions ``session_id`` belongs to: its root (the session itself, or the ancestor
        it descends from through ``parent_session_id``), and every session under that root, each with
        its own cost and tokens and those of its descendants rolled up. A session that started no
        other and was started by none is a tree of one.

        Raises:
            UnknownSessionError: no such session (a unique prefix of 8+ characters also matches).
        """
        sid = self.get_session(session_id).session_id
        rows = self._query(_TREE_SQL, {"sid": sid})
        children: dict[str | None, list[tuple[Any, ...]]] = {}
        in_tree = {r[0] for r in rows}
        root = min(rows, key=lambda r: r[2])
        for r in rows:
            if r is not root:
                children.setdefault(r[1] if r[1] in in_tree else root[0], []).append(r)
        nodes: list[SessionNode] = []

        def visit(r: tuple[Any, ...], depth: int) -> tuple[int, float, bool]:
            """Adds ``r`` and its descendants; returns their tokens, known cost and whether all is priced."""
            at = len(nodes)
            nodes.append(None)  # type: ignore[arg-type]  # filled once the descendants are added up
            tokens, known, priced = r[7], r[8], not r[9]
            for child in children.get(r[0], ()):
                t, k, p = visit(child, depth + 1)
                tokens, known, priced = tokens + t, known + k, priced and p
            nodes[at] = SessionNode(
                session_id=r[0], parent_session_id=r[1], depth=depth, agent=r[3], status=r[4], start_ns=r[5],
                llm_calls=r[6], tokens=r[7], cost_usd=None if r[9] else r[8], cost_usd_known_part=r[8],
                subtree_tokens=tokens, subtree_cost_usd=known if priced else None, subtree_cost_usd_known_part=known)
            return tokens, known, priced

        visit(root, 0)
        return SessionTree(root_session_id=root[0], nodes=nodes)

    def _by_id_or_prefix(self, select: str, column: str, ref: str, *, shortest: int,
                         error: type[FlightrecError], noun: str) -> tuple[Any, ...] | None:
        """The row of ``select`` whose ``column`` is ``ref`` or, for a ``ref`` of ``shortest`` characters
        or more, the one row whose ``column`` starts with it; ``None`` when there is none.

        Raises:
            error: more than one row starts with ``ref`` (the message asks for more characters).
        """
        rows = self._query(f"{select} WHERE {column} = ?", [ref])
        if not rows and len(ref) >= shortest:
            rows = self._query(f"{select} WHERE starts_with({column}, ?) LIMIT 2", [ref])
            if len(rows) > 1:
                raise error(f"{noun} prefix {ref!r} is ambiguous; give more characters.")
        return rows[0] if rows else None

    def content(self, hashes: Iterable[str]) -> dict[str, Any]:
        """Stored content by hash, parsed from JSON."""
        wanted = list(dict.fromkeys(h for h in hashes if h))
        return {h: json.loads(b) for h, b in self._by_key("SELECT hash, body FROM content WHERE hash", wanted)}

    def _by_key(self, select: str, keys: list[str]) -> list[tuple[Any, ...]]:
        """Rows whose key is in ``keys``. A literal ``IN (?, ?, …)`` list lets DuckDB use the primary
        key's index (``IN (SELECT unnest(?))`` scans the table: 150 ms against 20 ms on a 1M-span store)."""
        rows: list[tuple[Any, ...]] = []
        for i in range(0, len(keys), _KEYS_PER_QUERY):
            chunk = keys[i:i + _KEYS_PER_QUERY]
            rows += self._query(f"{select} IN ({', '.join('?' * len(chunk))})", chunk)
        return rows

    def message_lists(self, tails: Iterable[str | None], *, session_id: str | None = None,
                      newest: int | None = None) -> dict[str, list[str] | None]:
        """The message hashes, oldest first, that each chain tail stands for.

        ``newest`` keeps only the last N of each. With ``session_id`` the session's own nodes are
        read in one query; nodes shared with earlier sessions are then fetched as needed. A chain
        with a node missing from the store maps to ``None``.
        """
        nodes: dict[str, tuple[str | None, str]] = {}
        if session_id is not None and newest is None:
            rows = self._query("SELECT node, prev, message FROM message_chain WHERE session_id = ?", [session_id])
            nodes = {n: (p, m) for n, p, m in rows}
        out: dict[str, list[str] | None] = {}
        cursors: dict[str, str] = {}
        for tail in tails:
            if tail:
                out[tail] = []
                cursors[tail] = tail
        while cursors:
            missing = list({n for n in cursors.values() if n not in nodes})
            if missing:
                rows = self._by_key("SELECT node, prev, message FROM message_chain WHERE node", missing)
                nodes.update({n: (p, m) for n, p, m in rows})
            for tail, node in list(cursors.items()):
                found = out[tail]
                assert found is not None
                cur: str | None = node
                while cur is not None and cur in nodes and (newest is None or len(found) < newest):
                    prev, msg = nodes[cur]
                    found.append(msg)
                    cur = prev
                if cur is not None and cur not in nodes and (newest is None or len(found) < newest):
                    if cur in missing:  # asked for and not there: the chain is broken
                        out[tail] = None
                        del cursors[tail]
                    else:
                        cursors[tail] = cur
                    continue
                found.reverse()
                del cursors[tail]
        return out

    def session_account(self, session_id: str) -> SessionAccount:
        """Every decision of a session, with what the model saw, chose and was told.

        Raises:
            UnknownSessionError: no such session.
        """
        summary = self.get_session(session_id)
        sid = summary.session_id
        calls = self._query(
            """SELECT span_id, turn_index, attempt, start_ns, (end_ns - start_ns) / 1e6, ttft_ms, status, error_type,
                   http_status, model, stop_reason, action, tools_available, tools_chosen, reasoning, input_tokens,
                   output_tokens, cache_read_tokens, cache_write_tokens, cost_usd, ctx_system_tokens,
                   ctx_tools_tokens, ctx_history_tokens, ctx_tool_results_tokens, ctx_retrieved_tokens, ctx_window,
                   ctx_utilisation, request_sha256, content_mode, response_body, messages_ref, message_count, betas
            FROM llm_calls WHERE session_id = ? ORDER BY start_ns""",
            [sid],
        )
        tools = self._query(
            """SELECT span_id, turn_index, tool_name, tool_call_id, status, error_type, error_message, arguments,
                      result, (end_ns - start_ns) / 1e6, idempotency_key, retries, circuit_state, start_ns
               FROM tool_calls WHERE session_id = ? ORDER BY start_ns""",
            [sid],
        )
        turn_rows = self._query("SELECT turn_index, events FROM turns WHERE session_id = ? ORDER BY turn_index", [sid])
        newest = self.message_lists((c[30] for c in calls), newest=_NEWEST_MESSAGES)
        bodies = self.content(h for hashes in newest.values() for h in hashes or ())
        turns: dict[int, Turn] = {
            i: Turn(index=i, llm_calls=[], tool_calls=[], events=json.loads(ev) if ev else []) for i, ev in turn_rows
        }

        def turn(i: int | None) -> Turn:
            key = i or 0
            return turns.setdefault(key, Turn(index=key, llm_calls=[], tool_calls=[], events=[]))

        # An agent may work to a smaller window than its model's (the price table's), and says so on its
        # context events; its decisions are measured against that window, the one it compacts by.
        declared = {e["attributes"]["model"]: e["attributes"]["window"] for t in turns.values() for e in t.events
                    if e.get("name") in _CONTEXT_EVENTS and isinstance(e.get("attributes", {}).get("window"), int)
                    and e["attributes"].get("model")}

        for c in calls:
            window, utilisation = c[25], c[26]
            if c[9] in declared and declared[c[9]] != window:
                window = declared[c[9]]
                seen = [n for n in (c[15], c[17], c[18]) if n is not None]
                utilisation = sum(seen) / window if seen else None
            response = json.loads(c[29]) if c[29] else {}
            blocks = response.get("content") or []
            turn(c[1]).llm_calls.append(LlmCall(
                span_id=c[0], turn_index=c[1], attempt=c[2], start_ns=c[3], latency_ms=c[4], ttft_ms=c[5],
                status=c[6], error_type=c[7], http_status=c[8], model=c[9], stop_reason=c[10], action=c[11],
                tools_available=c[12] or [], tools_chosen=c[13] or [], reasoning=c[14], input_tokens=c[15],
                output_tokens=c[16], cache_read_tokens=c[17], cache_write_tokens=c[18], cost_usd=c[19],
                context_tokens={k: v for k, v in zip(("system", "tools", "history", "tool_results", "retrieved"),
                                                     c[20:25]) if v is not None},
                context_window=window, context_utilisation=utilisation, request_sha256=c[27], content_mode=c[28],
                output_text="\n".join(b.get("text", "") for b in blocks if b.get("type") == "text") or None,
                tool_uses=[{"id": b.get("id"), "name": b.get("name"), "input": b.get("input")}
                           for b in blocks if b.get("type") == "tool_use"],
                newest_messages=[bodies[h] for h in (newest.get(c[30]) or ()) if h in bodies], message_count=c[31],
                betas=c[32],
            ))
        for t in tools:
            turn(t[1]).tool_calls.append(ToolCallRecord(
                span_id=t[0], turn_index=t[1], tool_name=t[2], tool_call_id=t[3], status=t[4], error_type=t[5],
                error_message=t[6], arguments=t[7], result=t[8], latency_ms=t[9], idempotency_key=t[10],
                retries=t[11], circuit_state=t[12], start_ns=t[13],
            ))
        return SessionAccount(session=summary, turns=[turns[k] for k in sorted(turns)])

    def session_runs(self, session_id: str) -> list[AgentRun]:
        """The session's runs (root spans), oldest first.

        Raises:
            UnknownSessionError: no such session.
        """
        # A chat span is a root when its call was made outside a session: its call's row completes it.
        roots = f"""SELECT s.span_id, s.trace_id, s.start_ns, s.end_ns, s.status_code, s.status_message, s.attributes,
                           s.scope, l.span_id IS NOT NULL, {_chat.call_columns("l")}
                    FROM spans s LEFT JOIN llm_calls l ON l.span_id = s.span_id AND l.trace_id = s.trace_id
                    WHERE s.session_id = ? AND s.parent_span_id IS NULL ORDER BY s.start_ns"""
        sid, rows = session_id, self._query(roots, [session_id])
        if not rows:  # a prefix, or no such session: resolve (or raise) the usual way
            sid = self.get_session(session_id).session_id
            rows = self._query(roots, [sid])
        # One query for every tool and LLM call start, then a bisect per run: correlated subqueries
        # cost DuckDB 8 ms a session, and each query about 1 ms.
        starts = self._query(
            """SELECT start_ns, NULL FROM tool_calls WHERE session_id = ?
               UNION ALL SELECT start_ns, span_id FROM llm_calls WHERE session_id = ? ORDER BY start_ns""", [sid, sid])
        tool_starts = [t for t, span in starts if span is None]
        calls = [(t, span) for t, span in starts if span is not None]
        call_starts = [c[0] for c in calls]
        runs = []
        for r in rows:
            first = bisect.bisect_left(call_starts, r[2])
            runs.append(AgentRun(
                span_id=r[0], trace_id=r[1], start_ns=r[2], end_ns=r[3], status_code=r[4], status_message=r[5],
                attributes=_chat.read(r[7], r[6], r[9:] if r[8] else None),
                tool_calls_before_end=bisect.bisect_right(tool_starts, r[3]),
                first_call_span_id=calls[first][1] if first < len(calls) and calls[first][0] <= r[3] else None))
        return runs

    def call_outlines(self, session_id: str) -> list[CallOutline]:
        """Every LLM call attempt of a session in order, in brief (one query on ``llm_calls``).

        Raises:
            UnknownSessionError: no such session.
        """
        sql = """SELECT span_id, trace_id, turn_index, start_ns, status, model, action, stop_reason,
                      coalesce(input_tokens, 0) + coalesce(cache_read_tokens, 0) + coalesce(cache_write_tokens, 0),
                      coalesce(output_tokens, 0), cost_usd, (end_ns - start_ns) / 1e6, request_sha256, content_mode,
                      response_body, not_rebuildable, content_pruned_ns, http_status, error_type, betas
               FROM llm_calls WHERE session_id = ? ORDER BY start_ns"""
        rows = self._query(sql, [session_id])
        if not rows:  # a prefix, or no such session: resolve (or raise) the usual way
            rows = self._query(sql, [self.get_session(session_id).session_id])
        return [CallOutline(span_id=r[0], trace_id=r[1], turn_index=r[2], start_ns=r[3], status=r[4], model=r[5],
                            action=r[6], stop_reason=r[7], input_tokens=r[8], output_tokens=r[9], cost_usd=r[10],
                            latency_ms=r[11], request_sha256=r[12], content_mode=r[13],
                            response=json.loads(r[14]) if r[14] else None, not_rebuildable=r[15],
                            content_pruned_ns=r[16], http_status=r[17], error_type=r[18], betas=r[19] or None)
                for r in rows]

    # -- eval runs -----------------------------------------------------------------------------

    def save_eval_run(self, run: EvalRunRecord, results: Iterable[EvalResultRecord]) -> None:
        """Stores a finished eval run and its results atomically.

        Raises:
            StoreError: the write failed; nothing was written.
        """
        rows = [(r.run_id, r.case_id, r.trial, r.session_id, r.tags, r.passed, r.score, json.dumps(r.scores),
                 r.error, r.status, r.turns, r.cost_usd, r.latency_ms) for r in results]
        with self._lock:
            con = self._con
            try:
                con.execute("BEGIN")
                con.execute(
                    "INSERT INTO eval_runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [run.run_id, run.started_ns, run.ended_ns, run.dataset, run.dataset_sha256, run.agent,
                     json.dumps(run.settings), run.trials, run.seed, run.case_tags, run.cases, run.passed_trials,
                     run.total_trials, run.mean_score, run.cost_usd, run.wall_s])
                if rows:
                    con.executemany("INSERT INTO eval_results VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
                con.execute("COMMIT")
            except duckdb.Error as exc:
                _lake.rollback(con)
                raise StoreError(f"storing eval run {run.run_id} in {self.path} failed: {exc}") from None

    def label_eval_run(self, run_id: str, label: str, *, actor: str | None = None, via: AuditVia = "api") -> None:
        """Points ``label`` (``baseline`` …) at a run, moving it off any other run, and records who did
        it in the audit log (``actor`` None: ``tracer._audit.actor_name()``), in one transaction.

        Raises:
            ConfigError: a blank ``actor``.
            StoreError: the write failed; nothing was written.
        """
        with self._lock:
            was = self._query("SELECT run_id FROM eval_labels WHERE label = ?", [label])
            entry = audit_entry(actor, "label", run_id, {"label": label, "moved_from": was[0][0] if was else None},
                                via)
            # Two statements, not INSERT OR REPLACE: a lake has no keys to replace by.
            self._audited(entry, ("DELETE FROM eval_labels WHERE label = ?", [label]),
                          ("INSERT INTO eval_labels VALUES (?, ?, ?)", [label, run_id, entry.at_ns]))

    def eval_runs(self, *, limit: int = 50) -> list[EvalRunRecord]:
        """Eval runs, newest first."""
        return [self._eval_run(r) for r in self._query(f"{_EVAL_RUN_SQL} ORDER BY started_ns DESC LIMIT ?", [limit])]

    def find_eval_run(self, ref: str) -> EvalRunRecord:
        """The run a label, a run id or a unique prefix (8+ characters) names.

        Raises:
            UnknownEvalRunError: nothing matches, or the prefix is ambiguous.
        """
        rows = self._query(f"{_EVAL_RUN_SQL} WHERE run_id = (SELECT run_id FROM eval_labels WHERE label = ?)", [ref])
        row = rows[0] if rows else self._by_id_or_prefix(_EVAL_RUN_SQL, "run_id", ref, shortest=8,
                                                         error=UnknownEvalRunError, noun="eval run")
        if row is None:
            raise UnknownEvalRunError(
                f"no eval run or label {ref!r} in {self.path}. List the runs with "
                f"`{_listing('eval list', self.path)}`.")
        return self._eval_run(row)

    def eval_results(self, run_id: str) -> list[EvalResultRecord]:
        """A run's results, by case and trial."""
        rows = self._query(
            """SELECT run_id, case_id, trial, session_id, tags, passed, score, scores, error, status, turns, cost_usd,
                      latency_ms FROM eval_results WHERE run_id = ? ORDER BY case_id, trial""", [run_id])
        return [EvalResultRecord(run_id=r[0], case_id=r[1], trial=r[2], session_id=r[3], tags=r[4], passed=r[5],
                                 score=r[6], scores=json.loads(r[7]), error=r[8], status=r[9], turns=r[10],
                                 cost_usd=r[11], latency_ms=r[12]) for r in rows]

    @staticmethod
    def _eval_run(r: tuple[Any, ...]) -> EvalRunRecord:
        return EvalRunRecord(run_id=r[0], started_ns=r[1], ended_ns=r[2], dataset=r[3], dataset_sha256=r[4],
                             agent=r[5], settings=json.loads(r[6]), trials=r[7], seed=r[8], case_tags=r[9],
                             cases=r[10], passed_trials=r[11], total_trials=r[12], mean_score=r[13], cost_usd=r[14],
                             wall_s=r[15], labels=r[16] or [])

    @contextmanager
    def _transaction(self, what: str, **tables: pa.Table) -> Iterator[duckdb.DuckDBPyConnection]:
        """One write transaction over ``tables`` registered under their names: committed when the
        body ends, rolled back and raised as a ``StoreError`` naming ``what`` when a statement fails."""
        with self._lock:
            con = self._con
            try:
                con.execute("BEGIN")
                for name, table in tables.items():
                    con.register(name, table)
                yield con
                con.execute("COMMIT")
            except duckdb.Error as exc:
                _lake.rollback(con)
                raise StoreError(f"{what} in {self.path} failed: {exc}") from None
            finally:
                for name in tables:
                    con.unregister(name)

    # -- alerts ----------------------------------------------------------------------------------

    def record_alerts(self, observed: Iterable[tuple[AlertRecord, str]]) -> list[AlertRecord]:
        """Folds observations into the stored alerts; returns the alerts that are new or seen again.

        Each item is an alert as one observation shows it (count 1) and the observation's key (a
        session id, a window). An observation already recorded changes nothing, so re-running a
        detector over the same history is idempotent. A new one raises its alert's count and
        last-seen time, takes over its title and evidence if it is the latest, and reopens it if it
        was resolved.

        Raises:
            StoreError: the write failed; nothing was written.
        """
        fresh: dict[tuple[str, str], AlertRecord] = {}
        for alert, key in observed:
            fresh.setdefault((alert.fingerprint, key), alert)
        if not fresh:
            return []
        fps = list({fp for fp, _ in fresh})
        seen = {(fp, k) for fp, k in self._by_key(
            "SELECT fingerprint, observation FROM alert_observations WHERE fingerprint", fps)}
        new = {fk: a for fk, a in fresh.items() if fk not in seen}
        if not new:
            return []
        current = {r[0]: self._alert(r) for r in self._by_key(f"{_ALERT_SQL} WHERE fingerprint", fps)}
        changed: dict[str, AlertRecord] = {}
        for (fp, _), obs in sorted(new.items(), key=lambda item: item[1].last_seen_ns):
            was = changed.get(fp) or current.get(fp)
            if was is None:
                changed[fp] = obs.model_copy(update={"count": 1, "session_ids": obs.session_ids[-_ALERT_SESSIONS:]})
                continue
            latest = obs if obs.last_seen_ns >= was.last_seen_ns else was
            changed[fp] = latest.model_copy(update={
                "alert_id": was.alert_id, "count": was.count + 1,
                "first_seen_ns": min(was.first_seen_ns, obs.first_seen_ns),
                "last_seen_ns": max(was.last_seen_ns, obs.last_seen_ns),
                "session_ids": [s for s in dict.fromkeys([*was.session_ids, *obs.session_ids])][-_ALERT_SESSIONS:],
                "status": "open" if was.status == "resolved" else was.status,
            })
        rows = [(a.fingerprint, a.alert_id, a.detector, a.family, a.severity, a.title, a.agent, a.route, a.session_id,
                 a.turns, a.session_ids, json.dumps(a.evidence, default=str), a.status, a.first_seen_ns, a.last_seen_ns,
                 a.count) for a in changed.values()]
        obs_rows = [(fp, key, a.last_seen_ns) for (fp, key), a in new.items()]
        with self._transaction("storing alerts", _alert_rows=_table(_ALERT_COLUMNS, rows),
                               _alert_obs=_table(("fingerprint", "observation", "seen_ns"), obs_rows)) as con:
            # Without INSERT OR REPLACE / OR IGNORE: a lake has no keys (the file store's keep these unique).
            con.execute("DELETE FROM alerts WHERE fingerprint IN (SELECT fingerprint FROM _alert_rows)")
            con.execute("INSERT INTO alerts SELECT * FROM _alert_rows")
            con.execute("INSERT INTO alert_observations SELECT * FROM _alert_obs o "
                        "ANTI JOIN alert_observations a USING (fingerprint, observation)")
        return list(changed.values())

    def alerts(self, *, status: str | None = None, severity: str | None = None, session_id: str | None = None,
               limit: int = 100) -> list[AlertRecord]:
        """Alerts, most recently seen first; ``session_id`` keeps those seen in that session."""
        where, params = [], []
        if status:
            where.append("status = ?")
            params.append(status)
        if severity:
            where.append("severity = ?")
            params.append(severity)
        if session_id:
            where.append("list_contains(session_ids, ?)")
            params.append(session_id)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = self._query(f"{_ALERT_SQL} {clause} ORDER BY last_seen_ns DESC LIMIT ?", [*params, limit])
        return [self._alert(r) for r in rows]

    def get_alert(self, alert_id: str) -> AlertRecord:
        """One alert by id (a unique prefix of 4+ characters works).

        Raises:
            UnknownAlertError: none matches, or the prefix is ambiguous.
        """
        row = self._by_id_or_prefix(_ALERT_SQL, "alert_id", alert_id, shortest=4, error=UnknownAlertError,
                                    noun="alert id")
        if row is None:
            raise UnknownAlertError(
                f"no alert {alert_id!r} in {self.path}. List them with `{_listing('alerts list', self.path)}`.")
        return self._alert(row)

    def set_alert_status(self, alert_id: str, status: str, *, actor: str | None = None, via: AuditVia = "api",
                         ) -> AlertRecord:
        """Acknowledges, resolves or reopens an alert (``status`` ``acknowledged``, ``resolved`` or
        ``open``), and records who did it in the audit log (``actor`` None:
        ``tracer._audit.actor_name()``), in one transaction.

        Raises:
            UnknownAlertError: no such alert.
            ConfigError: another status, or a blank ``actor``.
            StoreError: the write failed; nothing was written.
        """
        action = ALERT_ACTIONS.get(status)
        if action is None:
            raise ConfigError(f"an alert's status is one of {', '.join(ALERT_ACTIONS)}, not {status!r}.")
        alert = self.get_alert(alert_id)
        entry = audit_entry(actor, action, alert.alert_id, {"status": status, "was": alert.status}, via)
        self._audited(entry, ("UPDATE alerts SET status = ? WHERE fingerprint = ?", [status, alert.fingerprint]))
        return alert.model_copy(update={"status": status})

    @staticmethod
    def _alert(r: tuple[Any, ...]) -> AlertRecord:
        return AlertRecord(fingerprint=r[0], alert_id=r[1], detector=r[2], family=r[3], severity=r[4], title=r[5],
                           agent=r[6], route=r[7], session_id=r[8], turns=r[9], session_ids=r[10],
                           evidence=json.loads(r[11]), status=r[12], first_seen_ns=r[13], last_seen_ns=r[14],
                           count=r[15])

    # -- after deploy: online scores, outcomes, reviews -------------------------------------------

    def record_scores(self, scores: Iterable[SessionScore]) -> None:
        """Stores online scores (``evals.OnlineScorer``), of any number of sessions, in one transaction; each
        replaces the session's earlier score of the same scorer.

        Raises:
            StoreError: the write failed; nothing was written.
        """
        rows = [tuple(getattr(sc, c) for c in _SCORE_COLUMNS) for sc in scores]
        if not rows:
            return
        with self._transaction("storing online scores", _score_rows=_table(_SCORE_COLUMNS, rows)) as con:
            # Two statements, not INSERT OR REPLACE: a lake has no keys to replace by.
            con.execute("DELETE FROM session_scores WHERE (session_id, scorer) IN "
                        "(SELECT (session_id, scorer) FROM _score_rows)")
            con.execute("INSERT INTO session_scores SELECT * FROM _score_rows")

    def session_scores(self, session_id: str) -> list[SessionScore]:
        """A session's online scores, by scorer."""
        rows = self._query(f"SELECT {', '.join(_SCORE_COLUMNS)} FROM session_scores WHERE session_id = ? "
                           "ORDER BY scorer", [session_id])
        return [SessionScore(**dict(zip(_SCORE_COLUMNS, r))) for r in rows]

    def record_outcome(self, session_id: str, *, resolved: bool | None = None, score: float | None = None,
                       note: str | None = None, actor: str | None = None, via: AuditVia = "api") -> OutcomeRecord:
        """Records what became of a session after the fact, and who said so in the audit log, in one
        transaction. The newest outcome of a session is its outcome.

        Args:
            session_id: The session, or a unique prefix of 8+ characters.
            resolved: Whether the customer's problem was solved.
            score: A rating from 0 to 1.
            note: Free text (why, a ticket id).
            actor: Who (``None``: ``tracer.actor_name()``).
            via: ``cli``, ``dashboard`` or ``api``.

        Raises:
            ConfigError: neither ``resolved`` nor ``score`` was given, or the score is outside 0..1.
            UnknownSessionError: no such session.
            StoreError: the write failed.
        """
        check_outcome(resolved, score)
        sid = self.get_session(session_id).session_id
        entry = audit_entry(actor, "outcome", sid, {"resolved": resolved, "score": score}, via)
        record = OutcomeRecord(outcome_id=f"{via}-{entry.at_ns:x}-{os.urandom(4).hex()}", session_id=sid,
                               at_ns=entry.at_ns, resolved=resolved, score=score, note=note, source=via,
                               actor=entry.actor)
        self._audited(entry, (f"INSERT INTO session_outcomes VALUES ({', '.join('?' for _ in _OUTCOME_COLUMNS)})",
                              [getattr(record, c) for c in _OUTCOME_COLUMNS]))
        return record

    def outcomes(self, session_id: str) -> list[OutcomeRecord]:
        """Every outcome recorded for a session, newest first (the first is its outcome)."""
        rows = self._query(f"SELECT {', '.join(_OUTCOME_COLUMNS)} FROM session_outcomes WHERE session_id = ? "
                           "ORDER BY at_ns DESC", [session_id])
        return [OutcomeRecord(**dict(zip(_OUTCOME_COLUMNS, r))) for r in rows]

    def queue_reviews(self, session_ids: Iterable[str], queued_by: str) -> int:
        """Puts sessions in the review queue (those not in it, or reviewed, already); returns how many were added.

        Raises:
            ConfigError: ``queued_by`` is not one of ``QUEUED_BY``.
            StoreError: the write failed.
        """
        if queued_by not in QUEUED_BY:
            raise ConfigError(f"queued_by {queued_by!r} is not one of {', '.join(QUEUED_BY)}.")
        ids = list(dict.fromkeys(session_ids))
        if not ids:
            return 0
        queued = pa.table({"session_id": pa.array(ids, pa.string())})
        with self._transaction("queueing sessions for review", _queued=queued) as con:
            added = con.execute(
                "INSERT INTO reviews (session_id, queued_by, queued_ns) SELECT session_id, ?, ? FROM _queued "
                "ANTI JOIN reviews USING (session_id)", [queued_by, time.time_ns()]).fetchall()[0][0]
        return int(added)

    def review_session(self, session_id: str, verdict: str, *, category: str | None = None, note: str | None = None,
                       actor: str | None = None, via: AuditVia = "api") -> ReviewRecord:
        """Records a person's verdict on a session (it need not have been queued), with the audit entry, in
        one transaction. A second review replaces the first; both stay in the audit log.

        Raises:
            ConfigError: ``verdict`` is not ``good`` or ``bad``, or a blank ``actor``.
            UnknownSessionError: no such session.
            StoreError: the write failed.
        """
        if verdict not in REVIEW_VERDICTS:
            raise ConfigError(f"a review's verdict is good or bad, not {verdict!r}.")
        sid = self.get_session(session_id).session_id
        was = self._query("SELECT queued_by, queued_ns FROM reviews WHERE session_id = ?", [sid])
        entry = audit_entry(actor, "review", sid, {"verdict": verdict, "category": category}, via)
        queued_by, queued_ns = was[0] if was else ("hand", entry.at_ns)
        record = ReviewRecord(session_id=sid, queued_by=queued_by, queued_ns=queued_ns, verdict=verdict,
                              category=category or None, note=note or None, reviewer=entry.actor,
                              reviewed_ns=entry.at_ns)
        self._audited(entry, ("DELETE FROM reviews WHERE session_id = ?", [sid]),
                      (f"INSERT INTO reviews VALUES ({', '.join('?' for _ in _REVIEW_COLUMNS)})",
                       [getattr(record, c) for c in _REVIEW_COLUMNS]))
        return record

    def reviews(self, *, pending: bool | None = None, limit: int = 200) -> list[ReviewRecord]:
        """The review queue: ``pending`` True those waiting (oldest first), False those reviewed (newest
        first), ``None`` all (newest first)."""
        # Sessions queued in one call share a time: the session id orders them, as on the Review page.
        where, order = {True: ("WHERE verdict IS NULL", "queued_ns, session_id"),
                        False: ("WHERE verdict IS NOT NULL", "reviewed_ns DESC, session_id")}.get(
            pending, ("", "coalesce(reviewed_ns, queued_ns) DESC, session_id"))  # type: ignore[arg-type]
        rows = self._query(f"SELECT {', '.join(_REVIEW_COLUMNS)} FROM reviews {where} ORDER BY {order} LIMIT ?",
                           [limit])
        return [ReviewRecord(**dict(zip(_REVIEW_COLUMNS, r))) for r in rows]

    # -- audit log -------------------------------------------------------------------------------

    def audit(self, actor: str | None, action: AuditAction, target: str, detail: dict[str, Any] | None = None, *,
              via: AuditVia = "api") -> AuditEntry:
        """Appends one entry to the audit log: ``actor`` did ``action`` to ``target``, now, through ``via``.

        For actions that are not a ``Store`` write of their own (replay, fork, export, prune, delete);
        ``set_alert_status`` and ``label_eval_run`` record theirs. ``detail`` holds ids and settings,
        never content: the log is never pruned. Through a running serve (``tracer.connect``), serve
        writes it on its own connection, like the other writes it makes for callers.

        Args:
            actor: Who (``--actor``); None is ``tracer._audit.actor_name()``.
            action: What was done.
            target: The id of the object it was done to (an alert, a session, an eval run, the store).
            detail: JSON-able ids and settings.
            via: ``cli``, ``dashboard`` or ``api``.

        Raises:
            ConfigError: an unknown action or interface, a blank actor, or no target.
            StoreError: the write failed.
        """
        entry = audit_entry(actor, action, target, detail, via)
        self._audited(entry)
        return entry

    def _audited(self, entry: AuditEntry, *changes: tuple[str, list[Any]]) -> None:
        """Runs ``changes`` (statements and their parameters: what a person changed) and appends ``entry``
        for it, in one transaction."""
        row = [entry.at_ns, entry.actor, entry.action, entry.target, entry.via, json.dumps(entry.detail, default=str)]
        with self._lock:
            con = self._con
            try:
                con.execute("BEGIN")
                for sql, params in changes:
                    con.execute(sql, params)
                con.execute(_AUDIT_INSERT, row)
                con.execute("COMMIT")
            except duckdb.Error as exc:
                _lake.rollback(con)
                raise StoreError(f"writing {entry.action} of {entry.target} to {self.path} failed: {exc}") from None

    def audit_entries(self, *, limit: int = 100, action: str | None = None) -> list[AuditEntry]:
        """Audit log entries, newest first; ``action`` keeps one kind."""
        where, params = ("WHERE action = ?", [action]) if action else ("", [])
        rows = self._query(f"SELECT {', '.join(_AUDIT_COLUMNS)} FROM audit_log {where} ORDER BY at_ns DESC LIMIT ?",
                           [*params, limit])
        return [AuditEntry(at_ns=r[0], actor=r[1], action=r[2], target=r[3], via=r[4], detail=json.loads(r[5]))
                for r in rows]

    def sql(self, query: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        """Runs a read query over the documented schema (docs/schema.md) and returns its rows.

        For analytics that belong in the database, such as the detectors; not for writing.

        Raises:
            StoreError: the query failed.
        """
        return self._query(query, params)

    def frame(self, query: str, params: list[Any] | None = None) -> pd.DataFrame:
        """Like ``sql``, as a pandas DataFrame with the query's column names (the dashboard's tables).

        Raises:
            StoreError: the query failed.
        """
        with self._lock:
            try:
                return self._con.execute(query, params or []).df()
            except duckdb.Error as exc:
                raise StoreError(f"reading the trace store {self.path} failed: {exc}") from None

    # -- exact rebuild -----------------------------------------------------------------------

    def _rebuild_rows(self, where: str, params: list[Any]) -> Iterator[tuple[tuple[Any, ...], dict[str, Any] | str]]:
        """Each matching call with its rebuilt body, or the reason it cannot be rebuilt; session by session."""
        rows = self._query(
            f"""SELECT span_id, session_id, content_mode, request_sha256, request_params, system_ref, messages_ref,
                       tool_refs, message_count, not_rebuildable, content_pruned_ns FROM llm_calls {where}
                ORDER BY session_id, start_ns""",
            params,
        )
        by_session: dict[str | None, list[tuple[Any, ...]]] = {}
        for r in rows:
            by_session.setdefault(r[1], []).append(r)
        for session_id, calls in by_session.items():
            chains = self.message_lists((r[6] for r in calls), session_id=session_id)
            bodies = self.content(
                h for r in calls
                for h in ([r[5]] if r[5] else []) + list(chains.get(r[6]) or []) + list(r[7] or [])
            )
            for r in calls:
                if r[10] is not None:
                    yield r, f"its content was pruned by retention on {_day(r[10])}"
                    continue
                if r[9] is not None:
                    yield r, f"its exact request is unknown: {r[9]}"
                    continue
                if r[4] is None:
                    yield r, f"content was not captured (content mode {r[2] or 'none'})"
                    continue
                messages = chains.get(r[6]) if r[6] else []
                refs = ([r[5]] if r[5] else []) + list(messages or []) + list(r[7] or [])
                missing = [h for h in refs if h not in bodies]
                if messages is None or missing:
                    yield r, "content referenced by this call is missing from the store"
                    continue
                body = json.loads(r[4])
                if r[5]:
                    body["system"] = bodies[r[5]]
                if r[8] is not None:  # a request that had a messages list, empty or not
                    body["messages"] = [bodies[h] for h in messages]
                if r[7] is not None:
                    body["tools"] = [bodies[h] for h in r[7]]
                yield r, body

    def call_parts(self, span_id: str) -> CallParts:
        """The recorded parts of one LLM call's request, content resolved (see ``CallParts``).

        Raises:
            NotRebuildableError: no LLM call with this span id.
        """
        rows = self._query(
            f"""SELECT s.scope, s.attributes, l.request_params, l.system_ref, l.messages_ref, l.message_count,
                      l.tool_refs, l.session_id, {_chat.call_columns("l")}
               FROM llm_calls l LEFT JOIN spans s ON s.span_id = l.span_id AND s.trace_id = l.trace_id
               WHERE l.span_id = ? LIMIT 1""", [span_id])
        if not rows:
            raise NotRebuildableError(f"no LLM call with span id {span_id!r} in {self.path}.")
        scope, raw, params, system_ref, messages_ref, count, tool_refs, session_id = rows[0][:8]
        chain: list[str] | None = []
        if messages_ref:
            chain = self.message_lists([messages_ref], session_id=session_id).get(messages_ref)
        refs = [*([system_ref] if system_ref else []), *(chain or []), *(tool_refs or [])]
        content = self.content(refs)
        attrs = _chat.read(scope, raw, rows[0][8:])
        return CallParts(
            scope=scope or "", attribute_keys=list(attrs) if isinstance(attrs, dict) else [],
            params=json.loads(params) if params else None,
            system=content.get(system_ref) if system_ref else None,
            messages=[content[h] for h in chain if h in content] if (messages_ref or count) and chain is not None
            else None,
            tools=[content[h] for h in tool_refs if h in content] if tool_refs is not None else None,
            content_missing=chain is None or any(h not in content for h in refs),
        )

    def rebuild_request(self, span_id: str) -> dict[str, Any]:
        """The exact request body of a stored LLM call, rebuilt from the store alone.

        Raises:
            NotRebuildableError: the call is unknown, or its content was not captured.
        """
        for _row, body in self._rebuild_rows("WHERE span_id = ?", [span_id]):
            if isinstance(body, str):
                raise NotRebuildableError(f"the call {span_id} cannot be rebuilt: {body}.")
            return body
        raise NotRebuildableError(f"no LLM call with span id {span_id!r} in {self.path}.")

    def verify_requests(self, session_id: str | None = None) -> VerifyResult:
        """Rebuilds every stored request (or one session's) and checks it against its recorded hash.

        Calls recorded by other instrumentation never had an exact request to check: they are
        listed in ``not_rebuildable`` with the reason, not counted as failures; nor are calls whose
        content retention removed, which are listed in ``pruned``.
        """
        where, params = ("WHERE session_id = ?", [session_id]) if session_id else ("", [])
        total = exact = 0
        failures: list[dict[str, str]] = []
        foreign: list[dict[str, str]] = []
        pruned: list[dict[str, str]] = []
        for row, body in self._rebuild_rows(where, params):
            total += 1
            if row[10] is not None:
                pruned.append({"span_id": row[0], "session_id": row[1] or "", "pruned_on": _day(row[10])})
                continue
            if row[9] is not None:
                foreign.append({"span_id": row[0], "session_id": row[1] or "", "reason": row[9]})
                continue
            if isinstance(body, str):
                reason = body
            elif sha256_hex(canonical_json(body)) == row[3]:
                exact += 1
                continue
            elif row[2] == "redacted":
                reason = "content was redacted at capture, so the rebuilt body differs by design"
            else:
                reason = "the rebuilt body's hash differs from the recorded one"
            failures.append({"span_id": row[0], "session_id": row[1] or "", "reason": reason})
        return VerifyResult(total=total, exact=exact, failures=failures, not_rebuildable=foreign, pruned=pruned)
