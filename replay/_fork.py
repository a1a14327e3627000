"""Forks: carry a session on from one turn, with an edited context.

The loop is the Messages API tool-use loop, run by replay itself so that any agent can be
forked. Tool calls that match the recording (same tool, same canonical arguments) are answered
from it, in recorded order, so no side effect happens twice. The rest depends on ``tools``:

- ``recorded``: no agent code runs. The first call the recording lacks stops the fork there, with
  the call in the reason (nothing is faked), and the user's side is the recorded user messages.
- ``live``: the session's registered agent (its ``ForkAgentFactory``) runs the other calls and says
  what the user says next. A session whose agent is not registered is refused, never handed to
  another agent's tools. The agent's own guards (its loop guard, tool-call and token budgets) are
  asked before every model call and every tool call, served or live, counting from the start of
  the origin session, so that a fork stops where production would have stopped.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Literal, NoReturn, Protocol

import tracer
from tracer import canonical_json

from ._edits import apply_edits
from ._errors import ReplayError
from ._model import ClientFactory, send
from ._reconstruct import Db, db_path, decisions, open_store, reconstruct_in
from ._records import Decision, Edits, ForkResult, Origin
from ._registry import AgentRegistration, agent_for, missing_agent
from ._run import model_for_reconstruction, replay_attributes
from ._semconv import check_complete

ToolsMode = Literal["live", "recorded"]
_MAX_TURNS = 30


@dataclass(frozen=True)
class ToolReply:
    """What one live tool call told the model."""

    content: str
    """The ``tool_result`` content."""
    is_error: bool = False
    """The call failed."""
    stop: str | None = None
    """A status to stop the fork with after this call (``waiting_human`` …), or ``None``."""


@dataclass(frozen=True)
class ForkProgress:
    """Where a fork stands, counted as the agent's own guards count: from the start of the origin
    session, its turns before the fork point included."""

    messages: list[dict[str, Any]]
    """The conversation as the model sees it, tool results of the current turn so far included."""
    tool_calls: int
    """Tool calls made in the session so far."""
    tokens: int
    """Tokens used so far: input (cached or not) plus output, of every answered model call."""
    seconds: float
    """Time spent in model and tool calls so far."""


@dataclass(frozen=True)
class GuardFired:
    """A guard of the agent's that stops the fork, recorded as production records it: a
    ``guard_fired`` event on the turn and the status ``guard:<guard>``."""

    guard: str
    """Its name (``loop``, ``max_tool_calls``, ``token_budget`` …)."""
    reason: str
    """Why, in words."""
    limit: float = 0
    """The limit it enforces."""
    value: float = 0
    """The value that went over it."""


class ForkAgent(Protocol):
    """One fork's agent-specific parts, made by a ``ForkAgentFactory``."""

    def guard(self, progress: ForkProgress, name: str | None, arguments: Any) -> GuardFired | None:
        """The guard that stops the session here, as the agent's own loop would stop it: before the
        next model call (``name`` is ``None``), or before the tool call ``name(arguments)`` runs.
        ``None`` to go on; an agent without guards always answers ``None``."""
        ...

    def run_tool(self, name: str, arguments: dict[str, Any], tool_use_id: str) -> ToolReply:
        """Runs a tool call live (one the recording does not have)."""
        ...

    def follow_up(self, reply: str, recorded: list[str]) -> str | None:
        """The user's next message after the model ends its turn with ``reply``, or ``None`` to end.

        ``recorded`` holds the user messages that came after the fork point in the recording;
        take from it (it is the fork's own list) to replay the user's side."""
        ...

    def close(self) -> None:
        """Releases what the agent holds (files, connections)."""
        ...


class ForkAgentFactory(Protocol):
    """Makes the agent side of a fork: the seam through which replay forks any agent."""

    def __call__(self, *, session_id: str, origin: Origin, db: str) -> ForkAgent:
        """The agent for the fork session ``session_id`` of a session that ran as ``origin``."""
        ...


class _RecordedUser:
    """The user's side of a fork that runs no agent code: the recorded user messages, in order.
    It has no guards; the fork stops at the first call the recording lacks instead."""

    def guard(self, progress: ForkProgress, name: str | None, arguments: Any) -> GuardFired | None:
        return None

    def follow_up(self, reply: str, recorded: list[str]) -> str | None:
        return recorded.pop(0) if recorded else None

    def close(self) -> None:
        pass


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "\n".join(b.get("text", "") for b in content or () if isinstance(b, dict) and b.get("type") == "text")


def _block(block: Any) -> dict[str, Any]:
    """A response block as it goes back in the next request."""
    if block.type == "text":
        return {"type": "text", "text": block.text}
    if block.type == "tool_use":
        return {"type": "tool_use", "id": block.id, "name": block.name, "input": block.input}
    dumped: dict[str, Any] = block.model_dump(exclude_none=True)
    return dumped


def _call_key(name: str, arguments: Any) -> str:
    return f"{name}|{canonical_json(arguments)}"


def fork(session_id: str, turn: int, edits: Edits | None = None, *, tools: ToolsMode = "live",
         agent: str | AgentRegistration | None = None, db: Db = None, model_url: str | None = None,
         real: bool = False, client_factory: ClientFactory | None = None, max_turns: int = _MAX_TURNS) -> ForkResult:
    """Carries a session on from ``turn`` with an edited context, as a new session linked to it.

    The fork's first decision is the edited request of ``turn``; its turns are numbered on from
    there, so that ``diff ORIGIN FORK`` aligns them. Tool calls that match the recording are
    answered from it; others go to the agent's live tools, or, with ``tools="recorded"``, end the
    fork with status ``stopped`` and the reason. The model is chosen as for ``run``.

    Args:
        agent: The session's agent (a registration, or NAME or MODULE:ATTR); by default the one
            registered under the recorded name. ``tools="live"`` needs one with a ``fork`` part.

    Raises:
        tracer.UnknownSessionError, UnknownTurnError, NoContentError, EditError, ModelUnreachableError,
        NoModelError, AgentNotFoundError (``live`` with no registered agent for the session).

    Blocking: records into the store; no other process may be writing it.
    """
    edits = edits or Edits()
    path = db_path(db)
    with open_store(db) as store:
        rec = reconstruct_in(store, session_id, turn)
        account = store.session_account(rec.session_id)
        last_turn = max(decisions(store, rec.session_id)[1])
        last = reconstruct_in(store, rec.session_id, last_turn).request if last_turn != turn else rec.request
    recorded = _recorded_replies(account, last)
    start = len(rec.request.get("messages") or [])
    user_said = [_text(m["content"]) for m in (last.get("messages") or [])[start:]
                 if m.get("role") == "user" and _text(m.get("content"))]
    body = apply_edits(rec.request, edits)
    check_complete(rec, body)
    registered: AgentRegistration | None = None
    if tools == "live":
        registered = agent_for(agent, rec.origin.agent, job="a fork with live tools")
        if registered is None or registered.fork is None:
            raise missing_agent(rec.origin.agent, job="a fork with live tools", instead=(
                "or fork with --tools recorded, which serves the recorded tool results and stops at the first call "
                "the recording lacks"))
    model = model_for_reconstruction(rec, registered or agent, model_url=model_url, real=real,
                                     client_factory=client_factory, job="a fork")

    spent = _Spent.before(account, turn)
    recorder = tracer.Recorder(path)
    live_agent: ForkAgent | _RecordedUser | None = None
    failure: BaseException | None = None
    try:
        origin_link = [(rec.decision.trace_id, rec.span_id)]  # an OpenTelemetry span link to the origin
        with recorder.session(rec.origin.agent or "agent", links=origin_link, **replay_attributes(
                rec.session_id, rec.span_id, turn, "fork", model, rec.origin, edits,
                reconstructed_from=rec.reconstructed_from)) as session:
            live_agent = registered.fork(session_id=session.id, origin=rec.origin, db=path) \
                if registered is not None and registered.fork is not None else _RecordedUser()
            client = recorder.instrument(model.factory(rec.origin, rec.origin.seed))
            session.turn_index = turn - 1  # the fork's turns carry on the origin's numbering
            messages = list(body.get("messages") or [])
            params = {k: v for k, v in body.items() if k != "messages"}
            run = _Run(session, live_agent, recorded, spent, reason=f"the fork reached {max_turns} turns")
            try:
                for _ in range(max_turns):
                    with session.turn():
                        run.guard(messages)
                        reply = send(client, {**params, "messages": messages}, where=model.label, betas=rec.betas)
                        spent.tokens += _usage_tokens(reply.usage)
                        content = [_block(b) for b in reply.content] or [{"type": "text", "text": "…"}]
                        messages.append({"role": "assistant", "content": content})
                        uses = [b for b in content if b.get("type") == "tool_use"]
                        if uses:
                            run.answer_tools(messages, uses)
                            continue
                        if reply.stop_reason == "max_tokens":
                            run.stop("max_tokens", "the model ran out of output tokens")
                        said = live_agent.follow_up(_text(content), user_said)
                        if said is None:
                            run.stop("ok", "the model ended its turn and the user has nothing more to say")
                        messages.append({"role": "user", "content": said})
            except _Stop:
                pass
            except ReplayError as exc:
                failure = exc
                run.status, run.reason = "error", str(exc)
            session.set_status(run.status, run.reason)
    finally:
        if live_agent is not None:
            live_agent.close()
        recorder.shutdown()
    if failure is not None:
        raise failure
    with open_store(db) as store:
        fork_decisions: list[Decision] = list(decisions(store, session.id)[1].values())
    return ForkResult(session_id=session.id, origin=rec.decision, status=run.status, reason=run.reason,
                      model_target=model.target, model=model.label,
                      agent=registered.name if registered is not None else None,
                      decisions=fork_decisions, recorded_tool_calls=run.served, live_tool_calls=run.live,
                      reconstructed_from=rec.reconstructed_from, notes=rec.notes)


def _recorded_replies(account: tracer.SessionAccount, last: dict[str, Any]) -> dict[str, list[ToolReply]]:
    """The origin's tool answers by call (``_call_key``), in recorded order, to serve again.

    ``last`` is the origin's last request: a call it holds no result for is where the origin stopped.
    """
    answered = {b.get("tool_use_id") for m in last.get("messages") or () if isinstance(m.get("content"), list)
                for b in m["content"] if isinstance(b, dict) and b.get("type") == "tool_result"}
    calls = [c for t in account.turns for c in t.tool_calls]
    summary = account.session
    recorded: dict[str, list[ToolReply]] = {}
    for i, c in enumerate(calls):
        args = json.loads(c.arguments) if c.arguments else None
        # The origin's last call, never shown to the model, is where the origin stopped (waiting for
        # a human, a guard): a fork that reaches the same call stops there too.
        stopped_here = (i == len(calls) - 1 and c.tool_call_id not in answered
                        and summary.status not in ("ok", "running"))
        recorded.setdefault(_call_key(c.tool_name, args), []).append(
            ToolReply(c.result or "", c.status != "ok", summary.status if stopped_here else None))
    return recorded


class _Stop(Exception):
    """Ends the fork's loop; ``_Run.status`` and ``_Run.reason`` say why."""


@dataclass
class _Spent:
    """What the session has spent so far, as ``ForkProgress`` counts it."""

    tool_calls: int
    tokens: int
    seconds: float
    started: float = field(default_factory=time.monotonic)

    @classmethod
    def before(cls, account: tracer.SessionAccount, turn: int) -> _Spent:
        """What the origin spent before ``turn``, the fork point: the fork's budgets count from the origin's start."""
        before = [t for t in account.turns if t.index < turn]
        return cls(tool_calls=sum(len(t.tool_calls) for t in before),
                   tokens=sum(_tokens(c) for t in before for c in t.llm_calls if c.status == "ok"),
                   seconds=sum(c.latency_ms for t in before for c in [*t.llm_calls, *t.tool_calls]) / 1000)

    def progress(self, messages: list[dict[str, Any]]) -> ForkProgress:
        return ForkProgress(messages=messages, tool_calls=self.tool_calls, tokens=self.tokens,
                            seconds=self.seconds + time.monotonic() - self.started)


@dataclass
class _Run:
    """One fork's tool-use loop as it goes: the agent's guards, the tool calls answered from the
    recording or by the agent, and why the loop stopped."""

    session: tracer.Session
    agent: ForkAgent | _RecordedUser
    recorded: dict[str, list[ToolReply]]
    """The origin's answers not served yet, by ``_call_key``."""
    spent: _Spent
    reason: str
    status: str = "max_turns"
    served: int = 0
    """Tool calls answered from the recording."""
    live: int = 0
    """Tool calls the agent ran."""

    def stop(self, status: str, reason: str) -> NoReturn:
        self.status, self.reason = status, reason
        raise _Stop

    def guard(self, so_far: list[dict[str, Any]], name: str | None = None, arguments: Any = None) -> None:
        """Stops the fork where the agent's own guards would stop the session."""
        fired = self.agent.guard(self.spent.progress(so_far), name, arguments)
        if fired is not None:
            self.session.event("guard_fired", guard=fired.guard, reason=fired.reason, limit=fired.limit,
                               value=fired.value)
            self.stop(f"guard:{fired.guard}", fired.reason)

    def answer_tools(self, messages: list[dict[str, Any]], uses: list[dict[str, Any]]) -> None:
        """Answers the model's tool calls in one user message, each asked of the guards first; stops
        the fork when an answer ends the session."""
        results: list[dict[str, Any]] = []
        stop: str | None = None
        for use in uses:
            self.guard([*messages, {"role": "user", "content": results}] if results else messages,
                       use["name"], use["input"])
            self.spent.tool_calls += 1
            with self.session.tool_call(use["name"], use["input"], call_id=use["id"]) as call:
                answer = self._answer(use, call)
                if answer.is_error:
                    call.set_error(answer.content[:200], result=answer.content)
                else:
                    call.set_result(answer.content)
            block: dict[str, Any] = {"type": "tool_result", "tool_use_id": use["id"], "content": answer.content}
            if answer.is_error:
                block["is_error"] = True
            results.append(block)
            stop = stop or answer.stop
        messages.append({"role": "user", "content": results})
        if stop:
            self.stop(stop, f"the {uses[-1]['name']} call stopped the session ({stop})")

    def _answer(self, use: dict[str, Any], call: tracer.ToolCall) -> ToolReply:
        """The recorded answer to the same call, else the agent's; with no agent, the fork stops here."""
        key = _call_key(use["name"], use["input"])
        if self.recorded.get(key):
            self.served += 1
            self.session.event("tool_result_replayed", tool=use["name"], call_id=use["id"])
            return self.recorded[key].pop(0)
        if isinstance(self.agent, _RecordedUser):
            call.set_error("not in the recording", error_type="not_recorded")
            self.stop("stopped", f"the model asked for {use['name']}({canonical_json(use['input'])}), which the "
                      "recording does not have; nothing was faked. Fork with --tools live and the agent's "
                      "registration to run it")
        answer = self.agent.run_tool(use["name"], use["input"], use["id"])
        self.live += 1
        return answer


def _tokens(call: tracer.LlmCall) -> int:
    return ((call.input_tokens or 0) + (call.cache_read_tokens or 0) + (call.cache_write_tokens or 0)
            + (call.output_tokens or 0))


def _usage_tokens(usage: Any) -> int:
    """An API reply's tokens, counted as ``_tokens`` counts a recorded call's."""
    return (usage.input_tokens + (getattr(usage, "cache_read_input_tokens", None) or 0)
            + (getattr(usage, "cache_creation_input_tokens", None) or 0) + usage.output_tokens)
