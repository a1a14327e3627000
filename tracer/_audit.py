"""The audit log: who acknowledged, resolved, replayed, forked, exported, labelled, pruned or
deleted what, when, and through which interface. ``Store.audit`` appends an entry; nothing in
flightrec updates or deletes one (pruning and session deletion leave the table alone).

The actor is a name, not a login: ``--actor`` or ``$FLIGHTREC_ACTOR`` when given, else the
operating-system user that runs the command (or serve, for the dashboard, which has no login).
The collector's bearer token is one shared secret with no name, so it names no one.
"""

from __future__ import annotations

import getpass
import os
import time
from typing import Any, Literal, get_args

from ._errors import ConfigError
from ._records import AuditEntry

AuditAction = Literal["acknowledge", "resolve", "reopen", "replay", "fork", "export", "label", "prune", "delete",
                      "outcome", "review", "approve", "reject"]
"""What was done. ``export`` is a recorded session's content written out of the store
(``flightrec eval add-case``); ``outcome`` a session's outcome recorded by a person or a program
(``flightrec outcome``), ``review`` a session reviewed or put in the review queue by hand, ``approve``
and ``reject`` a person's decision on an action an agent held for approval (``flightrec agent approve``)."""
AuditVia = Literal["cli", "dashboard", "api"]
"""The interface it came through: a ``flightrec`` command (directly or through serve), the
dashboard, or a program calling ``Store`` (or serve's read/write API) itself."""
AUDIT_ACTIONS: tuple[str, ...] = get_args(AuditAction)
AUDIT_VIAS: tuple[str, ...] = get_args(AuditVia)
ACTOR_ENV = "FLIGHTREC_ACTOR"
ALERT_ACTIONS: dict[str, AuditAction] = {"acknowledged": "acknowledge", "resolved": "resolve", "open": "reopen"}
"""The action that sets an alert to each status."""


def actor_name(given: str | None = None) -> str:
    """Who is acting: ``given`` (``--actor``), else ``$FLIGHTREC_ACTOR``, else the OS user.

    Raises:
        ConfigError: ``given`` is blank.
    """
    if given is not None:
        if not given.strip():
            raise ConfigError("the actor name is empty: pass --actor NAME (or set FLIGHTREC_ACTOR) with the name "
                              "the audit log should record.")
        return given.strip()
    named = os.environ.get(ACTOR_ENV, "").strip()
    if named:
        return named
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # a container user with no passwd entry and no $USER
        return f"uid {os.getuid()}"


def audit_entry(actor: str | None, action: str, target: str, detail: dict[str, Any] | None, via: str,
                ) -> AuditEntry:
    """A new entry, stamped now; ``actor`` None is ``actor_name()``.

    Raises:
        ConfigError: an unknown action or interface, a blank actor, or no target.
    """
    if action not in AUDIT_ACTIONS:
        raise ConfigError(f"unknown audit action {action!r}: use one of {', '.join(AUDIT_ACTIONS)}.")
    if via not in AUDIT_VIAS:
        raise ConfigError(f"unknown audit interface {via!r}: use one of {', '.join(AUDIT_VIAS)}.")
    if not target:
        raise ConfigError(f"an audit entry for {action} needs the id of the object it was done to.")
    return AuditEntry(at_ns=time.time_ns(), actor=actor_name(actor), action=action, target=target, via=via,
                      detail=detail or {})
