"""Deterministic re-execution: run the agent's code again with every model response served from
the recording, and report where its requests first leave the recorded path.

Each request the agent makes is hashed and compared with the recorded decision of the same
position. A request carries the whole conversation so far (tool results included) and the
agent's system prompt, tools and parameters, so a change in the agent's code or in what its
tools return shows up as a changed request; the first one ends the re-execution. Retries of the
same request are the client's business and are not served; a recorded attempt that failed with a
different request (a model the agent then fell back from) is served again with its error, so the
agent falls back again.

A session may have several runs (a wait for a human's approval, a crash and a resume, a
follow-up message). The agent's re-execution drives the same runs in order; ``RecordedSession``
tells it what they were.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tracer import Clock, Store, SystemClock, canonical_json, sha256_hex, sse_events

from ._diff import diff_context
from ._errors import ReplayError
from ._reconstruct import Db, decisions, open_store, origin_of, rebuild
from ._records import Divergence, RecordedRun, RecordedSession, RecordedToolResult, RerunResult
from ._registry import AgentRegistration, agent_for, missing_agent

if TYPE_CHECKING:
    import anthropic

class RerunContext:
    """What an agent's re-execution works with.

    Attributes:
        recorded: The recording: origin, runs, first request and tool results.
        client: An ``anthropic.Anthropic`` that serves the recorded responses (streamed or not).
        workdir: A temp dir for anything the re-execution writes; removed afterwards.
        clock: The clock for the agent's wall-clock guards: ``rerun``'s clock plus the recorded wall
            time of the model calls served so far (retries and backoff included). Served calls return
            at once, so an agent that reads this clock stops on a recorded time limit at the same turn.
    """

    def __init__(self, recorded: RecordedSession, client: anthropic.Anthropic, workdir: str, clock: Clock) -> None:
        self.recorded = recorded
        self.client = client
        self.workdir = workdir
        self.clock = clock


class _RecordedTime:
    """A clock plus the recorded model time served so far: what the session's guards saw when it ran."""

    def __init__(self, clock: Clock, model_seconds: Callable[[], float]) -> None:
        self._clock = clock
        self._model_seconds = model_seconds

    def now(self) -> float:
        return self._clock.now() + self._model_seconds()

    def sleep(self, seconds: float) -> None:
        self._clock.sleep(seconds)


RerunAgent = Callable[[RerunContext], None]
"""Runs the agent's session again, run by run, against ``RerunContext.client``."""


def _summary(recorded: dict[str, Any], actual: dict[str, Any]) -> str:
    c = diff_context(recorded, actual)
    parts = []
    if c.system_changed:
        parts.append("the system prompt changed")
    if c.messages_removed or c.messages_added or c.messages_truncated:
        parts.append(f"the messages differ from message {c.messages_common} on")
    if c.tools_added or c.tools_removed:
        parts.append(f"the tools changed (+{', '.join(c.tools_added) or '—'} -{', '.join(c.tools_removed) or '—'})")
    if c.params_changed:
        parts.append("parameters changed: " + ", ".join(f"{k} {a!r} → {b!r}" for k, (a, b) in c.params_changed.items()))
    return "; ".join(parts) or "the request differs (tool definitions' content or message details)"


def _first_difference(recorded: dict[str, Any], actual: dict[str, Any]) -> tuple[Any, Any]:
    """The first differing message (or the whole request's other keys), for the report."""
    for i, (a, b) in enumerate(zip(recorded.get("messages") or [], actual.get("messages") or [])):
        if a != b:
            return {"message": i, **a}, {"message": i, **b}
    keys = sorted(k for k in set(recorded) | set(actual) if k != "messages" and recorded.get(k) != actual.get(k))
    return {k: recorded.get(k) for k in keys}, {k: actual.get(k) for k in keys}


def _runs(store: Store, sid: str) -> list[RecordedRun]:
    notes = [e.get("attributes", {}).get("note") for t in store.session_account(sid).turns for e in t.events
             if e.get("name") == "human_decision"]
    out = []
    for run in store.session_runs(sid):
        how = run.attributes.get("flightrec.run")
        opener = None
        if run.first_call_span_id is not None:
            messages = store.rebuild_request(run.first_call_span_id).get("messages") or []
            users = [m for m in messages if m.get("role") == "user" and isinstance(m.get("content"), str)]
            opener = users[-1]["content"] if users else None
        out.append(RecordedRun(how=how, status=run.attributes.get("flightrec.session.status"),
                               crashed=run.status_code == "ERROR", tool_calls_before_end=run.tool_calls_before_end,
                               opening_message=opener,
                               note=(notes.pop(0) or None) if how in ("approved", "rejected") and notes else None))
    return out


def _tool_results(store: Store, sid: str) -> dict[str, RecordedToolResult]:
    out = {}
    for turn in store.session_account(sid).turns:
        for t in turn.tool_calls:
            if t.tool_call_id:
                out[t.tool_call_id] = RecordedToolResult(
                    name=t.tool_name, arguments=json.loads(t.arguments) if t.arguments else None, content=t.result,
                    is_error=t.status != "ok")
    return out


def rerun(session_id: str, *, db: Db = None, agent: str | AgentRegistration | RerunAgent | None = None,
          clock: Clock | None = None) -> RerunResult:
    """Re-executes a recorded session with every model response served from the recording.

    Args:
        session_id: The recorded session.
        db: The store (read only; the re-execution's own trace goes to a temp dir).
        agent: The session's agent (a registration, or NAME or MODULE:ATTR), whose ``rerun`` part runs
            its code again, or a ``RerunAgent`` function itself; by default the one registered under the
            recorded name.
        clock: The time the re-execution's own steps take (``RerunContext.clock`` adds the recorded
            model time to it); the real clock by default, a ``tracer.testing.FakeClock`` in tests.

    Raises:
        tracer.UnknownSessionError, NoContentError, AgentNotFoundError (no registered agent can re-execute
        the session), ReplayError (the agent cannot take a recorded run).
    """
    import anthropic
    import httpx2

    with open_store(db, through_serve=True) as store:
        sid, recorded_decisions = decisions(store, session_id)
        calls = {c.span_id: c for c in store.call_outlines(sid)}
        first_attempt: dict[int | None, int] = {}
        for c in calls.values():
            first_attempt.setdefault(c.turn_index, c.start_ns)
        # Each step: the turn, its request and hash, the response, and the model's wall time (retries included).
        steps = [(turn, rebuild(store, d), d.request_sha256, calls[d.span_id].response or {},
                  (calls[d.span_id].start_ns - first_attempt[turn]) / 1e9 + d.latency_ms / 1e3)
                 for turn, d in recorded_decisions.items()]
        # A turn's failed attempts whose request differs from its decision's (a model the agent fell back
        # from): the request that got each, so that the agent sees the same failure again.
        failed = {(c.turn_index, c.request_sha256): c for c in calls.values()
                  if c.status != "ok" and c.request_sha256 and c.turn_index in recorded_decisions
                  and c.request_sha256 != recorded_decisions[c.turn_index].request_sha256}
        recorded = RecordedSession(session_id=sid, origin=origin_of(store, sid), runs=_runs(store, sid),
                                   first_request=steps[0][1] if steps else {}, tool_results=_tool_results(store, sid),
                                   user_messages=[m["content"] for m in (steps[-1][1].get("messages") or [] if steps
                                                                         else [])
                                                  if m.get("role") == "user" and isinstance(m.get("content"), str)])
    if callable(agent) and not isinstance(agent, AgentRegistration):
        rerun_agent = agent
    else:
        registered = agent_for(agent, recorded.origin.agent, job="rerun")
        if registered is None or registered.rerun is None:
            raise missing_agent(recorded.origin.agent, job="rerun", instead=(
                "or compare the recording with a new run through `flightrec replay run` or `fork`"))
        rerun_agent = registered.rerun
    state: dict[str, Any] = {"calls": 0, "divergence": None, "model_s": 0.0}

    def handle(request: httpx2.Request) -> httpx2.Response:
        k = state["calls"]
        state["calls"] = k + 1
        body = json.loads(request.content)
        stop = httpx2.Response(400, json={"type": "error", "error": {
            "type": "invalid_request_error", "message": "flightrec rerun: the agent left the recorded path"}})
        if state["divergence"] is not None:
            return stop
        if k >= len(steps):
            state["divergence"] = Divergence(turn=steps[-1][0] + 1 if steps else 1, what=(
                f"the agent made model call {k + 1}; the recording has {len(steps)}"), expected=None,
                actual={"messages": len(body.get("messages") or [])})
            return stop
        turn, expected, digest, response, seconds = steps[k]
        got = sha256_hex(canonical_json(body))
        failure = failed.get((turn, got)) if got != digest else None
        if failure is not None:
            state["calls"] = k  # the decision is still to come
            state["model_s"] += failure.latency_ms / 1e3
            if failure.http_status is None:
                raise httpx2.ReadTimeout("flightrec rerun: the recorded attempt timed out", request=request)
            return httpx2.Response(failure.http_status, json={"type": "error", "error": {
                "type": failure.error_type or "api_error", "message": "flightrec rerun: the recorded attempt failed"}})
        if got != digest:
            was, now = _first_difference(expected, body)
            state["divergence"] = Divergence(turn=turn, what=_summary(expected, body), expected=was, actual=now)
            return stop
        state["model_s"] += seconds
        if body.get("stream"):
            return httpx2.Response(200, headers={"content-type": "text/event-stream"},
                                   content=b"".join(sse_events(response)))
        return httpx2.Response(200, json=response)

    client = anthropic.Anthropic(api_key="recorded", base_url="http://recording.invalid", max_retries=0,
                                 http_client=httpx2.Client(transport=httpx2.MockTransport(handle)))
    with tempfile.TemporaryDirectory(prefix="flightrec-rerun-") as workdir:
        try:
            rerun_agent(RerunContext(recorded, client, workdir,
                                    _RecordedTime(clock or SystemClock(), lambda: state["model_s"])))
        except ReplayError:
            if state["divergence"] is None:
                raise
        except Exception as exc:  # the agent's own code failed: that is where it left the path
            if state["divergence"] is None:
                turn = steps[min(state["calls"], len(steps) - 1)][0] if steps else 1
                state["divergence"] = Divergence(turn=turn, what=f"the agent raised {type(exc).__name__}: {exc}",
                                                 expected=None, actual=None)
    divergence: Divergence | None = state["divergence"]
    if divergence is None and state["calls"] < len(steps):
        turn = steps[state["calls"]][0]
        divergence = Divergence(turn=turn, what=(f"the agent stopped after {state['calls']} model calls; the recording "
                                                 f"has {len(steps)}"), expected=len(steps), actual=state["calls"])
    return RerunResult(session_id=sid, turns_checked=min(state["calls"], len(steps)),
                       same_path=divergence is None, first_divergence=divergence)
