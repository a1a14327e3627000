"""Deterministic re-execution: run the agent's code again with every model response served from
the recording, and report where its requests first leave the recorded path.

Each request the agent makes is hashed and compared with the recorded decision of the same
position. A request carries the whole conversation so far (tool results included) and the
agent's system prompt, tools and parameters, so a change in the agent's code or in what its
tools return shows up as a changed request; the first one ends the re-execution.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tracer import canonical_json, sha256_hex

from ._diff import diff_context
from ._reconstruct import decisions, open_store, origin_of, rebuild
from ._records import Divergence, Origin, RerunResult

if TYPE_CHECKING:
    import anthropic

RerunAgent = Callable[[Origin, "anthropic.Anthropic", str, dict[str, Any]], None]
"""``(origin, client, workdir, first_request) -> None``: runs the agent's session again against
``client`` (which serves the recording), keeping any files it writes in ``workdir``."""


def reference_rerun(origin: Origin, client: anthropic.Anthropic, workdir: str, first: dict[str, Any]) -> None:
    """Runs the reference agent's session again: its scenario and seed, or its first message."""
    import tracer
    from reference_agent import Agent, RunSpec, World, get_scenario

    recorder = tracer.Recorder(os.path.join(workdir, "rerun.duckdb"))  # the rerun's own trace, thrown away
    try:
        with World(os.path.join(workdir, "rerun.world.sqlite")) as world:
            agent = Agent(world, recorder, client_factory=lambda spec, config: client)
            if origin.scenario:
                agent.run(get_scenario(origin.scenario), seed=origin.seed, misbehave=tuple(origin.misbehave),
                          faults=())
            else:
                text = first["messages"][0]["content"]
                agent.start(text if isinstance(text, str) else json.dumps(text), spec=RunSpec(seed=origin.seed))
    finally:
        recorder.shutdown()


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


def rerun(session_id: str, *, db: str | os.PathLike[str] | None = None,
          agent: RerunAgent = reference_rerun) -> RerunResult:
    """Re-executes a recorded session with every model response served from the recording.

    Args:
        session_id: The recorded session.
        db: The store (read only; the re-execution's own trace goes to a temp dir).
        agent: Runs the agent's code again; the reference agent's by default.

    Raises:
        tracer.UnknownSessionError, NoContentError.
    """
    import anthropic
    import httpx2

    with open_store(db) as store:
        sid, recorded_decisions = decisions(store, session_id)
        origin = origin_of(store, sid)
        steps = []
        for turn, decision in recorded_decisions.items():
            rows = store._query("SELECT response_body FROM llm_calls WHERE span_id = ?", [decision.span_id])
            steps.append((turn, rebuild(store, decision), decision.request_sha256, json.loads(rows[0][0] or "{}")))
    state: dict[str, Any] = {"calls": 0, "divergence": None}

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
        turn, recorded, digest, response = steps[k]
        if sha256_hex(canonical_json(body)) != digest:
            state["divergence"] = Divergence(turn=turn, what=_summary(recorded, body),
                                             expected={"sha256": digest}, actual={"sha256": sha256_hex(
                                                 canonical_json(body))})
            return stop
        return httpx2.Response(200, json=response)

    client = anthropic.Anthropic(api_key="recorded", base_url="http://recording.invalid", max_retries=0,
                                 http_client=httpx2.Client(transport=httpx2.MockTransport(handle)))
    with tempfile.TemporaryDirectory(prefix="flightrec-rerun-") as workdir:
        agent(origin, client, workdir, steps[0][1] if steps else {})
    divergence: Divergence | None = state["divergence"]
    if divergence is None and state["calls"] < len(steps):
        turn = steps[state["calls"]][0]
        divergence = Divergence(turn=turn, what=(f"the agent stopped after {state['calls']} model calls; the recording "
                                                 f"has {len(steps)}"), expected=len(steps), actual=state["calls"])
    return RerunResult(session_id=sid, turns_checked=min(state["calls"], len(steps)),
                       same_path=divergence is None, first_divergence=divergence)
