"""Reading decisions back from the store, and rebuilding the exact request of one."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any

from tracer import (
    CallOutline,
    NotRebuildableError,
    ServedStore,
    Store,
    canonical_json,
    connect,
    default_db_path,
    sha256_hex,
)

from ._errors import NoContentError, UnknownTurnError
from ._records import Decision, Origin, Reconstruction
from ._semconv import semantic_request

REPLAY_OF = "flightrec.replay.of"
"""The session attribute that links a replay or fork to the decision it started from."""


Db = str | os.PathLike[str] | Store | None
"""A store file, or a store this process already has open for writing (``flightrec serve``'s
dashboard hands its own, since DuckDB allows one configuration per file per process)."""


def db_path(db: Db) -> str:
    """The file behind ``db``."""
    return db.path if isinstance(db, Store) else default_db_path(db)


@contextmanager
def open_store(db: Db, *, through_serve: bool = False) -> Iterator[Store | ServedStore]:
    """The store to read: an open one as it is, or the file read-only, closed on exit so that a
    recorder can write the same file afterwards.

    With ``through_serve``, a file that ``flightrec serve`` holds is read through it
    (``tracer.connect``): for callers that only read. One that records into the file afterwards
    opens it directly, so that it fails at once with a message naming the serve.
    """
    if isinstance(db, Store):
        yield db
        return
    store = connect(db) if through_serve else Store(db, read_only=True)
    try:
        yield store
    finally:
        store.close()


def origin_of(store: Store, session_id: str) -> Origin:
    """What the session's first run span says about the agent and the model it ran against."""
    runs = store.session_runs(session_id)
    attrs: dict[str, Any] = runs[0].attributes if runs else {}
    config = attrs.get("flightrec.agent.config")
    return Origin(
        agent=attrs.get("gen_ai.agent.name"), model_target=attrs.get("flightrec.model_target"),
        scenario=attrs.get("flightrec.scenario"), seed=int(attrs.get("flightrec.seed") or 0),
        misbehave=list(attrs.get("flightrec.misbehave") or []), faults=list(attrs.get("flightrec.faults") or []),
        config=json.loads(config) if config else {},
        replay_of=attrs.get(REPLAY_OF), replay_kind=attrs.get("flightrec.replay.kind"),
        replay_session=attrs.get("flightrec.replay.session"), replay_turn=attrs.get("flightrec.replay.turn"),
        attributes=attrs,
    )


def decisions(store: Store, session_id: str) -> tuple[str, dict[int, Decision]]:
    """The full session id, and each turn's decision: its last successful attempt (or its last
    attempt, if all failed).

    Raises:
        tracer.UnknownSessionError: no such session.
    """
    sid = store.get_session(session_id).session_id
    calls = store.call_outlines(sid)
    chosen: dict[int, CallOutline] = {}
    for c in calls:
        if c.turn_index is None:
            continue
        if c.turn_index not in chosen or c.status == "ok" or chosen[c.turn_index].status != "ok":
            chosen[c.turn_index] = c
    out: dict[int, Decision] = {}
    for turn, c in sorted(chosen.items()):
        blocks = (c.response or {}).get("content") or []
        out[turn] = Decision(
            session_id=sid, turn=turn, span_id=c.span_id, trace_id=c.trace_id, model=c.model, action=c.action,
            stop_reason=c.stop_reason,
            text="\n".join(b.get("text", "") for b in blocks if b.get("type") == "text") or None,
            tool_uses=[{"name": b.get("name"), "input": b.get("input")} for b in blocks if b.get("type") == "tool_use"],
            input_tokens=c.input_tokens, output_tokens=c.output_tokens, cost_usd=c.cost_usd, latency_ms=c.latency_ms,
            request_sha256=c.request_sha256, content_mode=c.content_mode, not_rebuildable=c.not_rebuildable,
            content_pruned_ns=c.content_pruned_ns, betas=c.betas,
        )
    return sid, out


def decision_at(store: Store, session_id: str, turn: int) -> Decision:
    """The decision of one turn.

    Raises:
        tracer.UnknownSessionError: no such session.
        UnknownTurnError: the session has no LLM call at that turn.
    """
    sid, found = decisions(store, session_id)
    if turn not in found:
        span = f"turns {min(found)}..{max(found)}" if found else "no LLM calls"
        raise UnknownTurnError(f"session {sid} has no decision at turn {turn}; it has {span}. "
                               f"See them with `flightrec traces show {sid}`.")
    return found[turn]


REDACTED_NOTE = ("REDACTED AT CAPTURE: this call was recorded with content mode `redacted`, and the redactors "
                 "replaced parts of its content with [REDACTED:…] markers, so it cannot be rebuilt exactly (its hash "
                 "differs from the recorded one) and a re-run sends the redacted text. Record with content='full' "
                 "to replay a call exactly.")
"""The note a rebuilt request carries when redaction changed it."""


def rebuild(store: Store, decision: Decision) -> dict[str, Any]:
    """The exact request body of a decision.

    Raises:
        NoContentError: the session was recorded without content, or by other instrumentation, or
            the content is missing.
    """
    if decision.content_pruned_ns is not None:
        day = datetime.fromtimestamp(decision.content_pruned_ns / 1e9, timezone.utc).strftime("%Y-%m-%d")
        raise NoContentError(
            f"turn {decision.turn} of session {decision.session_id} cannot be rebuilt: its content was pruned by "
            f"retention on {day} (`flightrec prune --content-only` or `serve --retain-content`). Its tokens, cost "
            f"and decision remain: `flightrec traces show {decision.session_id}`.")
    if decision.not_rebuildable:
        raise NoContentError(
            f"turn {decision.turn} of session {decision.session_id} cannot be rebuilt exactly: "
            f"{decision.not_rebuildable}. "
            f"`flightrec traces show {decision.session_id}` shows what was recorded; to replay the agent's calls, "
            "record it with flightrec's tracer (Recorder.instrument on its anthropic client).")
    if decision.content_mode == "none":
        raise NoContentError(
            f"session {decision.session_id} was recorded with content mode `none` (metadata only), so its requests "
            "cannot be rebuilt or re-run. Record it again with content='full' (or 'redacted') to replay it.")
    try:
        return store.rebuild_request(decision.span_id)
    except NotRebuildableError as exc:
        raise NoContentError(f"{exc} Record the session with content='full' to replay it.") from None


def reconstruct_in(store: Store, session_id: str, turn: int) -> Reconstruction:
    """``reconstruct`` on an open store."""
    decision = decision_at(store, session_id, turn)
    origin = origin_of(store, decision.session_id)
    if decision.not_rebuildable and decision.content_pruned_ns is None:
        s = semantic_request(store, decision)
        return Reconstruction(session_id=decision.session_id, turn=turn, span_id=decision.span_id, request=s.body,
                              sha256=sha256_hex(canonical_json(s.body)), recorded_sha256=None, exact=False,
                              decision=decision, origin=origin, reconstructed_from=s.convention.label,
                              notes=s.notes, missing=s.missing, betas=s.betas or decision.betas)
    body = rebuild(store, decision)
    digest = sha256_hex(canonical_json(body))
    exact = digest == decision.request_sha256
    return Reconstruction(session_id=decision.session_id, turn=turn, span_id=decision.span_id, request=body,
                          sha256=digest, recorded_sha256=decision.request_sha256, exact=exact, decision=decision,
                          origin=origin, betas=decision.betas,
                          notes=[REDACTED_NOTE] if decision.content_mode == "redacted" and not exact else [])


def reconstruct(session_id: str, turn: int, *, db: Db = None) -> Reconstruction:
    """The exact request of one decision, rebuilt from the store, with its hash.

    A call recorded by other instrumentation (OpenInference, OpenLLMetry, the anthropic SDK's
    spans, the GenAI conventions) kept no exact request: its request is *reconstructed from
    semantic conventions* out of the messages, system instructions, tool definitions and
    parameters the spans recorded, and marked so (``reconstructed_from``, ``exact`` false, no
    recorded hash; ``notes`` says what was changed or left out, ``missing`` what a re-run must
    supply).

    Args:
        session_id: The session (a unique prefix of 8+ characters works).
        turn: The turn (1-based) whose decision to rebuild.
        db: The store; default ``$FLIGHTREC_DB`` or ``./flightrec.duckdb``.

    Raises:
        tracer.UnknownSessionError: no such session.
        UnknownTurnError: no decision at that turn.
        NoContentError: the session was recorded without content, or by other instrumentation that
            kept no messages (the message says which setting records them).

    Blocking: opens the store read-only for the duration of the call (or reads it through the
    ``flightrec serve`` that holds it).
    """
    with open_store(db, through_serve=True) as store:
        return reconstruct_in(store, session_id, turn)
