"""A chat span's attributes, stored once: what ``llm_calls`` holds is not kept again in ``spans``.

flightrec's own chat spans carry about forty attributes, and most of their values are also what
ingest writes into the call's ``llm_calls`` row (model, tokens, cost, context sizes, the request's
hash …). (Not the conversation id: a call made outside any session has none, and its row's session
is then its trace.) Kept twice, they were the largest item on disk after the content itself. So
``spans.attributes`` keeps only the rest, and readers put the attributes back from the call's row
with ``restore``. This module owns that mapping, both ways.

A span is stored this way only if putting it back gives exactly what was recorded (the same keys
in the same order, the same values of the same JSON types); otherwise its attributes are kept
whole, as every store written before kept them. Such a chat span lacks ``gen_ai.operation.name``
(always ``chat``, put back first) only when stored this way: that absence is how readers tell the
two layouts apart, so that old stores read as before.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from . import _attributes as A

SCOPE = "flightrec"
"""Only flightrec's own chat spans are stored this way: their attributes come from one place (capture)."""


def _strings(v: Any) -> list[str]:
    return [str(x) for x in v]


def _one(v: Any) -> list[str]:
    # llm_calls keeps the first finish reason only: a list of one is all it gives back.
    return [str(v)]


_TOTAL = "total"
"""The conventions count cached tokens in input_tokens; llm_calls stores them as the API does."""

_P = A.CONTEXT_PREFIX
_HELD: dict[str, tuple[str, Callable[[Any], Any] | str]] = {
    A.REQUEST_MODEL: ("model", str),
    A.ATTEMPT: ("attempt", int),
    A.REQUEST_STREAM: ("stream", bool),
    A.CONTENT_MODE: ("content_mode", str),
    A.REQUEST_BETAS: ("betas", _strings),
    A.REQUEST_SHA256: ("request_sha256", str),
    A.TOOLS_AVAILABLE: ("tools_available", _strings),
    A.TURN_INDEX: ("turn_index", int),
    A.HTTP_STATUS: ("http_status", int),
    A.ERROR_TYPE: ("error_type", str),
    A.RESPONSE_ID: ("response_id", str),
    A.RESPONSE_MODEL: ("response_model", str),
    A.RESPONSE_FINISH_REASONS: ("stop_reason", _one),
    A.USAGE_INPUT: ("input_tokens", _TOTAL),
    A.USAGE_OUTPUT: ("output_tokens", int),
    A.USAGE_CACHE_READ: ("cache_read_tokens", int),
    A.USAGE_CACHE_CREATION: ("cache_write_tokens", int),
    A.ACTION: ("action", str),
    A.TOOLS_CHOSEN: ("tools_chosen", _strings),
    A.COST_USD: ("cost_usd", float),
    **{f"{_P}{s}_tokens": (f"ctx_{s}_tokens", int) for s in A.SEGMENTS},
    A.CONTEXT_WINDOW: ("ctx_window", int),
    A.CONTEXT_UTILISATION: ("ctx_utilisation", float),
}
"""The attributes ``llm_calls`` holds exactly (besides ``gen_ai.operation.name``, always ``chat``): the
column of each and its Python type. The type is the identity on what DuckDB gives back, and at
ingest it makes of a value what the insert would, so that a value the column would change is
never dropped."""

_ORDER = (
    A.OPERATION, A.PROVIDER, A.REQUEST_MODEL, A.ATTEMPT, A.REQUEST_STREAM, A.CONTENT_MODE, A.SERVER_ADDRESS,
    A.SERVER_PORT, A.REQUEST_BETAS, A.REQUEST_MAX_TOKENS, A.REQUEST_TEMPERATURE, A.REQUEST_TOP_P, A.REQUEST_TOP_K,
    A.REQUEST_STOP_SEQUENCES, A.REQUEST_SHA256, A.TOOLS_AVAILABLE, A.CONVERSATION_ID, A.AGENT_NAME, A.TURN_INDEX,
    A.HTTP_STATUS, A.ERROR_TYPE, A.TTFT_S, A.RESPONSE_ID, A.RESPONSE_MODEL, A.RESPONSE_FINISH_REASONS, A.USAGE_INPUT,
    A.USAGE_OUTPUT, A.USAGE_CACHE_READ, A.USAGE_CACHE_CREATION, A.CACHE_WRITE_1H, A.ACTION, A.TOOLS_CHOSEN,
    A.COST_USD, *(f"{_P}{s}_tokens" for s in A.SEGMENTS), A.CONTEXT_WINDOW, A.CONTEXT_UTILISATION,
)
"""The order capture sets a chat span's attributes in (``tracer._capture``): ``restore`` puts the held
ones back where they were among the kept ones."""
_RANK = {k: i for i, k in enumerate(_ORDER)}
COLUMNS = tuple(_HELD[k][0] for k in _ORDER if k in _HELD) + ("cache_read_tokens", "cache_write_tokens")
"""The ``llm_calls`` columns ``restore`` reads, in the order it takes them (the cached tokens twice:
the conventions' input tokens add them up)."""
_SPEC = tuple((k, _RANK[k], i, _HELD[k][1]) for i, k in enumerate(k for k in _ORDER if k in _HELD))


def restore(kept: dict[str, Any], values: Sequence[Any]) -> dict[str, Any]:
    """A chat span's attributes as recorded, from what ``spans.attributes`` kept of them and its call's row.

    Args:
        kept: The span's stored attributes, parsed; returned as they are if stored whole.
        values: The call's ``llm_calls`` values of ``COLUMNS``, in that order.
    """
    if A.OPERATION in kept:  # stored whole (by ``stored``, or by a version before it)
        return kept
    held: list[tuple[int, str, Any]] = [(0, A.OPERATION, "chat")]
    for key, rank, i, kind in _SPEC:
        v = values[i]
        if v is not None:
            if kind is _TOTAL:
                v = int(v) + int(values[-2] or 0) + int(values[-1] or 0)
            elif type(v) is not kind:  # already of its column's type (all of them, read from DuckDB)
                v = kind(v)  # type: ignore[operator]
            held.append((rank, key, v))
    out: dict[str, Any] = {}
    i, n = 0, len(held)
    for key, value in kept.items():
        rank = _RANK.get(key)
        if rank is not None:  # the held keys capture sets before this one go first
            while i < n and held[i][0] < rank:
                out[held[i][1]] = held[i][2]
                i += 1
        out[key] = value
    for _rank, key, value in held[i:]:
        out[key] = value
    return out


def stored(attributes: dict[str, Any], values: Sequence[Any]) -> dict[str, Any]:
    """What ``spans.attributes`` keeps of a chat span's ``attributes`` (its content attributes already
    taken out), given its call's ``llm_calls`` values of ``COLUMNS``: all of them unless ``restore``
    gives them back exactly."""
    if A.OPERATION not in attributes:  # could not be told from a span stored this way
        return attributes
    kept = {k: v for k, v in attributes.items() if k not in _HELD and k != A.OPERATION}
    try:
        # Compared as the JSON text that would be stored: the same keys, order, values and JSON types.
        same = orjson.dumps(restore(kept, values)) == orjson.dumps(attributes)
    except (TypeError, ValueError):  # a value orjson cannot take, or a column type it cannot be made
        same = False
    return kept if same else attributes


def call_columns(alias: str) -> str:
    """``COLUMNS`` as a select list over ``llm_calls`` under ``alias``, for the values ``read`` takes."""
    return ", ".join(f"{alias}.{c}" for c in COLUMNS)


def read(scope: str | None, text: str | None, values: Sequence[Any] | None) -> Any:
    """A span's attributes as recorded, from its ``scope`` and ``spans.attributes`` text.

    Args:
        values: Its call's ``llm_calls`` values of ``COLUMNS`` (``call_columns``), or ``None`` if the
            span has no ``llm_calls`` row: only a chat span's attributes are ever stored in part.
    """
    attributes = json.loads(text) if text else {}
    if values is None or scope != SCOPE or not isinstance(attributes, dict):
        return attributes
    return restore(attributes, values)
