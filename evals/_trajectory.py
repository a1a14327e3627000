"""A finished session as scorers see it: the final answer, every tool call, the guards that
fired and what it cost, read back from the trace store."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel

from tracer import NotRebuildableError, Store


class ToolStep(BaseModel):
    """One tool call the agent made."""

    turn: int
    """The turn it belongs to (1-based)."""
    name: str
    """The tool's name."""
    arguments: dict[str, Any]
    """Its arguments (``{}`` when content was not captured)."""
    result: str | None
    """What the tool returned, as text."""
    is_error: bool
    """The call failed (the model was told an error)."""
    start_ns: int
    """When it ran: a resumed session's tool call and decision may share a turn."""


class DecisionStep(BaseModel):
    """One decision: what the model chose at one turn."""

    turn: int
    """The turn (1-based)."""
    action: str | None
    """tool_use | final | handoff | refusal | max_tokens, or ``None`` when every attempt failed."""
    text: str | None
    """The text the model wrote."""
    tools_chosen: list[str]
    """The tools it called, in order."""
    start_ns: int
    """When the call was made."""


class Trajectory(BaseModel):
    """Everything a scorer may look at for one trial of one case."""

    session_id: str
    """The traced session: ``flightrec traces show`` and ``flightrec replay`` open it."""
    status: str
    """How the session ended: ``ok``, ``waiting_human``, ``guard:<name>``, ``error`` …"""
    status_reason: str | None
    """Why, when the agent said."""
    user_messages: list[str]
    """What the customer wrote, in order."""
    final_answer: str | None
    """The agent's last reply that ended a turn (not text written next to a tool call)."""
    decisions: list[DecisionStep]
    """Every decision in order."""
    tool_calls: list[ToolStep]
    """Every tool call in order."""
    guards: list[str]
    """Guards that fired (``max_tool_calls``, ``token_budget``, ``time_limit``, ``circuit_breaker``)."""
    events: list[dict[str, Any]]
    """Every event recorded on the turns (``{"name", "attributes"}``)."""
    turns: int
    """Turns taken."""
    input_tokens: int
    """Input tokens, cached or not."""
    output_tokens: int
    """Output tokens."""
    cost_usd: float | None
    """Cost in USD, ``None`` when a model's price is unknown."""
    latency_ms: float
    """Wall time of the session."""

    @property
    def tool_names(self) -> list[str]:
        """The tools called, in order."""
        return [t.name for t in self.tool_calls]

    def transcript(self) -> str:
        """The whole trajectory as plain text: what an LLM judge reads."""
        lines = [f"Session ended: {self.status}" + (f" ({self.status_reason})" if self.status_reason else "")]
        for text in self.user_messages:
            lines.append(f"CUSTOMER: {text}")
        by_turn: dict[int, list[ToolStep]] = {}
        for t in self.tool_calls:
            by_turn.setdefault(t.turn, []).append(t)
        for d in self.decisions:
            if d.text:
                lines.append(f"AGENT (turn {d.turn}, {d.action or 'failed'}): {d.text}")
            for t in by_turn.get(d.turn, []):
                outcome = "ERROR " if t.is_error else ""
                lines.append(f"TOOL {t.name}({json.dumps(t.arguments, ensure_ascii=False)}) -> {outcome}{t.result}")
        for g in self.guards:
            lines.append(f"GUARD FIRED: {g}")
        return "\n".join(lines)


def trajectory_of(store: Store, session_id: str) -> Trajectory:
    """The trajectory of a recorded session.

    Raises:
        tracer.UnknownSessionError: no such session.
    """
    account = store.session_account(session_id)
    s = account.session
    decisions: list[DecisionStep] = []
    tools: list[ToolStep] = []
    events: list[dict[str, Any]] = []
    last_call: str | None = None
    for turn in account.turns:
        events += turn.events
        ok = [c for c in turn.llm_calls if c.status == "ok"]
        call = ok[-1] if ok else (turn.llm_calls[-1] if turn.llm_calls else None)
        if call is not None:
            decisions.append(DecisionStep(turn=turn.index, action=call.action, text=call.output_text,
                                      tools_chosen=call.tools_chosen, start_ns=call.start_ns))
            if call.status == "ok" and call.content_mode != "none":
                last_call = call.span_id
        for t in turn.tool_calls:
            try:
                args = json.loads(t.arguments) if t.arguments else {}
            except ValueError:
                args = {}
            tools.append(ToolStep(turn=turn.index, name=t.tool_name, arguments=args if isinstance(args, dict) else {},
                                  result=t.result, is_error=t.status != "ok", start_ns=t.start_ns))
    # The customer's words: the plain-text user messages of the last request, which holds them all.
    try:
        messages = store.rebuild_request(last_call).get("messages") or [] if last_call else []
    except NotRebuildableError:
        messages = []
    users = [m["content"] for m in messages if m.get("role") == "user" and isinstance(m.get("content"), str)]
    # An agent that says what its answer was (``evals.agent`` records what ``run`` returned) is taken at its word.
    said = [e["attributes"].get("text") for e in events if e.get("name") == "final_answer" and e.get("attributes")]
    final = said[-1] if said else next((d.text for d in reversed(decisions) if d.text and d.action != "tool_use"),
                                       None)
    guards = [str(e["attributes"]["guard"]) for e in events
              if e.get("name") == "guard_fired" and (e.get("attributes") or {}).get("guard")]
    return Trajectory(
        session_id=s.session_id, status=s.status, status_reason=s.status_reason, user_messages=users,
        final_answer=final, decisions=decisions, tool_calls=tools, guards=guards, events=events, turns=s.turns,
        input_tokens=s.input_tokens + s.cache_read_tokens + s.cache_write_tokens, output_tokens=s.output_tokens,
        cost_usd=s.cost_usd, latency_ms=s.duration_ms,
    )
