"""What a span must be for the store to take it: checked, and normalised, before the writer sees it.

Every span goes through ``check`` once, from an OTLP request (``_otlp.decode_request``, on the
thread that decoded it) or from the embedded exporter (``_export``), so that nothing a client
sends can make a write fail: a span the store can never hold is rejected with a reason (OTLP
partial success, or 400 when nothing in the request can be stored), and a value the store cannot
hold as sent is normalised, or dropped with its span kept, and named in the answer too.

The rules follow the schema (``_migrations.py``) and what ingest derives from each attribute:

- start and end times are BIGINT: a time of 2^63 ns or more (past the year 2262), or before 1970, rejects
  the span.
- the attributes ingest reads into typed columns (``_RULES``) must be of their column's kind. A
  numeric string or an integral float becomes the integer it spells, one string where a list of
  strings is expected becomes a list of it, and structured tool arguments or results become JSON
  text; any other mistyped value is dropped (the raw span keeps its other attributes).
- counts of tokens and context sizes are at most 2^31 - 1 (INTEGER; no model reads a billion
  tokens), and a cost is finite, from 0 to ``_MAX_COST_USD``: per-call values so bounded keep a
  session's sums (BIGINT, DOUBLE) from overflowing short of about 2^31 calls, and past that the
  store holds each sum at its column's bound (``_store._saturated``), so that a session stays writable.
- a ``flightrec.request.body`` that is not a JSON object's text is kept: ingest stores the call as
  not rebuildable (``_ingest``), and the answer says so.
- strings must be UTF-8. OTLP's decoder refuses any other; the SDK's spans may hold unpaired
  surrogates, which are replaced with U+FFFD.

- an outcome span (``flightrec.outcome.resolved`` or ``.score``; ``tracer._ingest``) must name its
  session and keep at least one of the two after the rules above, else it is rejected: it would
  otherwise be stored as a span of the session it names, and move that session's end.

Values stored only as JSON (every other attribute, events, links, the resource) need no check:
ingest serialises any of them (an integer beyond 64 bits as text, NaN as null).

A check is cheap (a dictionary look-up per attribute, a type test per ruled one): about 3 µs a
span of the collector benchmark's payload, and about 9 µs with the SDK's UTF-8 check
(benchmarks/RESULTS.md §25). It takes no lock and keeps no state.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import _attributes as A
from ._foreign import as_text

if TYPE_CHECKING:  # ingest imports this module
    from ._ingest import SpanRecord

_MAX_NS = 2**63 - 1
"""The largest time a BIGINT holds."""
_MAX_INT = 2**31 - 1
"""The largest INTEGER; the bound of a count of tokens too."""
_MAX_COST_USD = 1e9
"""The largest cost of one call taken: far above any real one, far below what a sum can overflow."""
_SURROGATES = re.compile("[\ud800-\udfff]")

_COUNT = f"not a count from 0 to {_MAX_INT}"
_INTEGER = f"not an integer from {-_MAX_INT - 1} to {_MAX_INT}"
_TEXT = "not a string"
_TEXTS = "not a list of strings"


def _integer(value: Any, low: int) -> int | None:
    """``value`` as an integer from ``low`` to ``_MAX_INT``, or ``None``."""
    if type(value) is int:
        return value if low <= value <= _MAX_INT else None
    if isinstance(value, bool):
        return None
    if isinstance(value, int):  # a subclass (an IntEnum): stored as the plain integer
        return int(value) if low <= value <= _MAX_INT else None
    if isinstance(value, float):  # NaN and infinities are not integral
        return int(value) if value.is_integer() and low <= value <= _MAX_INT else None
    if isinstance(value, str):
        text = value.strip()
        digits = text[1:] if text[:1] in ("-", "+") else text
        if digits.isascii() and digits.isdigit():
            number = int(text)
            return number if low <= number <= _MAX_INT else None
    return None


def _count(value: Any) -> int | None:
    return _integer(value, 0)


def _int32(value: Any) -> int | None:
    return _integer(value, -_MAX_INT - 1)


def _number(value: Any) -> float | int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if abs(value) <= 2**53 else None  # DOUBLE holds it exactly
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None


def _cost(value: Any) -> float | int | None:
    number = _number(value)
    return number if number is not None and 0 <= number <= _MAX_COST_USD else None


def _text(value: Any) -> str | None:
    if type(value) is str:
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)  # a model or an id sent as a number: the same text
    return None


def _text_or_json(value: Any) -> str | None:
    """Tool arguments and results: text, or structured data as JSON text (as ingest stores it)."""
    return None if value is None else as_text(value)


def _boolean(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return None


def _unit(value: Any) -> float | int | None:
    number = _number(value)
    return number if number is not None and 0 <= number <= 1 else None


def _texts(value: Any) -> Any:
    if type(value) is tuple or type(value) is list:
        return value if all(type(v) is str for v in value) else None
    return (value,) if type(value) is str else None


_Rule = tuple[Callable[[Any], Any], str, type | None]
"""How to normalise a value, why it is dropped when it cannot be, and the type it usually has (an int
from 0 to ``_MAX_INT``, or any str), which ``check`` passes without calling the rule."""
_RULES: dict[str, _Rule] = {
    # Counts, summed into the session (BIGINT) or stored as INTEGER.
    **dict.fromkeys((
        A.USAGE_INPUT, A.USAGE_OUTPUT, A.USAGE_CACHE_READ, A.USAGE_CACHE_CREATION,
        *(f"{A.CONTEXT_PREFIX}{segment}_tokens" for segment in A.SEGMENTS), A.CONTEXT_WINDOW,
        # Other instrumentation's names for the same counts (``_foreign``).
        "gen_ai.usage.cache_write.input_tokens", "gen_ai.usage.prompt_tokens", "gen_ai.usage.completion_tokens",
        "gen_ai.usage.cache_read_input_tokens", "gen_ai.usage.cache_creation_input_tokens",
        "llm.usage.prompt_tokens", "llm.usage.completion_tokens", "llm.token_count.prompt",
        "llm.token_count.completion", "llm.token_count.prompt_details.cache_read",
        "llm.token_count.prompt_details.cache_write",
    ), (_count, _COUNT, int)),
    **dict.fromkeys((A.TURN_INDEX, A.ATTEMPT, A.HTTP_STATUS, A.TOOL_RETRIES), (_int32, _INTEGER, int)),
    **dict.fromkeys((A.CONTEXT_UTILISATION, A.TTFT_S, A.LEGACY_TTFT_MS), (_number, "not a finite number", None)),
    A.COST_USD: (_cost, f"not a cost from 0 to {_MAX_COST_USD:,.0f} USD", None),
    **dict.fromkeys((
        A.REQUEST_MODEL, A.RESPONSE_MODEL, A.RESPONSE_ID, A.ERROR_TYPE, A.CONTENT_MODE, A.REQUEST_SHA256, A.ACTION,
        A.REASONING, A.RESPONSE_BODY, A.AGENT_NAME, A.SESSION_STATUS, A.SESSION_STATUS_REASON, A.TOOL_NAME,
        A.TOOL_CALL_ID, A.TOOL_STATUS, A.TOOL_IDEMPOTENCY_KEY, A.TOOL_CIRCUIT_STATE,
    ), (_text, _TEXT, str)),
    **dict.fromkeys((A.TOOL_ARGUMENTS, A.TOOL_RESULT), (_text_or_json, _TEXT, str)),
    # An outcome sent after the fact (``tracer._ingest``: a row of session_outcomes, not a span of the session).
    A.OUTCOME_RESOLVED: (_boolean, "not a boolean", bool),
    A.OUTCOME_SCORE: (_unit, "not a number from 0 to 1", None),
    **dict.fromkeys((A.OUTCOME_SESSION, A.OUTCOME_NOTE, A.OUTCOME_SOURCE), (_text, _TEXT, str)),
    **dict.fromkeys((A.TOOLS_AVAILABLE, A.TOOLS_CHOSEN, A.REQUEST_BETAS, A.RESPONSE_FINISH_REASONS),
                    (_texts, _TEXTS, None)),
}
"""The attributes ingest reads into typed columns: how to normalise each, and why it is dropped when it cannot be."""

BAD_BODY = "not the text of a JSON object"
"""Why a call's request body is not stored, in the answer and in ``llm_calls.not_rebuildable``."""


def check(record: SpanRecord, notes: Counter[str], *, from_sdk: bool = False) -> str | None:
    """Checks one span and normalises it in place so that the store can take it.

    Args:
        record: The span; its attributes (and, from the SDK, its strings) may be changed.
        notes: Counts what was changed or dropped, by ``"attribute: why"``; the span is kept.
        from_sdk: The span comes from this process's SDK, whose strings may not be UTF-8 (OTLP's
            decoder has refused those already).

    Returns:
        Why the span can never be stored, or ``None`` when it is kept.
    """
    if not (0 <= record.start_ns <= _MAX_NS and 0 <= record.end_ns <= _MAX_NS):
        return "start or end time outside 0 to 2^63 - 1 ns (1970 to 2262)"
    attrs = record.attributes
    outcome = A.OUTCOME_RESOLVED in attrs or A.OUTCOME_SCORE in attrs
    changed: dict[str, Any] | None = None
    for key, value in attrs.items():
        rule = _RULES.get(key)
        if rule is None or type(value) is rule[2] and (rule[2] is not int or 0 <= value <= _MAX_INT):
            continue  # the usual case, without a call: text that is text, a count in range
        normal = None if value is None else rule[0](value)
        if normal is not value or value is None:
            if changed is None:
                changed = {}
            changed[key] = normal
            if normal is None:
                notes[f"{key}: {rule[1]}, dropped" if value is not None else f"{key}: empty, dropped"] += 1
    if changed:
        for key, value in changed.items():
            if value is None:
                del attrs[key]
            else:
                attrs[key] = value
    if outcome:  # never taken as a span of the session it names: an outcome, or nothing
        if A.OUTCOME_RESOLVED not in attrs and A.OUTCOME_SCORE not in attrs:
            return (f"an outcome whose {A.OUTCOME_RESOLVED} is not a boolean and whose {A.OUTCOME_SCORE} is not a "
                    "number from 0 to 1")
        if not attrs.get(A.OUTCOME_SESSION) and not attrs.get(A.CONVERSATION_ID):
            return f"an outcome that names no session (set {A.OUTCOME_SESSION})"
    body = attrs.get(A.REQUEST_BODY)
    if body is not None and not (type(body) is str and body[:1] == "{" and body[-1:] == "}"):
        notes[f"{A.REQUEST_BODY}: {BAD_BODY}, so the call is stored without it, as not rebuildable"] += 1
    if from_sdk:
        _utf8(record, notes)
    return None


def _utf8(record: SpanRecord, notes: Counter[str]) -> None:
    """Replaces unpaired surrogates (which no UTF-8 column takes) in a span's strings."""
    fixed = _clean(record.name)
    if fixed is not None:
        record.name = fixed
        notes["span name: not UTF-8, unpaired surrogates replaced"] += 1
    if (fixed := _clean(record.status_message)) is not None:
        record.status_message = fixed
        notes["status message: not UTF-8, unpaired surrogates replaced"] += 1
    if (fixed := _clean(record.scope)) is not None:
        record.scope = fixed
        notes["instrumentation scope: not UTF-8, unpaired surrogates replaced"] += 1
    for where, attrs in (("attributes", record.attributes), ("resource", record.resource),
                         *(("event attributes", e["attributes"]) for e in record.events),
                         *(("link attributes", link["attributes"]) for link in record.links)):
        if attrs and _clean_attributes(attrs):
            notes[f"{where}: not UTF-8, unpaired surrogates replaced"] += 1
    for event in record.events:
        if (fixed := _clean(event["name"])) is not None:
            event["name"] = fixed
            notes["event name: not UTF-8, unpaired surrogates replaced"] += 1


def _clean(text: Any) -> str | None:
    """``text`` with its unpaired surrogates replaced, or ``None`` when it has none (or is not text)."""
    if type(text) is not str or text.isascii():  # isascii() is constant time: CPython keeps the flag
        return None
    try:
        text.encode()
    except UnicodeEncodeError:
        return _SURROGATES.sub("\ufffd", text)
    return None


def _clean_value(value: Any) -> Any:
    """An SDK attribute value (text, or a flat sequence) with its surrogates replaced, or ``None``."""
    if type(value) is tuple or type(value) is list:
        items = [_clean(v) for v in value]
        if all(v is None for v in items):
            return None
        return tuple(old if new is None else new for old, new in zip(value, items))
    return _clean(value)


def _clean_attributes(attrs: dict[str, Any]) -> bool:
    """Cleans an attribute map in place; whether anything changed."""
    if all(_clean(k) is None and _clean_value(v) is None for k, v in attrs.items()):
        return False
    cleaned = {}
    for key, value in attrs.items():
        new_key, new_value = _clean(key), _clean_value(value)
        cleaned[key if new_key is None else new_key] = value if new_value is None else new_value
    attrs.clear()
    attrs.update(cleaned)
    return True


def describe(rejected: Counter[str], notes: Counter[str]) -> str:
    """The message of an answer: spans rejected and values not stored as sent, with why and how many.

    ``"1 span rejected: invalid trace_id (1); 2 values not stored as sent: gen_ai.usage.input_tokens:
    not a count from 0 to 2147483647, dropped (2)"``, or ``""`` when nothing was.
    """
    parts = []
    n = sum(rejected.values())
    if n:
        reasons = ", ".join(f"{reason} ({k})" for reason, k in rejected.most_common())
        parts.append(f"{n} span{'s' if n != 1 else ''} rejected: {reasons}")
    n = sum(notes.values())
    if n:
        changes = ", ".join(f"{note} ({k})" for note, k in notes.most_common())
        parts.append(f"{n} value{'s' if n != 1 else ''} not stored as sent (their spans were): {changes}")
    return "; ".join(parts)
