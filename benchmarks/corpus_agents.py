"""Six small agents, unlike the reference support agent, with scripted models, for the detector corpus.

Each agent is an ``Episode`` subclass: one session of it holds the agent's system prompt and
tools, its tools' world (seeded state: a job, a dataset, a flaky bank API …) and its scripted
model, a ``tracer.testing.FakeModel`` policy: a function of the request body, it reads the
conversation so far (which tools were called and what they returned) and decides the next turn,
and it reports ``usage`` measured from the request it got (about 4 bytes a token), so input
tokens grow with the conversation.
The agent loop itself is the plain tool-use loop of the README, recorded through flightrec's
public API (``Recorder.instrument``, ``Recorder.session``, ``Session.tool_call``).

The agents and their routes (the ``flightrec.route`` session attribute):

- ``jobrunner``: submits a data job and polls ``get_job_status`` until it ends (export, training,
  backfill, reindex).
- ``crm_export``: lists records page by page, by cursor or page number (contacts_export,
  overdue_invoices, activity_digest).
- ``payments``: calls a flaky bank API that times out or answers 5xx, and retries (daily_reconcile,
  fx_payout, chargeback_review).
- ``parcels``: looks many distinct parcels or SKUs up, most sharing one answer (bulk_status,
  stock_check, carrier_digest).
- ``research``: long web research with prompt caching on expensive models (market_brief,
  due_diligence, literature_review, board_pack).
- ``scheduler``: finds free slots in calendars and books meetings (book_1on1, team_sync,
  offsite_planning).

What a session does is set by its *kind* (``KINDS`` gives each kind's labels). ``clean`` is the
ordinary session. Hard negatives look suspicious but are fine: ``poll_progress`` (a long poll
whose progress rises), ``poll_running`` (3-8 identical "running" answers, then done),
``retry_then_ok`` (2-4 failures, then success), ``many_pages``, ``shared_answer`` (many distinct
entities with the same answer), ``date_scan`` (3-6 empty days scanned forward), ``costly_legit``
(the expensive mode or tail of a route that has it) and ``expensive_route`` (a route where every
session is costly). Loops: ``loop_same``, ``loop_volatile`` (same call, same answer but for a
fresh request id or timestamp), ``loop_same_error``, ``loop_nudged`` (arguments reformatted,
shifted by a day or a page size nudged, with no new answer), ``loop_paraphrase``,
``loop_cycle`` (2-3 calls repeated) and ``poll_stuck`` (40-60 polls of a job that never moves).
Cost: ``runaway_context``, ``model_switch``, ``token_blowup``, ``cold_start_spike`` (one of those
in the 4th session of a new route) and ``drift`` (a route whose cost grows 5% a session).
Steps: ``wander`` (3x or more the route's usual tool calls, all distinct).
"""

from __future__ import annotations

import datetime as dt
import json
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from _workload import request_bytes

import tracer
from tracer.testing import FakeModel, reply, text, tool_use


@dataclass(frozen=True)
class Labels:
    """What each detector family should say about a session; ``None`` leaves it out of that family's score."""

    loops: bool
    cost: bool | None
    steps: bool | None


_NEG = Labels(False, False, False)
# Repeating calls also costs more and takes more steps; the loop is what should be reported.
_LOOP = Labels(True, None, None)
_COST = Labels(False, True, False)
# More steps cost more: the wandering is what should be reported.
_STEPS = Labels(False, None, True)
# Legitimately long sessions: not loops and not wandering, but whether their extra cost (which
# grows with the square of the length, every turn re-sending the history) deserves a cost alert
# is a judgement call, so they are left out of the cost score.
_LONG = Labels(False, None, False)

KINDS: dict[str, Labels] = {
    "clean": _NEG,
    "poll_progress": _LONG, "poll_running": _NEG, "retry_then_ok": _NEG, "many_pages": _LONG,
    "shared_answer": _NEG, "date_scan": _NEG, "costly_legit": _NEG, "expensive_route": _NEG,
    "loop_same": _LOOP, "loop_volatile": _LOOP, "loop_same_error": _LOOP, "loop_nudged": _LOOP,
    "loop_paraphrase": _LOOP, "loop_cycle": _LOOP, "poll_stuck": _LOOP,
    "runaway_context": _COST, "model_switch": _COST, "token_blowup": _COST, "cold_start_spike": _COST,
    "drift": _COST,
    "wander": _STEPS,
}
HARD_NEGATIVES = frozenset({"poll_progress", "poll_running", "retry_then_ok", "many_pages", "shared_answer",
                            "date_scan", "costly_legit", "expensive_route"})


@dataclass(frozen=True)
class Spec:
    """One planned session."""

    agent: str
    route: str
    kind: str
    index: int
    """Its position in its route's sequence."""
    seed: int
    drift: float = 1.0
    """How much costlier than the route's start a ``drift`` session is meant to be."""

    @property
    def key(self) -> str:
        """A name that is the same in every build of the same seed (session ids are not)."""
        return f"{self.agent}/{self.route}/{self.index:03d}"

    def labels(self) -> Labels:
        if self.kind == "drift":
            # Below twice the starting cost, a drift is not yet an anomaly nor clean: left out.
            return Labels(False, True if self.drift >= 2 else None, False)
        return KINDS[self.kind]


@dataclass(frozen=True)
class Call:
    """A tool call the conversation shows, with what it returned."""

    name: str
    input: dict[str, Any]
    result: Any
    error: bool


@dataclass(frozen=True)
class Turn:
    """The scripted model's decision: its text, and the tools it asks for (none: a final answer)."""

    text: str
    uses: tuple[tuple[str, dict[str, Any]], ...] = ()
    stop: str | None = None
    """The stop reason when it is not implied (``max_tokens`` for a blow-up)."""


class ToolFailure(Exception):
    """A tool call that failed; ``payload`` is what the model is told."""

    def __init__(self, error_type: str, message: str, payload: dict[str, Any]) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.payload = payload


_WORDS = (
    "the a of to and in for on with by from at as is was are be has have will can should not also then so "
    "result results data job export rows table query status running finished queue worker progress stage "
    "invoice contact account customer record page cursor total balance payment payout statement ledger "
    "currency rate parcel tracking delivered carrier warehouse stock sku order update report summary "
    "market company revenue growth margin risk competitor source study paper evidence finding method "
    "sample analysis trend segment share pricing regulation filing board quarter forecast meeting slot "
    "calendar room attendee week morning afternoon available conflict agenda checked found next first "
    "last still already again because however therefore likely unclear confirmed pending missing"
).split()

_START = dt.datetime(2026, 11, 2, 8, 0, tzinfo=dt.UTC)


def prose(rng: random.Random, n_words: int) -> str:
    return " ".join(rng.choices(_WORDS, k=n_words))


def tool_def(name: str, description: str, **params: str) -> dict[str, Any]:
    """A tool definition; ``params`` maps each parameter to its JSON type (a ``?`` suffix: optional)."""
    props = {k: {"type": v.rstrip("?")} for k, v in params.items()}
    required = [k for k, v in params.items() if not v.endswith("?")]
    return {"name": name, "description": description,
            "input_schema": {"type": "object", "properties": props, "required": required}}


def conversation(body: dict[str, Any]) -> list[Call]:
    """The tool calls of a request's messages, in order, each with its result."""
    uses: dict[str, dict[str, Any]] = {}
    calls = []
    for message in body["messages"]:
        if isinstance(message["content"], str):
            continue
        for block in message["content"]:
            if block["type"] == "tool_use":
                uses[block["id"]] = block
            elif block["type"] == "tool_result":
                use = uses[block["tool_use_id"]]
                calls.append(Call(use["name"], use["input"], json.loads(block["content"]),
                                  bool(block.get("is_error"))))
    return calls


class Episode:
    """One session of an agent: its task, its tools' world and its scripted model.

    Subclasses set the class attributes, draw the session's world in ``setup`` from ``self.rng``,
    and implement ``task``, ``decide`` and one ``tool_<name>`` method per tool.
    """

    agent: ClassVar[str]
    system: ClassVar[str]
    tools: ClassVar[list[dict[str, Any]]]
    models: ClassVar[dict[str, str]]
    """The model of each route."""
    max_tokens: ClassVar[int] = 16_000
    cache: ClassVar[bool] = False
    """Whether the agent marks its prompt for caching (the model then reports cache reads and writes)."""
    max_turns: ClassVar[int] = 120

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self.kind = spec.kind
        self.route = spec.route
        # A string seed is hashed with SHA-512: the same in every process, unlike hash().
        self.rng = random.Random(f"{spec.seed}/{spec.key}")
        self.clock = _START + dt.timedelta(minutes=37 * spec.index + self.rng.randint(0, 30))
        self.model = self.models[spec.route]
        self.blowup = False
        """Whether the final answer runs away until ``max_tokens``."""
        self.setup()

    def setup(self) -> None:
        """Draws the session's world and plan."""

    def task(self) -> str:
        raise NotImplementedError

    def decide(self, calls: list[Call]) -> Turn:
        raise NotImplementedError

    def system_prompt(self) -> str:
        return self.system

    # -- helpers for subclasses -----------------------------------------------------------------

    def say(self, n_words: int, *uses: tuple[str, dict[str, Any]]) -> Turn:
        return Turn(prose(self.rng, n_words), uses)

    def final(self, n_words: int) -> Turn:
        if self.blowup:
            # Degenerate output: the model repeats its table until it hits max_tokens.
            return Turn(prose(self.rng, int(self.max_tokens * 0.75)), stop="max_tokens")
        return Turn(prose(self.rng, n_words))

    def request_id(self) -> str:
        return f"req_{self.rng.getrandbits(64):016x}"

    def uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def now(self, advance_s: float = 0.0) -> str:
        self.clock += dt.timedelta(seconds=advance_s)
        return self.clock.isoformat(timespec="seconds").replace("+00:00", "Z")

    # -- the fake Messages API ------------------------------------------------------------------

    def respond(self, body: dict[str, Any]) -> dict[str, Any]:
        """The scripted model, a ``FakeModel`` policy: the next turn for this conversation."""
        turn = self.decide(conversation(body))
        content: list[dict[str, Any]] = [text(turn.text)]
        for name, tool_input in turn.uses:
            content.append(tool_use(name, tool_input, id=f"toolu_{self.rng.getrandbits(80):020x}"))
        stop = turn.stop or ("tool_use" if turn.uses else "end_turn")
        output = len(json.dumps(content)) // 4 + self.rng.randint(5, 60)
        if stop == "max_tokens":
            output = self.max_tokens
        message = reply(*content, stop_reason=stop, model=body["model"], output_tokens=output,
                        **self._input_usage(request_bytes(body), body))
        return {**message, "id": f"msg_{self.rng.getrandbits(80):020x}"}

    def _input_usage(self, n_bytes: int, body: dict[str, Any]) -> dict[str, int]:
        prompt = n_bytes // 4
        if not self.cache:
            return {"input_tokens": prompt, "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0}
        # The breakpoint is on the last message: what came before it was written by the previous turn.
        last = len(json.dumps(body["messages"][-1])) // 4
        read = 0 if len(body["messages"]) == 1 else prompt - last
        return {"input_tokens": 3, "cache_read_input_tokens": read, "cache_creation_input_tokens": prompt - read - 3}

    def run_tool(self, name: str, tool_input: dict[str, Any]) -> Any:
        method: Callable[..., Any] = getattr(self, f"tool_{name}")
        return method(**tool_input)


def run_session(recorder: tracer.Recorder, spec: Spec) -> str:
    """Plays one session through the instrumented client; returns its session id.

    Blocking; safe to call from several threads at once (each call has its own client and model).
    """
    ep = EPISODES[spec.agent](spec)
    client = recorder.instrument(FakeModel(policy=ep.respond).client(api_key="offline", max_retries=0))
    system: Any = ep.system_prompt()
    if ep.cache:
        system = [{"type": "text", "text": system, "cache_control": {"type": "ephemeral"}}]
    messages: list[dict[str, Any]] = [{"role": "user", "content": ep.task()}]
    with recorder.session(agent=ep.agent, **{"flightrec.route": spec.route}) as session:
        for _ in range(ep.max_turns):
            reply = client.messages.create(model=ep.model, max_tokens=ep.max_tokens, system=system,
                                           messages=_cached(messages) if ep.cache else messages, tools=ep.tools)
            messages.append({"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in reply.content]})
            if reply.stop_reason != "tool_use":
                break
            results = []
            for block in reply.content:
                if block.type != "tool_use":
                    continue
                with session.tool_call(block.name, block.input, call_id=block.id) as call:
                    try:
                        out, failed = ep.run_tool(block.name, dict(block.input)), False
                        call.set_result(out)
                    except ToolFailure as failure:
                        out, failed = failure.payload, True
                        call.set_error(str(failure), error_type=failure.error_type, result=out)
                results.append({"type": "tool_result", "tool_use_id": block.id, "content": json.dumps(out),
                                **({"is_error": True} if failed else {})})
            messages.append({"role": "user", "content": results})
    return session.id


def _cached(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The messages with a cache breakpoint on the last block, as a caching agent sends them."""
    last = messages[-1]
    blocks = [{"type": "text", "text": last["content"]}] if isinstance(last["content"], str) else list(last["content"])
    blocks[-1] = {**blocks[-1], "cache_control": {"type": "ephemeral"}}
    return [*messages[:-1], {"role": last["role"], "content": blocks}]


# -- 1. the job-polling agent ----------------------------------------------------------------------


class JobRunner(Episode):
    """Runs data jobs for analysts: submits one, polls its status until it ends, fetches the result.

    ``export`` jobs are quick CSV exports (0-3 polls); ``training`` jobs report a progress that
    rises over 6-14 polls (18-35 for ``poll_progress``); ``backfill`` jobs say only "running",
    identically but for the request id and time, before "succeeded"; ``reindex`` is a new route.
    A stuck job keeps its progress; the agent cancels it after a budget of polls (``poll_stuck``)
    or after cycling between status and logs (``loop_cycle``). ``loop_volatile`` re-polls a job
    that already succeeded; ``wander`` checks on the team's other jobs first.
    """

    agent = "jobrunner"
    models = {"export": "claude-haiku-4-5", "training": "claude-sonnet-4-5", "backfill": "claude-haiku-4-5",
              "reindex": "claude-haiku-4-5"}
    system = ("You run data jobs on the analytics platform for analysts. Submit the job they ask for with "
              "submit_job, then poll get_job_status until the job has succeeded or failed, fetch the result "
              "with get_job_result and summarise it in a few sentences. A job that makes no progress for a "
              "long time should be cancelled with cancel_job and reported. Never submit the same job twice.")
    tools = [
        tool_def("submit_job", "Submits a job; returns its id.", job_type="string", params="object"),
        tool_def("get_job_status", "The status and progress of a job.", job_id="string"),
        tool_def("get_job_logs", "The last lines of a job's log.", job_id="string", tail="integer?"),
        tool_def("get_job_result", "The output of a job that succeeded.", job_id="string"),
        tool_def("list_jobs", "Recent jobs of the team.", limit="integer?"),
        tool_def("cancel_job", "Cancels a running job.", job_id="string", reason="string?"),
    ]
    _TYPICAL_CALLS = {"export": 4, "training": 12, "backfill": 4, "reindex": 6}

    def setup(self) -> None:
        r, kind = self.rng, self.kind
        if kind in ("model_switch", "cold_start_spike"):
            self.model = "claude-opus-4-1"
        self.polls = {"export": r.randint(0, 3), "training": r.randint(6, 14), "backfill": r.randint(0, 2),
                      "reindex": r.randint(2, 5)}[self.route]
        if kind == "poll_progress":
            self.polls = r.randint(18, 35)
        elif kind == "poll_running":
            self.polls = r.randint(3, 8)
        self.stuck = kind in ("poll_stuck", "loop_cycle")
        self.stuck_at = round(r.uniform(0.3, 0.9), 2)
        self.budget = r.randint(40, 60) if kind == "poll_stuck" else 2 * r.randint(4, 8) if kind == "loop_cycle" else 80
        self.extra_polls = r.randint(4, 15) if kind == "loop_volatile" else 0
        self.wander = r.randint(3, 4) * self._TYPICAL_CALLS[self.route] if kind == "wander" else 0
        self.job_type = {"export": "csv_export", "training": "train_model", "backfill": "warehouse_backfill",
                         "reindex": "search_reindex"}[self.route]
        self.job_id = f"job_{r.getrandbits(40):010x}"
        self.status_calls = 0
        self.started = ""

    def task(self) -> str:
        what = {"export": f"Export the {self.rng.choice(['orders', 'refunds', 'signups', 'sessions'])} table for "
                          f"{self.rng.choice(['October', 'last week', 'Q3', 'yesterday'])} to CSV.",
                "training": f"Retrain the {self.rng.choice(['churn', 'fraud', 'ranking', 'ltv'])} model on the "
                            "latest snapshot and tell me the validation metrics.",
                "backfill": f"Backfill the {self.rng.choice(['events', 'payments', 'inventory'])} table from "
                            f"{self.rng.randint(2, 30)} days ago.",
                "reindex": f"Rebuild the {self.rng.choice(['products', 'help-centre', 'orders'])} search index."}
        return what[self.route]

    def decide(self, calls: list[Call]) -> Turn:
        if not calls:
            params = {"source": prose(self.rng, 2).replace(" ", "_"), "priority": self.rng.choice(["low", "normal"])}
            return self.say(20, ("submit_job", {"job_type": self.job_type, "params": params}))
        job_id = calls[0].result["job_id"]
        last = calls[-1]
        if last.name in ("get_job_result", "cancel_job"):
            return self.final(self.rng.randint(40, 120))
        others = [c for c in calls if c.name == "get_job_status" and c.input["job_id"] != job_id]
        if self.wander and not any(c.name == "list_jobs" for c in calls):
            return self.say(25, ("list_jobs", {"limit": self.wander + 5}))
        if self.wander and len(others) < self.wander:
            listed = next(c for c in calls if c.name == "list_jobs").result["jobs"]
            return self.say(15, ("get_job_status", {"job_id": listed[len(others)]["job_id"]}))
        own = [c for c in calls if c.input.get("job_id") == job_id and c.name in ("get_job_status", "get_job_logs")]
        polls = [c for c in own if c.name == "get_job_status"]
        done = [c for c in polls if c.result["status"] == "succeeded"]
        if done:
            if len(polls) - polls.index(done[0]) <= self.extra_polls:
                return self.say(12, ("get_job_status", {"job_id": job_id}))
            return self.say(15, ("get_job_result", {"job_id": job_id}))
        if len(own) >= self.budget:
            return self.say(40, ("cancel_job", {"job_id": job_id, "reason": "no progress"}))
        if self.kind == "loop_cycle" and own and own[-1].name == "get_job_status":
            return self.say(20, ("get_job_logs", {"job_id": job_id, "tail": 20}))
        return self.say(self.rng.randint(8, 30), ("get_job_status", {"job_id": job_id}))

    def tool_submit_job(self, job_type: str, params: dict[str, Any]) -> dict[str, Any]:
        self.started = self.now(2)
        return {"job_id": self.job_id, "status": "queued", "submitted_at": self.started,
                "request_id": self.request_id()}

    def tool_get_job_status(self, job_id: str) -> dict[str, Any]:
        checked = self.now(self.rng.uniform(20, 90))
        if job_id != self.job_id:
            other = random.Random(job_id)
            return {"job_id": job_id, "status": other.choice(["succeeded", "running", "failed", "succeeded"]),
                    "owner": other.choice(["ana", "bo", "chen", "dee"]), "checked_at": checked,
                    "request_id": self.request_id()}
        self.status_calls += 1
        out: dict[str, Any] = {"job_id": job_id, "status": "running", "started_at": self.started}
        if self.status_calls > self.polls and not self.stuck:
            out["status"] = "succeeded"
            out["progress"] = 1.0
        elif self.route == "training" or self.kind == "poll_progress":
            progress = self.stuck_at if self.stuck else min(0.99, self.status_calls / (self.polls + 1))
            out["progress"] = round(progress, 2)
            out["stage"] = "evaluating" if progress > 0.8 else "training"
        elif self.stuck:
            out["queue_position"] = 1
        return {**out, "checked_at": checked, "request_id": self.request_id()}

    def tool_get_job_logs(self, job_id: str, tail: int = 20) -> dict[str, Any]:
        return {"job_id": job_id, "lines": ["INFO waiting for an executor slot", "INFO heartbeat ok"] * 2,
                "request_id": self.request_id()}

    def tool_get_job_result(self, job_id: str) -> dict[str, Any]:
        out = {"job_id": job_id, "output": f"s3://analytics-jobs/{job_id}/part-0000.parquet",
               "rows": self.rng.randint(1_000, 5_000_000), "finished_at": self.now(5)}
        if self.route == "training":
            out["metrics"] = {"auc": round(self.rng.uniform(0.7, 0.95), 3),
                              "logloss": round(self.rng.uniform(0.2, 0.6), 3)}
        return out

    def tool_list_jobs(self, limit: int = 10) -> dict[str, Any]:
        return {"jobs": [{"job_id": f"job_{self.rng.getrandbits(40):010x}", "type": self.rng.choice(
            ["csv_export", "train_model", "warehouse_backfill"])} for _ in range(limit)]}

    def tool_cancel_job(self, job_id: str, reason: str = "") -> dict[str, Any]:
        return {"job_id": job_id, "status": "cancelled", "request_id": self.request_id()}


# -- 2. the paginating agent -----------------------------------------------------------------------


class CrmExport(Episode):
    """Exports CRM records page by page and writes a short report.

    ``contacts_export`` follows an opaque cursor (page sizes 50-200, capped at 100 by the API);
    ``overdue_invoices`` pages by number until a short page, then opens the largest invoices;
    ``activity_digest`` follows a cursor over events, with batch sizes the server chooses.
    ``many_pages`` is a big account (20-45 pages). Loops: ``loop_same`` re-sends the previous
    cursor or page, ``loop_nudged`` nudges the page size on the same page (the API caps it, so the
    same records come back), ``loop_cycle`` goes back and forth between two pages.
    ``runaway_context`` asks for every field and the history of each record, so that every page is
    huge and stays in the conversation.
    """

    agent = "crm_export"
    models = {"contacts_export": "claude-haiku-4-5", "overdue_invoices": "claude-haiku-4-5",
              "activity_digest": "claude-sonnet-4-5"}
    system = ("You are the CRM operations assistant. When asked for an export or a digest, read every page of "
              "the records (follow next_cursor or page numbers until there are no more), then save a report "
              "with save_report and answer with its highlights. Keep reports factual; do not invent numbers.")
    tools = [
        tool_def("list_contacts", "One page of contacts.", cursor="string?", page_size="integer?", fields="string?"),
        tool_def("list_invoices", "One page of invoices by status.", status="string", page="integer",
                 per_page="integer?"),
        tool_def("get_invoice", "One invoice with its lines.", invoice_id="string"),
        tool_def("list_activity", "Account activity since a date, one batch at a time.", since="string",
                 cursor="string?"),
        tool_def("save_report", "Saves a report.", title="string", body="string"),
    ]

    def setup(self) -> None:
        r = self.rng
        if self.kind == "model_switch":
            self.model = "claude-opus-4-1"
        self.blowup = self.kind == "token_blowup"
        self.page_size = r.choice([50, 100, 100, 200]) if self.route == "contacts_export" else r.choice([25, 50])
        cap = 100 if self.route == "contacts_export" else self.page_size
        pages = max(1, round(r.lognormvariate(1.2, 0.5)))
        if self.kind == "many_pages":
            pages = r.randint(20, 45)
        elif self.kind.startswith("loop_"):
            pages = max(pages, 3)  # the loops below misuse the cursor of a later page
        if self.kind == "loop_nudged":
            # At or above the API's cap, so that a nudged page size brings the same records back.
            self.page_size = 200 if self.route == "contacts_export" else 50
            cap = 100 if self.route == "contacts_export" else 50
        # activity_digest's server sends 20-80 events a batch: about 50.
        unit = 50 if self.route == "activity_digest" else min(self.page_size, cap)
        self.total = (pages - 1) * unit + r.randint(1, unit)
        self.fat = self.kind == "runaway_context"
        self.repeat = r.randint(4, 12) if self.kind in ("loop_same", "loop_nudged") else 0
        self.cycles = r.randint(4, 7) if self.kind == "loop_cycle" else 0
        self.cursors: dict[str, int] = {}
        self.records = [self._record(i) for i in range(self.total)]

    def _record(self, i: int) -> dict[str, Any]:
        r = self.rng
        if self.route == "overdue_invoices":
            return {"id": f"INV-{200_000 + i * 7}", "customer": f"C{r.randint(1000, 9999)}",
                    "amount": round(r.lognormvariate(6, 1), 2), "days_overdue": r.randint(1, 120)}
        if self.route == "activity_digest":
            return {"at": self.now(r.uniform(60, 7200)), "type": r.choice(["email", "call", "meeting", "note"]),
                    "owner": r.choice(["ana", "bo", "chen"]), "account": f"A{r.randint(100, 999)}"}
        return {"id": f"ct_{r.getrandbits(32):08x}", "company": prose(r, 2).title(),
                "stage": r.choice(["lead", "customer", "churned"]),
                "updated": f"2026-{r.randint(1, 11):02d}-{r.randint(1, 28):02d}"}

    def task(self) -> str:
        days = self.rng.randint(1, 14)
        return {"contacts_export": "Export all our CRM contacts so I can dedupe them against the mailing list.",
                "overdue_invoices": "Which invoices are overdue, and which are the largest? Write it up.",
                "activity_digest": f"Give me a digest of account activity since {days} days ago."}[self.route]

    def _page_call(self, page: int, cursor: str | None, size: Any) -> tuple[str, dict[str, Any]]:
        if self.route == "overdue_invoices":
            return "list_invoices", {"status": "overdue", "page": page, "per_page": size}
        if self.route == "activity_digest":
            return "list_activity", {"since": "2026-11-20", **({"cursor": cursor} if cursor else {})}
        args: dict[str, Any] = {"page_size": size}
        if cursor:
            args["cursor"] = cursor
        if self.fat:
            args["fields"] = "all,history"
        return "list_contacts", args

    def decide(self, calls: list[Call]) -> Turn:
        pages = [c for c in calls if c.name.startswith("list_")]
        if calls and calls[-1].name == "save_report":
            return self.final(self.rng.randint(60, 160))
        if not pages:
            return self.say(20, self._page_call(1, None, self.page_size))
        last = pages[-1].result
        n = len(pages)
        # The misbehaviours start after the second page, once the agent has a cursor to misuse.
        if self.repeat and n >= 2 and n - 2 < self.repeat:
            prev = pages[-1].input
            size: Any = self.page_size
            if self.kind == "loop_nudged":
                size = [self.page_size + 1, self.page_size + 10, float(self.page_size), self.page_size][n % 4]
            return self.say(15, self._page_call(prev.get("page", 2), prev.get("cursor"), size))
        if self.cycles and n >= 3 and n - 3 < 2 * self.cycles:
            page = pages[-2].input.get("page", 2)
            return self.say(15, self._page_call(page, pages[-2].input.get("cursor"), self.page_size))
        nxt = last.get("next_cursor")
        more = nxt is not None if "next_cursor" in last else len(last["items"]) == self.page_size
        if more:
            page = pages[-1].input.get("page", n) + 1
            return self.say(self.rng.randint(6, 20), self._page_call(page, nxt, self.page_size))
        if self.route == "overdue_invoices" and not any(c.name == "get_invoice" for c in calls):
            items = [i for p in pages for i in p.result["items"]]
            top = sorted({i["id"]: i for i in items}.values(), key=lambda i: -i["amount"])[:self.rng.randint(1, 3)]
            return self.say(30, *[("get_invoice", {"invoice_id": i["id"]}) for i in top])
        return self.say(30, ("save_report", {"title": f"{self.route} {self.now()[:10]}",
                                             "body": prose(self.rng, self.rng.randint(80, 250))}))

    def _page(self, start: int, size: int) -> dict[str, Any]:
        items = self.records[start:start + size]
        if self.fat:
            items = [{**i, "notes": prose(self.rng, 120), "history": [prose(self.rng, 25) for _ in range(8)]}
                     for i in items]
        return {"items": items, "total": self.total}

    def _cursor(self, offset: int) -> str | None:
        if offset >= self.total:
            return None
        key = f"c_{offset * 7919:x}{self.spec.index:x}"
        self.cursors[key] = offset
        return key

    def tool_list_contacts(self, cursor: str | None = None, page_size: int = 50, fields: str = "") -> dict[str, Any]:
        start, size = self.cursors.get(cursor, 0) if cursor else 0, min(int(page_size), 100)
        return {**self._page(start, size), "next_cursor": self._cursor(start + size)}

    def tool_list_invoices(self, status: str, page: int, per_page: int = 25) -> dict[str, Any]:
        size = min(int(per_page), 50)
        return {**self._page((int(page) - 1) * size, size), "page": page}

    def tool_list_activity(self, since: str, cursor: str | None = None) -> dict[str, Any]:
        start = self.cursors.get(cursor, 0) if cursor else 0
        # The server picks its batch size; a seeded draw per offset keeps a repeated page identical.
        size = random.Random(f"{self.spec.key}/{start}").randint(20, 80)
        return {**self._page(start, size), "next_cursor": self._cursor(start + size)}

    def tool_get_invoice(self, invoice_id: str) -> dict[str, Any]:
        return {"id": invoice_id, "lines": [{"sku": f"SKU-{self.rng.randint(100, 999)}",
                                              "qty": self.rng.randint(1, 20)} for _ in range(self.rng.randint(2, 8))]}

    def tool_save_report(self, title: str, body: str) -> dict[str, Any]:
        return {"report_id": self.uuid(), "saved_at": self.now(1)}


# -- 3. the retrying agent -------------------------------------------------------------------------


class Payments(Episode):
    """Reconciles bank statements and sends payouts through a flaky bank API.

    Every call may time out or answer 5xx/429 (about 6% of calls, once); the agent retries the
    same call and gives up after 5 failures. ``retry_then_ok``: one call fails 2-4 times, then
    succeeds. ``loop_same_error``: one call always fails the same way and the agent retries it
    6-14 times before giving up. ``loop_nudged``: the payout is refused by validation and the
    agent re-sends it 5-9 times with the amount or key order reformatted. ``daily_reconcile``
    fetches 3-6 statements and posts a ledger entry; ``fx_payout`` quotes a rate, pays out and
    polls the payout; ``chargeback_review`` is a new route.
    """

    agent = "payments"
    models = {"daily_reconcile": "claude-haiku-4-5", "fx_payout": "claude-sonnet-4-5",
              "chargeback_review": "claude-haiku-4-5"}
    system = ("You are the treasury operations agent. Reconcile statements, quote rates and send payouts with "
              "the bank tools. The bank API is sometimes slow or unavailable: retry a call that timed out or "
              "failed with a 5xx, but give up and report after repeated failures. Never send a payout twice: "
              "reuse the idempotency key of a retried payout.")
    tools = [
        tool_def("fetch_statement", "A bank account's statement for one day.", account_id="string", date="string"),
        tool_def("get_fx_rate", "The current rate between two currencies.", base="string", quote="string"),
        tool_def("create_payout", "Sends a payout.", account_id="string", amount="number", currency="string",
                 idempotency_key="string"),
        tool_def("get_payout", "A payout's status.", payout_id="string"),
        tool_def("post_ledger", "Posts reconciliation entries to the ledger.", entries="array"),
        tool_def("get_dispute", "A card dispute.", dispute_id="string"),
        tool_def("submit_evidence", "Submits evidence for a dispute.", dispute_id="string", summary="string"),
    ]
    _ERRORS = [("timeout", "upstream timed out after 30s"), ("http_503", "503 Service Unavailable"),
               ("http_502", "502 Bad Gateway: bank gateway unavailable"), ("http_429", "429 Too Many Requests")]

    def setup(self) -> None:
        r = self.rng
        if self.kind in ("model_switch", "cold_start_spike"):
            self.model = "claude-opus-4-1"
        self.blowup = self.kind == "token_blowup"
        day = f"2026-11-{r.randint(1, 30):02d}"
        self.currency = r.choice(["EUR", "GBP", "JPY", "CHF"])
        self.amount = round(r.uniform(500, 20_000), 0)
        if self.route == "daily_reconcile":
            accounts = r.sample([f"ACC-{n}" for n in range(1001, 1031)], r.randint(3, 6))
            self.plan: list[tuple[str, dict[str, Any]]] = [("fetch_statement", {"account_id": a, "date": day})
                                                             for a in accounts]
        elif self.route == "fx_payout":
            self.plan = [("get_fx_rate", {"base": "USD", "quote": self.currency})]
        else:
            self.plan = [("get_dispute", {"dispute_id": f"dp_{r.getrandbits(32):08x}"}),
                         ("fetch_statement", {"account_id": f"ACC-{r.randint(1001, 1030)}", "date": day})]
        self.settle_polls = r.randint(1, 3)
        # How many times each step of the plan fails before it succeeds (a huge number: never).
        self.failures = [1 if r.random() < 0.06 else 0 for _ in range(8)]
        # fx_payout's plan grows as it goes: the rate, the payout, then its polls.
        target = r.randrange(3 if self.route == "fx_payout" else len(self.plan))
        if self.kind == "retry_then_ok":
            self.failures[target] = r.randint(2, 4)
        elif self.kind == "loop_same_error":
            self.failures[target] = 10**6
        self.error = r.choice(self._ERRORS)
        self.give_up = r.randint(6, 14) if self.kind == "loop_same_error" else r.randint(5, 9) \
            if self.kind == "loop_nudged" else 5
        self.attempts: dict[str, int] = {}
        self.step_of: dict[str, int] = {}

    def task(self) -> str:
        return {"daily_reconcile": "Reconcile yesterday's statements for our operating accounts and post the entries.",
                "fx_payout": f"Pay our supplier {self.amount:.0f} USD worth of {self.currency}.",
                "chargeback_review": "Review the new chargeback and submit our evidence."}[self.route]

    def _steps(self, calls: list[Call]) -> list[tuple[str, dict[str, Any]]]:
        """The plan, extended by what earlier results call for."""
        steps = list(self.plan)
        ok = [c for c in calls if not c.error]
        if self.route == "fx_payout" and ok:
            rate = ok[0].result["rate"]
            steps.append(("create_payout", {"account_id": "SUP-77", "amount": round(self.amount * rate, 2),
                                            "currency": self.currency, "idempotency_key": f"po-{self.spec.key}"}))
            payout = next((c.result for c in ok if c.name == "create_payout"), None)
            if payout:
                polls = [c for c in ok if c.name == "get_payout"]
                if not polls or polls[-1].result["status"] != "paid":
                    steps += [("get_payout", {"payout_id": payout["payout_id"]})] * (len(polls) + 1)
        elif self.route == "daily_reconcile" and len(ok) >= len(self.plan):
            steps.append(("post_ledger", {"entries": [{"account": c.input["account_id"], "balance": c.result["closing"]}
                                                      for c in ok if c.name == "fetch_statement"]}))
        elif self.route == "chargeback_review" and len(ok) >= len(self.plan):
            steps.append(("submit_evidence", {"dispute_id": self.plan[0][1]["dispute_id"],
                                              "summary": prose(self.rng, 60)}))
        return steps

    def decide(self, calls: list[Call]) -> Turn:
        ok = [c for c in calls if not c.error]
        failed_in_a_row = 0
        for c in reversed(calls):
            if not c.error:
                break
            failed_in_a_row += 1
        if failed_in_a_row >= self.give_up:
            return self.final(self.rng.randint(50, 120))
        steps = self._steps(calls)
        if len(ok) >= len(steps):
            return self.final(self.rng.randint(60, 200))
        name, args = steps[len(ok)]
        if self.kind == "loop_nudged" and failed_in_a_row and name == "create_payout":
            # The model believes the amount's format is the problem.
            amount = args["amount"]
            variants: list[Any] = [int(amount), float(amount), f"{amount:.2f}", amount]
            reordered = dict(reversed(list(args.items()))) if failed_in_a_row % 2 else args
            args = {**reordered, "amount": variants[failed_in_a_row % 4]}
        return self.say(self.rng.randint(10, 40) if not failed_in_a_row else 12, (name, args))

    def run_tool(self, name: str, tool_input: dict[str, Any]) -> Any:
        self.now(self.rng.uniform(0.2, 30))
        if name == "create_payout" and self.kind == "loop_nudged":
            raise ToolFailure("validation_error", "account SUP-77 cannot receive this currency",
                              {"error": {"type": "invalid_request", "field": "account_id",
                                         "message": "account SUP-77 cannot receive this currency"}})
        sig = json.dumps([name, tool_input], sort_keys=True)
        step = self.step_of.setdefault(sig, len(self.step_of))
        self.attempts[sig] = self.attempts.get(sig, 0) + 1
        if self.attempts[sig] <= self.failures[min(step, len(self.failures) - 1)]:
            kind, message = self.error
            raise ToolFailure(kind, message, {"error": {"type": kind, "message": message}})
        return super().run_tool(name, tool_input)

    def tool_fetch_statement(self, account_id: str, date: str) -> dict[str, Any]:
        lines = [{"ref": f"TX{self.rng.getrandbits(32):08X}", "amount": round(self.rng.uniform(-5000, 9000), 2)}
                 for _ in range(self.rng.randint(3, 25))]
        return {"account_id": account_id, "date": date, "lines": lines,
                "closing": round(sum(x["amount"] for x in lines) + self.rng.uniform(1e4, 1e5), 2)}

    def tool_get_fx_rate(self, base: str, quote: str) -> dict[str, Any]:
        rate = {"EUR": 0.92, "GBP": 0.79, "JPY": 151.3, "CHF": 0.88}[quote] * self.rng.uniform(0.995, 1.005)
        return {"base": base, "quote": quote, "rate": round(rate, 5), "as_of": self.now()}

    def tool_create_payout(self, account_id: str, amount: Any, currency: str, idempotency_key: str) -> dict[str, Any]:
        return {"payout_id": f"po_{self.rng.getrandbits(48):012x}", "status": "pending"}

    def tool_get_payout(self, payout_id: str) -> dict[str, Any]:
        self.settle_polls -= 1
        return {"payout_id": payout_id, "status": "paid" if self.settle_polls < 0 else "pending",
                "checked_at": self.now()}

    def tool_post_ledger(self, entries: list[dict[str, Any]]) -> dict[str, Any]:
        return {"posted": len(entries), "batch_id": self.uuid()}

    def tool_get_dispute(self, dispute_id: str) -> dict[str, Any]:
        return {"dispute_id": dispute_id, "amount": round(self.rng.uniform(20, 900), 2),
                "reason": self.rng.choice(["fraudulent", "product_not_received", "duplicate"]),
                "due_by": "2026-12-09"}

    def tool_submit_evidence(self, dispute_id: str, summary: str) -> dict[str, Any]:
        return {"dispute_id": dispute_id, "status": "under_review"}


# -- 4. the batch-lookup agent ---------------------------------------------------------------------


class Parcels(Episode):
    """Answers merchants about many parcels or SKUs at once, in parallel tool calls.

    ``bulk_status`` tracks 3-12 parcels, most of them "delivered"; ``stock_check`` checks 3-10
    SKUs, most "in_stock"; ``carrier_digest`` is a nightly digest whose prompt carries notes from
    earlier runs (in a ``drift`` session the notes grow 5% of the session's cost a night).
    ``shared_answer``: 8-12 distinct parcels, all delivered. About one session in seven checks its
    first item twice (a double check). Loops: ``loop_same`` re-checks one SKU,
    ``loop_volatile`` re-tracks one parcel (fresh request id each time), ``loop_nudged`` re-tracks
    it with its number's case or spacing changed, or re-checks a SKU with keys reordered and
    ``1.0`` for ``1``. ``wander`` opens many of the merchant's other orders.
    """

    agent = "parcels"
    models = {"bulk_status": "claude-haiku-4-5", "stock_check": "claude-haiku-4-5",
              "carrier_digest": "claude-haiku-4-5"}
    system = ("You help merchants with their shipments and stock. Look up every parcel or SKU they list (you may "
              "call several tools at once), then answer with a short table: one line per item, grouping items "
              "with the same status. Only contact customers when the merchant asks.")
    tools = [
        tool_def("track_parcel", "A parcel's status and last event.", tracking_number="string"),
        tool_def("check_stock", "Stock of a SKU in a warehouse.", sku="string", warehouse="string", min_qty="number?"),
        tool_def("get_order", "An order of the merchant.", order_id="string"),
        tool_def("send_update", "Posts a message to a channel.", channel="string", text="string"),
    ]
    _TYPICAL_CALLS = {"bulk_status": 7, "stock_check": 6, "carrier_digest": 7}

    def setup(self) -> None:
        r = self.rng
        if self.kind == "model_switch":
            self.model = "claude-opus-4-1"
        n = {"bulk_status": r.randint(3, 12), "stock_check": r.randint(3, 10),
             "carrier_digest": r.randint(4, 8)}[self.route]
        if self.kind == "shared_answer":
            n = r.randint(8, 12)
        self.items = [f"1Z{r.getrandbits(44):011X}" if self.route != "stock_check" else f"SKU-{r.randint(10000, 99999)}"
                      for _ in range(n)]
        self.delivered = 1.0 if self.kind == "shared_answer" else 0.75
        # Outside the loops, an item is sometimes checked twice: a double check, not a loop.
        self.repeat = r.randint(4, 20) if self.kind in ("loop_same", "loop_volatile", "loop_nudged") \
            else int(r.random() < 0.15)
        self.wander = r.randint(3, 4) * self._TYPICAL_CALLS[self.route] if self.kind == "wander" else 0
        self.batch = r.randint(2, 4)
        self.warehouse = r.choice(["AMS-1", "FRA-2", "MAD-1"])

    def system_prompt(self) -> str:
        if self.route != "carrier_digest":
            return self.system
        # Notes the agent keeps from night to night; in a drifting route nobody prunes them.
        rng = random.Random(f"notes/{self.spec.seed}")
        words = 1200 + int(2400 * (self.spec.drift - 1))
        return f"{self.system}\n\nNotes from earlier digests:\n{prose(rng, words)}"

    def task(self) -> str:
        listed = ", ".join(self.items)
        return {"bulk_status": f"Where are these parcels? {listed}",
                "stock_check": f"Do we have these in stock in {self.warehouse}? {listed}",
                "carrier_digest": f"Nightly digest: check these parcels with open carrier exceptions and post a "
                                  f"summary to #shipping. {listed}"}[self.route]

    def _lookup(self, item: str) -> tuple[str, dict[str, Any]]:
        if self.route == "stock_check":
            return "check_stock", {"sku": item, "warehouse": self.warehouse}
        return "track_parcel", {"tracking_number": item}

    def decide(self, calls: list[Call]) -> Turn:
        if calls and calls[-1].name == "send_update":
            return self.final(40)
        if self.wander:
            opened = [c for c in calls if c.name == "get_order"]
            if len(opened) < self.wander:
                return self.say(15, ("get_order", {"order_id": f"ORD-{71_000 + 13 * len(opened)}"}))
        done = {c.input.get("tracking_number", c.input.get("sku")) for c in calls if c.name != "get_order"}
        todo = [i for i in self.items if i not in done]
        if todo:
            return self.say(self.rng.randint(10, 30), *[self._lookup(i) for i in todo[:self.batch]])
        again = len([c for c in calls if c.name != "get_order"]) - len(self.items)
        if again < self.repeat:
            item = self.items[0]
            name, args = self._lookup(item)
            if self.kind == "loop_nudged":
                if name == "track_parcel":
                    args = {"tracking_number": [f" {item}", item.lower(), f"{item} ", item][again % 4]}
                else:
                    args = dict(reversed(list(args.items()))) if again % 2 else {**args, "min_qty": [1, 1.0][again % 2]}
            return self.say(15, (name, args))
        if self.route == "carrier_digest":
            return self.say(30, ("send_update", {"channel": "#shipping", "text": prose(self.rng, 80)}))
        return self.final(20 + 12 * len(self.items))

    def tool_track_parcel(self, tracking_number: str) -> dict[str, Any]:
        number = tracking_number.strip().upper()
        world = random.Random(f"{self.spec.key}/{number}")  # a parcel's state does not change within a session
        if world.random() < self.delivered or self.route == "carrier_digest" and world.random() < 0.5:
            out = {"tracking_number": number, "status": "delivered", "carrier": "UPS",
                   "last_event": "Delivered, left at front door"}
        else:
            out = {"tracking_number": number, "status": world.choice(["in_transit", "exception", "out_for_delivery"]),
                   "carrier": "UPS", "last_event": world.choice(["Departed facility", "Address unknown",
                                                                 "On vehicle for delivery"])}
        return {**out, "request_id": self.request_id(), "checked_at": self.now(1)}

    def tool_check_stock(self, sku: str, warehouse: str, min_qty: Any = 1) -> dict[str, Any]:
        world = random.Random(f"{self.spec.key}/{sku}")
        if world.random() < 0.7:
            return {"sku": sku, "warehouse": warehouse, "status": "in_stock"}
        return {"sku": sku, "warehouse": warehouse, "status": world.choice(["low_stock", "out_of_stock"]),
                "restock_eta": "2026-12-15"}

    def tool_get_order(self, order_id: str) -> dict[str, Any]:
        return {"order_id": order_id, "items": self.rng.randint(1, 5),
                "status": self.rng.choice(["shipped", "delivered"]),
                "tracking_number": f"1Z{self.rng.getrandbits(44):011X}"}

    def tool_send_update(self, channel: str, text: str) -> dict[str, Any]:
        return {"ok": True, "ts": self.now(1)}


# -- 5. the long, costly research agent ------------------------------------------------------------


class Research(Episode):
    """Researches a question on the web for many turns, with prompt caching, and writes a long report.

    Every session is costly. ``market_brief`` (Opus) searches 4-8 topics with a heavy tail;
    ``due_diligence`` (Opus) is bimodal: a quick check or, in ``costly_legit`` sessions, a deep
    one; ``literature_review`` (Sonnet) reads papers, with a heavy tail of ``costly_legit`` sessions
    that read twice as many; ``board_pack`` (Opus, ``expensive_route``) reads long PDFs every time.
    Loops: ``loop_paraphrase`` searches one topic reworded 5-10 times (the same results come
    back), ``loop_cycle`` searches and opens the same page 4-7 times over. ``runaway_context``
    fetches raw HTML instead of the page's text. ``wander`` follows citations through 3x the
    usual number of distinct sources.
    """

    agent = "research"
    models = {"market_brief": "claude-opus-4-1", "due_diligence": "claude-opus-4-1",
              "literature_review": "claude-sonnet-4-5", "board_pack": "claude-opus-4-1"}
    cache = True
    system = ("You are a research analyst. Answer the question with a sourced report. Search the web, open the "
              "most relevant sources, read PDFs when a source is a paper or a filing, save notes as you go, and "
              "finish with a structured report that cites every claim. Prefer primary sources. Do not stop at "
              "the first source that agrees with you. " * 4)
    tools = [
        tool_def("web_search", "Searches the web.", query="string", num_results="integer?"),
        tool_def("fetch_page", "The text of a web page.", url="string"),
        tool_def("read_pdf", "The text of some pages of a PDF.", url="string", pages="string"),
        tool_def("save_note", "Saves a research note.", title="string", text="string"),
    ]
    _TOPICS = ["pricing", "market size", "competitors", "regulation", "customer churn", "supply chain", "hiring",
               "patents", "funding", "unit economics", "margins", "litigation", "partnerships", "reviews",
               "benchmarks", "adoption", "security incidents", "roadmap", "leadership", "revenue"]
    _REWORDINGS = ["{c} {t}", "{t} of {c}", "{c} {t} 2026", "what is {c}'s {t}", "{c} {t} analysis",
                   "latest {t} {c}", "{t} {c} report", "{c} {t} overview", "{c} {t} data", "how is {c} doing on {t}"]

    def setup(self) -> None:
        r, route, kind = self.rng, self.route, self.kind
        if kind == "model_switch":
            self.model = "claude-opus-4-1"
        self.company = r.choice(["Acme Robotics", "Borealis Bio", "Cobalt Pay", "Dune Freight", "Ember Foods"])
        topics = {"market_brief": min(12, 3 + round(r.lognormvariate(0.8, 0.5))),
                  "due_diligence": r.randint(9, 12) if kind == "costly_legit" else r.randint(3, 5),
                  "literature_review": r.randint(9, 12) if kind == "costly_legit" else r.randint(4, 6),
                  "board_pack": r.randint(3, 5)}[route]
        if kind == "wander":
            topics = 3 * topics + r.randint(2, 5)
        pool = r.sample(self._TOPICS, len(self._TOPICS)) * 3
        self.plan: list[tuple[str, Any]] = []
        self.subjects = [f"{topic} {['', 'in Europe', 'in Asia'][n // len(self._TOPICS)]}".strip()
                         for n, topic in enumerate(pool[:topics])]
        for subject in self.subjects:
            self.plan.append(("search", subject))
            reads = "pdf" if route in ("literature_review", "board_pack") else "fetch"
            self.plan += [(reads, k) for k in range(r.randint(1, 3))]
            if r.random() < 0.4:
                self.plan.append(("note", subject))
        at = r.randrange(1, len(self.plan))
        if kind == "loop_paraphrase":
            subject = next(s for step, s in self.plan if step == "search")
            self.plan[at:at] = [("search", subject)] * r.randint(5, 10)
        elif kind == "loop_cycle":
            subject = next(s for step, s in self.plan if step == "search")
            self.plan[at:at] = [("search", subject), ("fetch", 0)] * r.randint(4, 7)
        self.page_words = {"board_pack": 5000, "literature_review": 3000}.get(route, 1500)
        self.searches = 0

    def task(self) -> str:
        return {"market_brief": f"Write a market brief on {self.company} for our investment committee.",
                "due_diligence": f"Do a due-diligence check on {self.company}: red flags, litigation, finances.",
                "literature_review": f"Review the literature relevant to {self.company}'s core technology.",
                "board_pack": f"Prepare the board pack background on {self.company}'s last four quarters."}[self.route]

    def decide(self, calls: list[Call]) -> Turn:
        if len(calls) >= len(self.plan):
            return self.final(self.rng.randint(1500, 3500))
        step, arg = self.plan[len(calls)]
        if step == "search":
            template = self._REWORDINGS[len(calls) % len(self._REWORDINGS)] if self.kind == "loop_paraphrase" \
                else self._REWORDINGS[0]
            query = template.format(c=self.company, t=arg)
            return self.say(self.rng.randint(30, 120), ("web_search", {"query": query, "num_results": 5}))
        if step == "note":
            return self.say(40, ("save_note", {"title": arg, "text": prose(self.rng, self.rng.randint(150, 400))}))
        found = next(c for c in reversed(calls) if c.name == "web_search").result["results"]
        url = found[arg]["url"]
        if step == "pdf":
            return self.say(self.rng.randint(30, 90), ("read_pdf", {"url": url, "pages": "1-12"}))
        return self.say(self.rng.randint(30, 90), ("fetch_page", {"url": url}))

    def tool_web_search(self, query: str, num_results: int = 5) -> dict[str, Any]:
        # The engine answers the subject, not the wording: a reworded query finds the same pages.
        topic = max((s for s in self.subjects if s in query), key=len, default=query)
        engine = random.Random(f"{self.spec.key}/{topic}")
        return {"results": [{"url": f"https://{engine.choice(['news', 'www', 'docs', 'blog'])}.example.com/"
                                    f"{topic.replace(' ', '-')}/{engine.getrandbits(24):06x}",
                             "title": prose(engine, 8), "snippet": prose(engine, 40)} for _ in range(num_results)]}

    def _text(self, url: str, words: int) -> str:
        return prose(random.Random(f"{self.spec.key}/{url}"), words)

    def tool_fetch_page(self, url: str) -> dict[str, Any]:
        words = int(self.page_words * self.rng.uniform(0.5, 1.5))
        if self.kind == "runaway_context":
            text = self._text(url, words)
            # Raw HTML: the same text buried in markup, scripts and navigation, about five times as long.
            html = "".join(f'<div class="c-{i % 7}"><span data-track="{i}">{w}</span></div>'
                           for i, w in enumerate(text.split()))
            return {"url": url, "html": html + "<script>" + "x" * 20_000 + "</script>"}
        return {"url": url, "text": self._text(url, words)}

    def tool_read_pdf(self, url: str, pages: str) -> dict[str, Any]:
        words = int(self.page_words * self.rng.uniform(0.6, 1.6))
        return {"url": url, "pages": pages, "text": self._text(url, words)}

    def tool_save_note(self, title: str, text: str) -> dict[str, Any]:
        return {"note_id": self.uuid()}


# -- 6. the scheduling agent -----------------------------------------------------------------------


class Scheduler(Episode):
    """Books meetings: reads calendars, finds free slots and books one.

    ``book_1on1`` asks for slots day by day from the requested date until one is free (0-2 empty
    days; 3-6 in ``date_scan``); ``team_sync`` reads 3-8 attendees' calendars first;
    ``offsite_planning`` (a new route) also lists rooms. ``loop_nudged`` re-asks the same two days,
    with the date shifted back and forth and the duration written 30, 30.0 or "30", and never books;
    ``loop_cycle`` re-reads two calendars before each slot search; ``loop_same`` repeats one slot
    search. ``runaway_context`` (and this route's cold-start spike) lists every room with its full
    description. ``wander`` reads the calendars of many people who are not invited.
    """

    agent = "scheduler"
    models = {"book_1on1": "claude-haiku-4-5", "team_sync": "claude-haiku-4-5", "offsite_planning": "claude-sonnet-4-5"}
    system = ("You are an executive assistant that schedules meetings. Check the attendees' calendars, find a slot "
              "that suits everyone within working hours (09:00-17:00 in each attendee's time zone), book it and "
              "confirm in one sentence. Do not double-book anyone.")
    tools = [
        tool_def("get_calendar", "A person's busy times for a week.", person="string", week_of="string"),
        tool_def("find_slots", "Free slots shared by attendees on one day.", attendees="array", date="string",
                 duration_min="number"),
        tool_def("list_rooms", "Meeting rooms in a city.", city="string", detail="string?"),
        tool_def("book_meeting", "Books a meeting.", attendees="array", start="string", duration_min="number",
                 title="string"),
    ]
    _PEOPLE = [f"{n}@corp" for n in ["ana", "bo", "chen", "dee", "eli", "fay", "gus", "hana", "ivo", "jun", "kai",
                                      "lea", "max", "nia", "oto", "pia", "quin", "rae", "sol", "tom", "uma", "vic",
                                      "wes", "xia", "yan", "zoe"]]
    _TYPICAL_CALLS = {"book_1on1": 3, "team_sync": 7, "offsite_planning": 8}

    def setup(self) -> None:
        r = self.rng
        if self.kind == "model_switch":
            self.model = "claude-opus-4-1"
        self.blowup = self.kind == "token_blowup"
        people = r.sample(self._PEOPLE, len(self._PEOPLE))
        n = {"book_1on1": 2, "team_sync": r.randint(3, 8), "offsite_planning": r.randint(4, 8)}[self.route]
        self.attendees, self.others = people[:n], people[n:]
        self.day = dt.date(2026, 12, 1) + dt.timedelta(days=r.randint(1, 20))
        self.empty_days = r.randint(3, 6) if self.kind == "date_scan" else r.choice([0, 0, 0, 1, 1, 2])
        self.repeat = r.randint(6, 12) if self.kind in ("loop_nudged", "loop_same") else 0
        self.cycles = r.randint(4, 7) if self.kind == "loop_cycle" else 0
        self.wander = r.randint(3, 4) * self._TYPICAL_CALLS[self.route] if self.kind == "wander" else 0
        self.fat_rooms = self.kind in ("runaway_context", "cold_start_spike")

    def task(self) -> str:
        who = ", ".join(self.attendees)
        return {"book_1on1": f"Set up a 30-minute 1:1 with {self.attendees[1]} on or after {self.day}.",
                "team_sync": f"Book a one-hour sync with {who}, the week of {self.day}.",
                "offsite_planning": f"Plan a half-day offsite in Lisbon for {who} around {self.day}."}[self.route]

    def decide(self, calls: list[Call]) -> Turn:
        if calls and calls[-1].name == "book_meeting":
            return self.final(self.rng.randint(20, 50))
        duration = {"book_1on1": 30, "team_sync": 60, "offsite_planning": 240}[self.route]
        week = str(self.day - dt.timedelta(days=self.day.weekday()))
        if self.wander:
            read = [c for c in calls if c.name == "get_calendar" and c.input["person"] in self.others]
            if len(read) < self.wander:
                # More reads than people: the same people in the following weeks, so every read is new.
                weeks, person = divmod(len(read), len(self.others))
                return self.say(15, ("get_calendar", {"person": self.others[person],
                                                      "week_of": str(self.day + dt.timedelta(weeks=weeks))}))
        if self.route == "offsite_planning" and not any(c.name == "list_rooms" for c in calls):
            return self.say(25, ("list_rooms", {"city": "Lisbon", "detail": "full" if self.fat_rooms else "summary"}))
        read = {c.input["person"] for c in calls if c.name == "get_calendar"}
        todo = [p for p in self.attendees if p not in read] if self.route != "book_1on1" else []
        if todo:
            return self.say(20, *[("get_calendar", {"person": p, "week_of": week}) for p in todo[:2]])
        searches = [c for c in calls if c.name == "find_slots"]
        base = {"attendees": self.attendees, "duration_min": duration}
        if self.cycles and len(searches) < self.cycles:
            # A cycle of three: two calendars re-read before each search, and nothing changes.
            last = calls[-1]
            if last.name == "find_slots":
                return self.say(15, ("get_calendar", {"person": self.attendees[0], "week_of": week}))
            if searches and last.name == "get_calendar" and last.input["person"] == self.attendees[0]:
                return self.say(15, ("get_calendar", {"person": self.attendees[1], "week_of": week}))
            return self.say(15, ("find_slots", {**base, "date": str(self.day)}))
        if self.repeat:
            if len(searches) < self.repeat:
                date: Any = str(self.day)
                if self.kind == "loop_nudged":
                    shifted = self.day + dt.timedelta(days=len(searches) % 2)
                    date = [str(shifted), f"{shifted}T00:00", str(shifted), f"{shifted.isoformat()}"][len(searches) % 4]
                    base["duration_min"] = [duration, float(duration), str(duration)][len(searches) % 3]
                return self.say(12, ("find_slots", {**base, "date": date}))
            return self.final(40)
        if searches and searches[-1].result["slots"]:
            slot = searches[-1].result["slots"][0]
            return self.say(20, ("book_meeting", {**base, "start": slot, "title": "Sync"}))
        day = self.day + dt.timedelta(days=len(searches))
        return self.say(self.rng.randint(10, 30), ("find_slots", {**base, "date": str(day)}))

    def tool_get_calendar(self, person: str, week_of: str) -> dict[str, Any]:
        world = random.Random(f"{self.spec.key}/{person}/{week_of}")
        return {"person": person, "week_of": week_of, "tz": world.choice(["Europe/Berlin", "America/New_York"]),
                "busy": [f"day{world.randint(0, 4)} {world.randint(9, 16):02d}:00"
                         for _ in range(world.randint(3, 12))]}

    def tool_find_slots(self, attendees: list[str], date: str, duration_min: Any) -> dict[str, Any]:
        # The API does not echo the date: an empty day reads exactly like any other empty day.
        day = dt.date.fromisoformat(str(date)[:10])
        if self.repeat or (day - self.day).days < self.empty_days:
            return {"slots": [], "calendars_checked": len(attendees)}
        world = random.Random(f"{self.spec.key}/{day}")
        hours = sorted(world.sample(range(9, 17), world.randint(1, 4)))
        return {"slots": [f"{day}T{h:02d}:00" for h in hours], "calendars_checked": len(attendees)}

    def tool_list_rooms(self, city: str, detail: str = "summary") -> dict[str, Any]:
        world = random.Random(f"{self.spec.key}/rooms")
        rooms = [{"room": f"{city}-{i}", "seats": world.randint(6, 40)} for i in range(world.randint(5, 12))]
        if detail == "full":
            rooms = [{**room, "description": prose(world, 900), "amenities": [prose(world, 6) for _ in range(30)]}
                     for room in rooms * 6]
        return {"rooms": rooms}

    def tool_book_meeting(self, attendees: list[str], start: str, duration_min: Any, title: str) -> dict[str, Any]:
        return {"event_id": self.uuid(), "start": start, "status": "confirmed"}


EPISODES: dict[str, type[Episode]] = {
    e.agent: e for e in (JobRunner, CrmExport, Payments, Parcels, Research, Scheduler)}
