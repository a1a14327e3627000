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

COLUMNS = (
    "model", "attempt", "stream", "content_mode", "betas", "request_sha256", "tools_available", "turn_index",
    "http_status", "error_type", "response_id", "response_model", "stop_reason", "input_tokens",
    "output_tokens", "cache_read_tokens", "cache_write_tokens", "action", "tools_chosen", "cost_usd",
    "ctx_system_tokens", "ctx_tools_tokens", "ctx_history_tokens", "ctx_tool_results_tokens", "ctx_retrieved_tokens",
    "ctx_window", "ctx_utilisation",
)
"""The ``llm_calls`` columns ``restore`` reads, in the order it takes them."""

_C = {c: i for i, c in enumerate(COLUMNS)}


def _column(name: str, kind: Callable[[Any], Any]) -> Callable[[Sequence[Any]], Any]:
    # ``kind`` is the column's Python type: the identity on what DuckDB gives back, and at ingest what
    # the insert would make of the value, so that a value the column would change is never dropped.
    i = _C[name]

    def get(values: Sequence[Any]) -> Any:
        v = values[i]
        return None if v is None else kind(v)

    return get


def _strings(v: Any) -> list[str]:
    return [str(x) for x in v]


def _total_input(values: Sequence[Any]) -> int | None:
    # The conventions count cached tokens in input_tokens; llm_calls stores them as the API does.
    uncached = values[_C["input_tokens"]]
    if uncached is None:
        return None
    return int(uncached) + int(values[_C["cache_read_tokens"]] or 0) + int(values[_C["cache_write_tokens"]] or 0)


def _finish(values: Sequence[Any]) -> list[str] | None:
    stop = values[_C["stop_reason"]]
    return None if stop is None else [str(stop)]


_P = A.CONTEXT_PREFIX
_HELD: dict[str, Callable[[Sequence[Any]], Any]] = {
    A.OPERATION: lambda values: "chat",
    A.REQUEST_MODEL: _column("model", str),
    A.ATTEMPT: _column("attempt", int),
    A.REQUEST_STREAM: _column("stream", bool),
    A.CONTENT_MODE: _column("content_mode", str),
    A.REQUEST_BETAS: _column("betas", _strings),
    A.REQUEST_SHA256: _column("request_sha256", str),
    A.TOOLS_AVAILABLE: _column("tools_available", _strings),
    A.TURN_INDEX: _column("turn_index", int),
    A.HTTP_STATUS: _column("http_status", int),
    A.ERROR_TYPE: _column("error_type", str),
    A.RESPONSE_ID: _column("response_id", str),
    A.RESPONSE_MODEL: _column("response_model", str),
    A.RESPONSE_FINISH_REASONS: _finish,
    A.USAGE_INPUT: _total_input,
    A.USAGE_OUTPUT: _column("output_tokens", int),
    A.USAGE_CACHE_READ: _column("cache_read_tokens", int),
    A.USAGE_CACHE_CREATION: _column("cache_write_tokens", int),
    A.ACTION: _column("action", str),
    A.TOOLS_CHOSEN: _column("tools_chosen", _strings),
    A.COST_USD: _column("cost_usd", float),
    **{f"{_P}{s}_tokens": _column(f"ctx_{s}_tokens", int) for s in A.SEGMENTS},
    A.CONTEXT_WINDOW: _column("ctx_window", int),
    A.CONTEXT_UTILISATION: _column("ctx_utilisation", float),
}
"""The attributes ``llm_calls`` holds exactly, and how to read each back from ``COLUMNS``."""

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
_HELD_IN_ORDER = tuple((k, _RANK[k], get) for k in _ORDER if (get := _HELD.get(k)) is not None)


def restore(kept: dict[str, Any], values: Sequence[Any]) -> dict[str, Any]:
    """A chat span's attributes as recorded, from what ``spans.attributes`` kept of them and its call's row.

    Args:
        kept: The span's stored attributes, parsed; returned as they are if stored whole.
        values: The call's ``llm_calls`` values of ``COLUMNS``, in that order.
    """
    if A.OPERATION in kept:  # stored whole (by ``stored``, or by a version before it)
        return kept
    held = [(k, rank, v) for k, rank, get in _HELD_IN_ORDER if (v := get(values)) is not None]
    out: dict[str, Any] = {}
    i = 0
    for key, value in kept.items():
        rank = _RANK.get(key)
        if rank is not None:
            while i < len(held) and held[i][1] < rank:
                out[held[i][0]] = held[i][2]
                i += 1
        out[key] = value
    for key, _rank, value in held[i:]:
        out[key] = value
    return out


def stored(attributes: dict[str, Any], values: Sequence[Any]) -> dict[str, Any]:
    """What ``spans.attributes`` keeps of a chat span's ``attributes`` (its content attributes already
    taken out), given its call's ``llm_calls`` values of ``COLUMNS``: all of them unless ``restore``
    gives them back exactly."""
    if A.OPERATION not in attributes:  # could not be told from a span stored this way
        return attributes
    kept = {k: v for k, v in attributes.items() if k not in _HELD}
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
