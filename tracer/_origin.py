"""Where a session comes from (production, an eval run's trial, a replay, a fork), and how it is labelled.

Eval trials, replays and forks mark their session span; ingest reads the marks into ``sessions``
(``origin``, ``eval_run_id``, ``eval_case_id``, ``source_session_id``), so that a session recorded
through ``flightrec serve`` gets the same origin as an embedded one, and the dashboard tells
production traffic apart from tests by a column instead of by parsing spans. A session with none
of the marks, from flightrec or from any other OpenTelemetry source, is production.

Replay sets its marks itself (``flightrec.replay.kind`` and ``flightrec.replay.session``). The eval
runner cannot: an eval agent opens its trials' sessions in its own code. It runs each trial inside
``eval_trial``, and every session opened in that context carries the run, case and trial.

The root span ends last, so a session's turns and calls reach the store long before it. The
recorder repeats the origin marks on each turn and chat span (``origin_marks``), and ingest takes
them from whichever arrives first: an eval trial or a fork still running is not counted as
production meanwhile (``flightrec serve``, the dashboard's live pages). Production sessions have
no marks, so their spans carry nothing more. Route, tags and the parent session
(``flightrec.parent_session_id``: a sub-agent's session names the session that started it) stay on
the root span only.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import astuple, dataclass
from types import MappingProxyType
from typing import Any, Literal

from . import _attributes as A

Origin = Literal["production", "eval", "replay", "fork"]
ORIGINS: tuple[Origin, ...] = ("production", "eval", "replay", "fork")
"""Every origin a session can have, in the order the dashboard offers them."""

_NONE: Mapping[str, Any] = MappingProxyType({})
_ambient: ContextVar[Mapping[str, Any]] = ContextVar("flightrec_session_marks", default=_NONE)


@contextmanager
def eval_trial(run_id: str, case_id: str, trial: int) -> Iterator[None]:
    """Marks every session opened in the body as trial ``trial`` of case ``case_id`` of eval run ``run_id``.

    The marks follow the calling thread and the asyncio tasks it starts (a context variable); an
    agent that opens its session on a thread of its own must run it in a copy of this context
    (``contextvars.copy_context().run``).
    """
    token = _ambient.set({A.EVAL_RUN_ID: run_id, A.EVAL_CASE_ID: case_id, A.EVAL_TRIAL: trial})
    try:
        yield
    finally:
        _ambient.reset(token)


_ORIGIN_ATTRIBUTES = (A.EVAL_RUN_ID, A.EVAL_CASE_ID, A.EVAL_TRIAL, A.REPLAY_KIND, A.REPLAY_SESSION)


def origin_marks(attributes: Mapping[str, Any]) -> dict[str, Any]:
    """The attributes of a session span that tell its origin, to repeat on the session's turn and chat spans."""
    return {k: attributes[k] for k in _ORIGIN_ATTRIBUTES if k in attributes}


def ambient_marks() -> Mapping[str, Any]:
    """The marks a session opened here gets besides its own attributes (ids, not content: no redaction)."""
    return _ambient.get()


@dataclass(frozen=True)
class SessionMarks:
    """What a session span says about the session's origin and labels; ``None`` where it says nothing."""

    origin: Origin | None = None
    eval_run_id: str | None = None
    eval_case_id: str | None = None
    source_session_id: str | None = None
    route: str | None = None
    tags: list[str] | None = None
    parent_session_id: str | None = None

    def merged(self, later: SessionMarks) -> SessionMarks:
        """These marks, completed by those of a later root span of the same session (a resumed run)."""
        return SessionMarks(*(mine if mine is not None else theirs for mine, theirs in zip(
            astuple(self), astuple(later), strict=True)))


def marks_of(attributes: Mapping[str, Any]) -> SessionMarks | None:
    """The marks of a session's root span (or of a turn or chat span: its origin only), or ``None``
    when it has none (the common case, kept cheap)."""
    run_id = attributes.get(A.EVAL_RUN_ID)
    kind = attributes.get(A.REPLAY_KIND)
    route = attributes.get(A.ROUTE) or attributes.get(A.SCENARIO)
    tags = attributes.get(A.TAGS)
    parent = attributes.get(A.PARENT_SESSION_ID)
    if run_id is None and kind is None and route is None and tags is None and parent is None:
        return None
    origin: Origin | None = None
    if run_id is not None:
        origin = "eval"
    elif kind is not None:
        origin = "fork" if kind == "fork" else "replay"
    source = attributes.get(A.REPLAY_SESSION)
    case_id = attributes.get(A.EVAL_CASE_ID)
    if isinstance(tags, str):  # one tag, or a sender that cannot send lists
        tags = [tags]
    return SessionMarks(
        origin=origin, eval_run_id=str(run_id) if run_id is not None else None,
        eval_case_id=str(case_id) if case_id is not None else None,
        source_session_id=str(source) if source is not None and origin in ("replay", "fork") else None,
        route=str(route) if route is not None else None,
        tags=[str(t) for t in tags] if isinstance(tags, (list, tuple)) and tags else None,
        parent_session_id=str(parent) if parent is not None and parent != "" else None)
