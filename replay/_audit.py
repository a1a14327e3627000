"""What the audit log says about a replay, a fork or a re-execution, for every interface that makes one."""

from __future__ import annotations

from typing import Any

from tracer import AuditEntry, AuditVia, ServedStore, Store

from ._records import Edits, ForkResult, RerunResult, RunResult


def audit(store: Store | ServedStore, result: RunResult | ForkResult | RerunResult, *, actor: str | None,
          via: AuditVia, edits: Edits | None = None) -> AuditEntry:
    """Appends the audit entry for a finished replay (``run``, ``rerun``) or ``fork`` of a recorded session.

    The entry names the origin session and what was made of it (the new session, the turn, the
    model, the parts of the request edited), never the edits themselves: the audit log is never
    pruned. ``edits`` are a fork's (a run's result carries its own).

    Raises:
        tracer.ConfigError: a blank ``actor``.
        tracer.StoreError: the write failed.
    """
    if isinstance(result, RerunResult):
        rerun = {"kind": "rerun", "turns_checked": result.turns_checked, "same_path": result.same_path}
        return store.audit(actor, "replay", result.session_id, rerun, via=via)
    edited = (result.edits if isinstance(result, RunResult) else edits or Edits()).model_dump(exclude_defaults=True)
    detail: dict[str, Any] = {"turn": result.origin.turn, "model": result.model, "edited": sorted(edited) or None}
    if isinstance(result, RunResult):
        detail = {"kind": "run", **detail, "trials": len(result.trials), "new_session": result.replay_session_id}
        return store.audit(actor, "replay", result.origin.session_id, detail, via=via)
    detail = {**detail, "new_session": result.session_id, "status": result.status}
    return store.audit(actor, "fork", result.origin.session_id, detail, via=via)
