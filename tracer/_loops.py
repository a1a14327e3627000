"""What a tool-call loop is: the one definition, used by the in-process ``LoopGuard`` and by
``flightrec detect`` alike.

A loop is repetition without progress. Each tool call has

- an **identity**: the tool and its canonical arguments (key order, JSON whitespace, ``1`` against
  ``1.0`` and runs of spaces inside strings do not matter);
- a **shape**: the tool with its *identifying* argument values kept (ids, SKUs, e-mail addresses,
  names, and any argument whose key says it names a thing) and its *soft* values (free text,
  dates, counts, page sizes, flags) masked. Calls of one shape are about the same thing;
- an **outcome**: the result, or the error, after volatile fields are normalised away (UUIDs,
  timestamps and dates, clock times, epoch numbers, long hex strings, request and trace ids, and
  JSON fields such as ``request_id`` or ``updated_at``), so that a fresh request id does not look
  like news. A call whose result was not recorded (content mode ``none``) has no known outcome.

A call is **wasted** when the previous call of its shape had similar arguments (the same ones,
or soft values that differ only a little: a paraphrased query, a page size nudged, a date
shifted) and the same outcome: it told the agent nothing new. A **stall** is a stretch of
consecutive wasted calls. A stall is **followed by progress** when one of its calls, made
again later with the same arguments, got a different outcome: the job it polled finished, the
call it retried succeeded. (An agent that moves on to another query has given up, not progressed.)

The rules (``LoopRules``):

- a stall of ``repeat - 1`` wasted calls or more that is not followed by progress is a loop
  (``repeat`` identical answers to one call, or a cycle of calls going round unchanged);
- a stall followed by progress is waiting, not a loop, unless one call's identical answers ran
  past ``wait_polls`` (``retries`` when the answers were failures);
- one call asked more than ``repeat`` times with the same answer, other calls in between, is a
  loop too (under the same budgets when its answer then changes);
- a call made more than ``poll_budget`` times with the same arguments is a loop, whatever it
  returned (a poll with no end).

Distinct entities that share an answer (five parcels, each "delivered") are different shapes,
so they never waste a call. ``find_loops`` judges a finished sequence; ``LoopGuard`` asks, before
a call runs, whether it would be a loop even if it then made progress, since it cannot yet see
what comes after: it is the forgiving half of the same rules, and never stops a poll that the
batch detectors would let pass.

``VOLATILE_PATTERNS`` is applied by the detectors' SQL as well (DuckDB's ``regexp_replace``), to
find the sessions worth a look; the patterns are written in the syntax both engines share.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from ._canonical import canonical_json

LOOP_REPEAT = 4
LOOP_WAIT_POLLS = 10
LOOP_RETRIES = 5
LOOP_POLL_BUDGET = 50

VOLATILE_PATTERNS: tuple[tuple[str, str], ...] = (
    # JSON fields that change on every call by nature: ids of the request, not of the thing.
    (r'"(request_?id|requestId|req_?id|trace_?id|traceId|span_?id|correlation_?id|nonce|etag|e_tag|timestamp|ts|'
     r'time|now|created_at|updated_at|generated_at|fetched_at|checked_at|polled_at|server_time|as_of|'
     r'duration_ms|elapsed_ms|latency_ms|took_ms|took|x-request-id)"\s*:\s*("([^"\\]|\\.)*"|-?[0-9][0-9.eE+-]*)',
     r'"\1":"~"'),
    (r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}", "<uuid>"),
    (r"[0-9]{4}-[0-9]{2}-[0-9]{2}([T ][0-9]{2}:[0-9]{2}(:[0-9]{2}([.,][0-9]+)?)?(Z|[+-][0-9]{2}:?[0-9]{2})?)?",
     "<date>"),
    (r"\b[0-9]{1,2}:[0-9]{2}(:[0-9]{2})?\b", "<time>"),
    (r"\b(req|request|rid|trace|txn|msg|evt|run|corr)[_-][A-Za-z0-9]{6,}\b", "<rid>"),
    (r"\b[0-9a-fA-F]{16,}\b", "<hex>"),
    (r"\b1[0-9]{9}([0-9]{3})?([0-9]{3})?([0-9]{3})?\b", "<epoch>"),
)
"""(pattern, replacement) pairs that take volatile parts out of a result or error text; runs of
whitespace then become one space."""

_VOLATILE = [(re.compile(p, re.ASCII), r) for p, r in VOLATILE_PATTERNS]
_SPACE = "[ \t\n\r\f]+"
"""Runs of whitespace become one space (written out: RE2's and Python's ``\\s`` differ beyond ASCII)."""
_SPACES = re.compile(_SPACE)
_SQL_SPACE = "[ \t\n\r\f]*[\t\n\r\f][ \t\n\r\f]*|  [ \t\n\r\f]*"
"""The runs of ``_SPACE`` that are not already one space: replacing only these gives the same text.
Nearly every JSON result has single spaces, and matching them all (most likely RE2's slower
submatch engine at each match) made ``_SPACE`` cost five times this in DuckDB (benchmarks/RESULTS.md §24)."""
_MAX_TEXT = 65_536
"""Longer results are compared on their first 64 KiB plus their length: enough to tell them apart."""

_ID_KEY = re.compile(
    r"(^|[_\-.])(ids?|uuids?|skus?|codes?|numbers?|num|no|refs?|keys?|names?|emails?|users?|usernames?|accounts?|"
    r"customers?|orders?|parcels?|packages?|shipments?|tracking|tickets?|invoices?|cit(y|ies)|countr(y|ies)|"
    r"symbols?|tickers?|urls?|uris?|paths?|files?|filenames?|hosts?|address(es)?|phones?|jobs?|tasks?)$"
    r"|[a-z](Id|ID|Ids|IDs)$", re.IGNORECASE)
_POSITION_KEY = re.compile(r"(^|[_\-.])(cursor|page_?token|next_?token|continuation|offset|after|before|start_after|"
                           r"starting_after|ending_before|marker|since|until)$|[a-z](Cursor|Token)$",
                           re.IGNORECASE)
"""Keys of a position in a listing: an opaque cursor moves through one listing, it names nothing."""
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}([T ].*)?$")
_DATES = _VOLATILE[2][0]
_WORD = re.compile(r"[a-z0-9]+")
_YEAR = re.compile(r"(19|20)[0-9]{2}")
_NUMBER = re.compile(r"-?(0|[1-9][0-9]{0,14})(\.[0-9]+)?")
_STOP = frozenset("a an and are at be by can do for from how i in is it me my of on or our the to what when where "
                  "which who why with you your please".split())
_MASK = "\x00~"


def canonical_arguments(arguments: Any) -> str:
    """The identity of a call's arguments: canonical JSON, with numbers and whitespace normalised.

    ``arguments`` may be the parsed value or its JSON text (as stored); text that is not JSON is
    compared as text, with runs of whitespace collapsed.
    """
    return canonical_json(_normal(_parsed(arguments)))


def normalise_outcome(text: str | None) -> str | None:
    """A result or error text with its volatile parts replaced (see ``VOLATILE_PATTERNS``)."""
    if text is None:
        return None
    suffix = f"…{len(text)}" if len(text) > _MAX_TEXT else ""
    text = text[:_MAX_TEXT]
    for pattern, replacement in _VOLATILE:
        text = pattern.sub(replacement, text)
    return _SPACES.sub(" ", text).strip(" ") + suffix


def outcome_text(result: str | None, error: str | None) -> str | None:
    """What a call's answer is compared on: its normalised error, else its normalised result."""
    return "error " + (normalise_outcome(error) or "") if error is not None else normalise_outcome(result)


def outcome_key_sql(result: str, error_type: str, error_message: str, status: str) -> str:
    """A DuckDB expression over the given columns that equals ``outcome_key`` of the same call.

    The store computes the key this way as rows are inserted, in DuckDB's vectorised regular
    expressions, which are several times faster than Python's on this work.
    """
    def quoted(pattern: str) -> str:
        return "'" + pattern.replace("'", "''") + "'"

    def norm(text: str) -> str:
        head = f"left({text}, {_MAX_TEXT})"
        expr = head
        for pattern, replacement in VOLATILE_PATTERNS:
            expr = f"regexp_replace({expr}, {quoted(pattern)}, {quoted(replacement)}, 'g')"
        expr = f"regexp_replace({expr}, {quoted(_SQL_SPACE)}, ' ', 'g')"
        # A text that no pattern matches is its own normal form: one search of it instead of eight
        # rewrites. The search costs ~40% of the rewrites, so this pays while fewer than ~2 results in 3
        # hold a date, an id or the like (RESULTS §67).
        anything = "|".join(f"(?:{pattern})" for pattern, _ in VOLATILE_PATTERNS) + "|" + _SQL_SPACE
        expr = f"trim(CASE WHEN regexp_matches({head}, {quoted(anything)}) THEN {expr} ELSE {head} END, ' ')"
        return f"{expr} || CASE WHEN length({text}) > {_MAX_TEXT} THEN '…' || length({text}) ELSE '' END"

    failed = f"{status} <> 'ok'"
    # One expression over the error or the result, not one for each: DuckDB compiles every
    # regular expression of a statement, which cost the collector's commits ~2 ms more.
    text = (f"CASE WHEN {failed} THEN coalesce({error_type}, 'error') || ': ' || coalesce({error_message}, '') "
            f"ELSE {result} END")
    return f"md5(CASE WHEN {failed} THEN 'error ' ELSE '' END || {norm(text)})"


def outcome_key(result: str | None, error: str | None) -> str | None:
    """The hash of ``outcome_text``; ``None`` when the answer is unknown. ``error`` is
    ``"type: message"`` for a failed call."""
    text = outcome_text(result, error)
    return None if text is None else hashlib.md5(text.encode()).hexdigest()


def call_keys(tool: str, arguments: Any) -> tuple[str, str]:
    """A call's identity and shape, hashed: what the store keeps so that SQL can find repeats."""
    try:
        identity, shape, _ = _texts(tool, arguments)
    except (RecursionError, TypeError, ValueError):
        # Ingest must store any span: arguments too deep or too odd to canonicalise are their own text.
        identity = shape = f"{tool}\x00{arguments!r}"
    return hashlib.md5(identity.encode()).hexdigest(), hashlib.md5(shape.encode()).hexdigest()


def _parsed(arguments: Any) -> Any:
    if isinstance(arguments, str | bytes):
        try:
            return orjson.loads(arguments)
        except orjson.JSONDecodeError:
            return arguments if isinstance(arguments, str) else arguments.decode("utf-8", "replace")
    return arguments


def _normal(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _normal(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_normal(v) for v in value]
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**63:
        return int(value)
    if isinstance(value, str):
        text = " ".join(value.split())
        # A number sent as a string is the same number ("1196.72" and 1196.72); "0042" is not.
        return _normal(float(text)) if _NUMBER.fullmatch(text) else text
    return value


@functools.lru_cache(maxsize=4096)  # a session's calls use a few argument names over and over
def _key_role(key: str) -> bool | None:
    """``False`` for a key of a position in a listing, ``True`` for one that names a thing, else ``None``."""
    return False if _POSITION_KEY.search(key) else True if _ID_KEY.search(key) else None


def _identifying(key: str, value: Any) -> bool:
    """Whether a leaf names a thing (kept in the shape) rather than qualifying a request (masked)."""
    if isinstance(value, bool) or value is None:
        return False
    role = _key_role(key)
    if role is not None:
        return role
    if isinstance(value, str):
        if _DATE.match(value) or " " in value.strip():
            return False
        return "@" in value or (any(c.isdigit() for c in value) and len(value) >= 3)
    return False


def _shape(value: Any, key: str, soft: list[Any]) -> Any:
    if isinstance(value, dict):
        return {k: _shape(v, k, soft) for k, v in value.items()}
    if isinstance(value, list):
        return [_shape(v, key, soft) for v in value]
    if _identifying(key, value):
        return value
    soft.append(value)
    return _MASK


def _tokens(text: str) -> tuple[frozenset[str], frozenset[str]]:
    """A text's content words (plural 's' dropped) and, apart, its tokens that carry digits and may
    name a thing (an order number; a year only qualifies a query)."""
    words = _WORD.findall(_DATES.sub("date", text.lower()))
    plain = frozenset(s for w in words if not any(c.isdigit() for c in w) and w not in _STOP
                      if len(s := w.removesuffix("s")) > 1)
    return plain, frozenset(w for w in words if any(c.isdigit() for c in w) and not _YEAR.fullmatch(w))


def _similar(a: Any, b: Any) -> bool:
    """Two soft values that differ only a little: a nudged number, a shifted date, a paraphrase."""
    if a == b:
        return True
    if isinstance(a, bool) or isinstance(b, bool):
        return True
    if isinstance(a, int | float) and isinstance(b, int | float):
        lo, hi = sorted((abs(a), abs(b)))
        return abs(a - b) <= 2 or (lo > 0 and (a > 0) == (b > 0) and hi <= 2 * lo)
    if isinstance(a, str) and isinstance(b, str):
        if _DATE.match(a) and _DATE.match(b):
            return True
        (wa, da), (wb, db) = _tokens(a), _tokens(b)
        if da and db and da != db:  # "parcel 123" and "parcel 456" ask about different things
            return False
        if not wa or not wb:
            return wa == wb
        return len(wa & wb) / len(wa | wb) >= 1 / 3 or wa <= wb or wb <= wa
    return False


@dataclass(frozen=True)
class LoopCall:
    """One tool call as the loop rules see it."""

    tool: str
    arguments: Any = None
    """The arguments, parsed or as JSON text."""
    result: str | None = None
    """The result as text; ``None`` when unknown."""
    error: str | None = None
    """The error (type and message) when the call failed."""


@dataclass(frozen=True)
class LoopRules:
    """The thresholds of the loop rules (see the module docstring).

    Attributes:
        repeat: Answers that told the agent nothing new, in a row, that make a loop when no
            progress follows (``repeat - 1`` wasted calls after the first).
        wait_polls: Identical answers to one call that are still waiting when the answer then
            changes (a job polled until it finishes).
        retries: Identical failures that are still a retry when the call then succeeds.
        poll_budget: Calls with the same arguments per session, whatever they return.
    """

    repeat: int = LOOP_REPEAT
    wait_polls: int = LOOP_WAIT_POLLS
    retries: int = LOOP_RETRIES
    poll_budget: int = LOOP_POLL_BUDGET


LoopKind = Literal["repeat", "failure", "near", "cycle", "polling"]


@dataclass(frozen=True)
class Loop:
    """One loop in a sequence of tool calls."""

    kind: LoopKind
    """``repeat``: one call, the same answer; ``failure``: one call, the same error; ``near``:
    near-identical calls, the same answer; ``cycle``: several calls going round; ``polling``: one
    call made more than the polling budget allows."""
    calls: tuple[int, ...]
    """Positions (0-based) of the calls in the loop, the first informative one included."""
    tools: tuple[str, ...]
    """The tools in the loop, in order of first appearance."""
    wasted: int
    """Calls in it that told the agent nothing new."""
    repeats: int
    """The most identical answers one call got in it."""
    progressed: bool
    """An answer changed afterwards (the loop ran past a waiting budget)."""
    reason: str
    """One line for a person."""


def _texts(tool: str, arguments: Any) -> tuple[str, str, list[Any]]:
    """A call's identity and shape texts, and its soft values (those the shape masks), in order."""
    args = _normal(_parsed(arguments))
    soft: list[Any] = []
    return f"{tool}\x00{canonical_json(args)}", f"{tool}\x00{canonical_json(_shape(args, '', soft))}", soft


class _Prepared:
    """A call ready for comparison. Its outcome is normalised only when two raw answers differ:
    most calls are never compared, and normalising is the expensive part."""

    __slots__ = ("tool", "identity", "shape", "soft", "raw", "failed", "_outcome", "_call")

    def __init__(self, call: LoopCall) -> None:
        self.tool = call.tool
        self.identity, self.shape, self.soft = _texts(call.tool, call.arguments)
        self.failed = call.error is not None
        self.raw = call.error if self.failed else call.result
        self._outcome: str | None = None
        self._call = call

    @property
    def outcome(self) -> str:
        if self._outcome is None:
            self._outcome = outcome_text(self._call.result, self._call.error) or ""
        return self._outcome


def _same_answer(a: _Prepared, b: _Prepared) -> bool:
    if a.raw is None or b.raw is None:  # unknown results: only the same call counts as the same
        return a.raw is None and b.raw is None and a.identity == b.identity
    return a.failed == b.failed and (a.raw == b.raw or a.outcome == b.outcome)


def _close(a: _Prepared, b: _Prepared) -> bool:
    return a.identity == b.identity or all(_similar(x, y) for x, y in zip(a.soft, b.soft))


def find_loops(calls: Sequence[LoopCall], rules: LoopRules | None = None, *,
               final: bool = True) -> list[Loop]:
    """The loops in a session's tool calls, oldest first.

    Args:
        calls: The session's tool calls in the order they ran.
        rules: Thresholds (default ``LoopRules()``).
        final: The sequence is complete. When false (a session still running), every stall is
            judged as if progress could still follow, so that only what is a loop in any future
            is reported.
    """
    rules = rules or LoopRules()
    prepared = [_Prepared(c) for c in calls]
    last_shape: dict[str, int] = {}
    last_same: dict[str, int] = {}
    wasted = [False] * len(prepared)
    before: list[int | None] = [None] * len(prepared)
    for i, p in enumerate(prepared):
        # The same call asked again (however long ago: pages 2, 3, 2, 3 …), or the shape's last call
        # asked a little differently (a paraphrase, the next day).
        for j in (last_same.get(p.identity), last_shape.get(p.shape)):
            if j is not None and _close(prepared[j], p) and _same_answer(prepared[j], p):
                before[i], wasted[i] = j, True
                break
        last_shape[p.shape] = last_same[p.identity] = i
    first: list[int | None] = []  # the informative call each wasted call repeats: the start of its chain
    for j in before:
        first.append(None if j is None else j if first[j] is None else first[j])
    calls_of = _Positions(prepared)
    loops: list[Loop] = []
    i = 0
    while i < len(prepared):
        if not wasted[i]:
            i += 1
            continue
        end = i
        while end + 1 < len(prepared) and wasted[end + 1]:
            end += 1
        loops += _judge(prepared, before, first, range(i, end + 1), rules, final, calls_of)
        i = end + 1
    covered = {k for loop in loops for k in loop.calls}
    loops += _asked_again(prepared, rules, final, covered, calls_of)
    loops += _over_budget(prepared, rules, calls_of)
    return sorted(loops, key=lambda loop: loop.calls[0])


class _Positions:
    """Where each call (identity) and each shape was made, in order: so that a question about the
    calls after a stall, or within a run, reads those calls only, and a session of thousands of
    calls costs about its length, not its square."""

    def __init__(self, prepared: list[_Prepared]) -> None:
        self.call: dict[str, list[int]] = {}
        self.shape: dict[str, list[int]] = {}
        for i, p in enumerate(prepared):
            self.call.setdefault(p.identity, []).append(i)
            self.shape.setdefault(p.shape, []).append(i)

    @staticmethod
    def after(positions: list[int], k: int) -> list[int]:
        """The positions later than ``k``."""
        return positions[bisect.bisect_right(positions, k):]

    @staticmethod
    def within(positions: list[int], first: int, last: int) -> list[int]:
        """The positions from ``first`` to ``last``."""
        return positions[bisect.bisect_left(positions, first):bisect.bisect_right(positions, last)]


def _judge(prepared: list[_Prepared], before: list[int | None], first: list[int | None], stall: range,
           rules: LoopRules, final: bool, calls_of: _Positions) -> list[Loop]:
    per_shape: dict[str, int] = {}
    per_call: dict[str, int] = {}  # wasted calls per call asked again, or per shape asked a little differently
    for k in stall:
        per_shape[prepared[k].shape] = per_shape.get(prepared[k].shape, 0) + 1
        same = prepared[k].identity == prepared[before[k]].identity  # type: ignore[index]
        key = prepared[k].identity if same else prepared[k].shape
        per_call[key] = per_call.get(key, 0) + 1
    repeats = max(per_call.values()) + 1
    failed = all(prepared[k].failed for k in stall)
    if repeats <= (rules.retries if failed else rules.wait_polls) and len(stall) < rules.repeat - 1:
        return []  # not a loop whether or not progress followed
    members = sorted({k for k in stall} | {b for k in stall if (b := first[k]) is not None})
    # Progress is the same call answering differently (the job finished, the retry worked), or a
    # scan reaching an answer (the next day had a free slot); an agent that moves on to another
    # query has given up, not progressed. A call has one shape, so a scan's later calls of its
    # shape hold the stalled calls' own.
    stalled = {prepared[k].identity: prepared[k] for k in stall}
    scan = len(per_shape) == 1 and _scans([prepared[k] for k in members])
    later = (calls_of.after(calls_of.shape[next(iter(per_shape))], stall[-1]) if scan else
             [k for identity in stalled for k in calls_of.after(calls_of.call[identity], stall[-1])])
    progressed = any(not _same_answer(stalled.get(prepared[k].identity) or prepared[stall[-1]], prepared[k])
                     for k in later)
    if progressed or not final:
        if repeats <= (rules.retries if failed else rules.wait_polls):
            return []
    elif len(stall) < rules.repeat - 1:
        return []
    tools = tuple(dict.fromkeys(prepared[k].tool for k in members))
    if failed and len(tools) == 1:
        kind: LoopKind = "failure"
        reason = f"{tools[0]} failed the same way {repeats} times"
    elif len(per_call) > 1:
        kind = "cycle"
        reason = f"a cycle of {len(per_call)} calls ({' → '.join(tools)}) went round {repeats} times unchanged"
    elif len({prepared[k].identity for k in members}) == 1:
        kind, reason = "repeat", f"{tools[0]} called {repeats} times with the same arguments and the same result"
    else:
        kind, reason = "near", (f"{tools[0]} called {repeats} times with near-identical arguments and the same "
                                "result")
    if progressed:
        reason += f", before its answer changed (over the budget of {rules.retries if failed else rules.wait_polls})"
    return [Loop(kind, tuple(members), tools, len(stall), repeats, progressed, reason)]


def _scans(calls: list[_Prepared]) -> bool:
    """Whether near-identical calls step through new values in order (the next day, the next page)
    rather than going back and forth: a search that may still find something."""
    if len({c.identity for c in calls}) < len(calls):
        return False
    for values in zip(*(c.soft for c in calls)):
        if len(set(map(repr, values))) == 1:
            continue
        keys = [_order_key(v) for v in values]
        if None in keys or not (all(a < b for a, b in zip(keys, keys[1:]))
                                or all(a > b for a, b in zip(keys, keys[1:]))):
            return False
    return True


def _order_key(value: Any) -> float | str | None:
    """Where a number or a date stands in its order; ``None`` for anything else."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str) and _DATE.match(value):
        return value[:10]
    return None


def _asked_again(prepared: list[_Prepared], rules: LoopRules, final: bool, covered: set[int],
                 calls_of: _Positions) -> list[Loop]:
    """One call asked ``repeat + 1`` times with the same answer, with other calls in between (a
    search re-run between page reads that differ a little): a loop no stall shows."""
    out = []
    for calls in calls_of.call.values():
        start = 0
        for end in range(1, len(calls) + 1):
            if end < len(calls) and _same_answer(prepared[calls[start]], prepared[calls[end]]):
                continue
            run = calls[start:end]
            failed = prepared[run[0]].failed
            waiting = rules.retries if failed else rules.wait_polls
            if len(run) <= min(waiting, rules.repeat) or set(run) <= covered:
                start = end  # within every budget that could apply
                continue
            progressed = end < len(calls) or _waited(prepared, calls_of, run)
            budget = waiting if progressed or not final else rules.repeat
            if len(run) > budget:
                tool = prepared[run[0]].tool
                out.append(Loop("failure" if failed else "repeat", tuple(run), (tool,), len(run) - 1, len(run),
                                progressed, f"{tool} asked {len(run)} times with the same arguments and "
                                f"{'the same failure' if failed else 'the same result'}, other calls in between"))
            start = end
    return out


def _waited(prepared: list[_Prepared], calls_of: _Positions, run: list[int]) -> bool:
    """Whether, while ``run`` repeated itself, another call was stuck on one answer that then
    changed: ``sleep`` between the polls of a job that ended up done was waiting, not looping."""
    for identity in {prepared[k].identity for k in range(run[0], run[-1] + 1)}:
        calls = calls_of.call[identity]
        inside = calls_of.within(calls, run[0], run[-1])
        stuck = any(_same_answer(prepared[a], prepared[b]) for a, b in zip(inside, inside[1:]))
        if stuck and any(not _same_answer(prepared[inside[-1]], prepared[k])
                         for k in calls_of.after(calls, inside[-1])):
            return True
    return False


def _over_budget(prepared: list[_Prepared], rules: LoopRules, calls_of: _Positions) -> list[Loop]:
    return [Loop("polling", tuple(calls), (prepared[calls[0]].tool,), sum(1 for _ in calls) - 1, len(calls), False,
                 f"{prepared[calls[0]].tool} called {len(calls)} times with the same arguments, over the polling "
                 f"budget of {rules.poll_budget}")
            for calls in calls_of.call.values() if len(calls) > rules.poll_budget]


@dataclass(frozen=True)
class LoopGuard:
    """The loop rules, asked before a tool call runs, so that an agent can stop a loop before its
    budget runs out.

    The guard cannot see what comes after, so it holds a call to be a loop only when it would be
    one even if the answer then changed: past ``wait_polls`` identical answers (``retries``
    identical failures), or past the polling budget. An agent that never polls can be stricter,
    for example ``LoopGuard(LoopRules(wait_polls=4, retries=4))``.
    """

    rules: LoopRules = LoopRules()

    def check(self, calls: Sequence[LoopCall | tuple[str, Any]], name: str, arguments: Any) -> str | None:
        """Why running ``name(arguments)`` after ``calls`` (oldest first; ``(name, arguments)`` pairs
        when the results are not at hand) would be a loop, or ``None``. Pure: the caller keeps the
        history.

        The pending call is assumed to answer as the same call did last time: a loop is what
        happens when it does.
        """
        history = [c if isinstance(c, LoopCall) else LoopCall(c[0], c[1]) for c in calls]
        pending = LoopCall(name, arguments)
        me = _Prepared(pending)
        for c in reversed(history):
            p = _Prepared(c)
            if p.shape == me.shape and _close(p, me):
                pending = LoopCall(name, arguments, c.result, c.error)
                break
        loops = find_loops([*history, pending], self.rules, final=False)
        last = len(history)
        hit = next((loop for loop in loops if last in loop.calls), None)
        return hit.reason if hit is not None else None
