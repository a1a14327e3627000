"""Counterfactual re-runs: send one rebuilt request again, edited, and record what comes back."""

from __future__ import annotations

from typing import Any

import tracer
from tracer import canonical_json, sha256_hex

from ._edits import apply_edits
from ._errors import NoModelError, ReplayError
from ._model import ClientFactory, ModelChoice, choose_model, send
from ._reconstruct import REPLAY_OF, Db, db_path, decisions, open_store, reconstruct_in
from ._records import Decision, Edits, Origin, Reconstruction, RunResult
from ._registry import AgentRegistration, agent_for
from ._semconv import check_complete


def model_for(origin: Origin, agent: str | AgentRegistration | None, *, model_url: str | None, real: bool,
              client_factory: ClientFactory | None, job: str) -> ModelChoice:
    """``choose_model`` for a re-run; the registry is read only when no model is named or ``agent`` is given."""
    named = client_factory is not None or bool(model_url) or real
    registered = agent_for(agent, origin.agent, job=job) if agent is not None or not named else None
    return choose_model(origin, agent=registered, model_url=model_url, real=real, client_factory=client_factory)


def model_for_reconstruction(rec: Reconstruction, agent: str | AgentRegistration | None, *, model_url: str | None,
                             real: bool, client_factory: ClientFactory | None, job: str) -> ModelChoice:
    """``model_for`` the origin of a re-run; for a call recorded by other instrumentation, which no
    registered agent answers for, the error says to name a model."""
    try:
        return model_for(rec.origin, agent, model_url=model_url, real=real, client_factory=client_factory, job=job)
    except NoModelError:
        if rec.reconstructed_from is None:
            raise
        raise NoModelError(
            f"no model to ask: session {rec.session_id} was recorded by other instrumentation "
            f"({rec.reconstructed_from}), and no registered agent answers for it. Name one with --model-url URL "
            "(any Messages-API-compatible endpoint) or --real (with ANTHROPIC_API_KEY).") from None


def replay_attributes(origin_session: str, origin_span: str, turn: int, kind: str, model: ModelChoice,
                      origin: Origin, edits: Edits, *, reconstructed_from: str | None = None) -> dict[str, Any]:
    """The session attributes that link a replay to its origin and say which model answered."""
    attributes: dict[str, Any] = {
        REPLAY_OF: f"{origin_session}:{origin_span}", "flightrec.replay.session": origin_session,
        "flightrec.replay.span_id": origin_span, "flightrec.replay.turn": turn, "flightrec.replay.kind": kind,
        "flightrec.model_target": model.target, "flightrec.model": model.label, "flightrec.seed": origin.seed,
        "flightrec.replay.edits": edits.model_dump_json(exclude_defaults=True),
    }
    if origin.scenario:
        attributes["flightrec.scenario"] = origin.scenario
    if reconstructed_from:
        # The origin's request was not the exact one sent: the replay says so wherever it is shown.
        attributes["flightrec.replay.reconstructed_from"] = reconstructed_from
    return attributes


def run(session_id: str, turn: int, edits: Edits | None = None, *, trials: int = 1, db: Db = None,
        model_url: str | None = None, real: bool = False, agent: str | AgentRegistration | None = None,
        client_factory: ClientFactory | None = None) -> RunResult:
    """Re-sends the request of one decision, edited, ``trials`` times, and records the results.

    The re-runs are recorded as one new session (trial k is its turn k) whose session span
    carries ``flightrec.replay.of`` = ``ORIGIN_SESSION:ORIGIN_SPAN`` and says which model answered
    (chosen as ``choose_model`` says). Trial k's client is made with the recorded seed plus k, so a
    seeded model (the reference agent's simulator) varies per trial, reproducibly.

    A call recorded by other instrumentation is re-sent as ``reconstruct`` reconstructs it from
    semantic conventions, and the result says so (``reconstructed_from``, ``notes``).

    Args:
        session_id: The recorded session (a unique prefix of 8+ characters works).
        turn: The turn whose decision to re-run.
        edits: What to change in the request; none re-sends it as recorded.
        trials: How many times to send it.
        db: The store; the replay is recorded into it too.
        model_url: A Messages-API-compatible endpoint to ask.
        real: Ask the real Anthropic API (needs ANTHROPIC_API_KEY).
        agent: The session's agent (a registration, or NAME or MODULE:ATTR); by default the one
            registered under the recorded name. Its model answers when none is named.
        client_factory: Makes the client per trial; overrides the rest.

    Raises:
        tracer.UnknownSessionError, UnknownTurnError, NoContentError (IncompleteRequestError: a reconstructed
        request lacks model or max_tokens and the edits do not set it), EditError, ModelUnreachableError,
        NoModelError, AgentNotFoundError.

    Blocking: opens the store, then records into it; no other process may be writing it.
    """
    if trials < 1:
        raise ReplayError(f"--trials must be at least 1, not {trials}.")
    edits = edits or Edits()
    with open_store(db) as store:
        rec = reconstruct_in(store, session_id, turn)
    body = apply_edits(rec.request, edits)
    check_complete(rec, body)
    model = model_for_reconstruction(rec, agent, model_url=model_url, real=real, client_factory=client_factory,
                                     job="replay run")
    recorder = tracer.Recorder(db_path(db))
    failure: BaseException | None = None
    try:
        origin_link = [(rec.decision.trace_id, rec.span_id)]  # an OpenTelemetry span link to the origin
        with recorder.session(rec.origin.agent or "agent", links=origin_link, **replay_attributes(
                rec.session_id, rec.span_id, turn, "run", model, rec.origin, edits,
                reconstructed_from=rec.reconstructed_from)) as session:
            for k in range(trials):
                client = recorder.instrument(model.factory(rec.origin, rec.origin.seed + k))
                with session.turn():
                    try:
                        send(client, body, where=model.label, betas=rec.betas)
                    except ReplayError as exc:
                        failure = exc
                        session.set_status("error", str(exc))
                        break
    finally:
        recorder.shutdown()
    if failure is not None:
        raise failure
    with open_store(db) as store:
        trial_decisions: list[Decision] = list(decisions(store, session.id)[1].values())
    changed = sum(1 for d in trial_decisions if d.choice() != rec.decision.choice())
    return RunResult(origin=rec.decision, replay_session_id=session.id, model_target=model.target, model=model.label,
                     edits=edits, request_sha256=sha256_hex(canonical_json(body)), trials=trial_decisions,
                     changed=changed, reconstructed_from=rec.reconstructed_from, notes=rec.notes)
