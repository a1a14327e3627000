"""The detectors of seed 003's failure table: made-up tool calls (``tools.hallucinated``), too many
tools offered (``tools.overload``), an irreversible side effect done twice
(``safety.duplicate_effect``), a route's tools narrowing (``tools.diversity``) and approvals left
waiting (``approval.waiting``, ``approval.expired``).

Each is tried on agents of other shapes than the reference agent: small agents of our own on
``tracer.testing.FakeModel`` (recorded through the real SDK and recorder), and rows as another
instrumentation would leave them (no tools offered on record, errors named its own way), with times
from a counter so that nothing reads the wall clock. The reference agent is one case among them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import pytest

import evals.detectors as D
import tracer
from reference_agent import Agent, SimulatedCrash, World, default_world_path, get_scenario
from tracer.testing import FakeClock, FakeModel, reply, tool_use

T0 = 1_760_000_000 * 10**9
SECOND = 10**9
HOUR = 3600 * SECOND


def db() -> str:
    return os.environ["FLIGHTREC_DB"]


def alerts(detector: str, **scope: Any) -> list[tracer.AlertRecord]:
    with tracer.Store(db()) as store:
        return [a for a in D.detect(store, scope=D.Scope(**scope)).alerts if a.detector == detector]


# -- a small agent of our own, on the fake model ------------------------------------------------------


Step = list[tuple[str, dict[str, Any]]]


def scripted(route: str, offered: list[str], script: list[Step], tools: dict[str, Callable[..., Any]], *,
             agent: str = "shop", session_id: str | None = None, key: Callable[[str, dict], str | None] | None = None,
             status: str | None = None, question: str = "help") -> str:
    """One session of an agent whose model asks, decision by decision, for the calls in ``script``
    (then answers), offered the tools named in ``offered``; the agent runs each from ``tools`` (a
    name it does not have is a ``KeyError``, a Python function's own errors are its own) and keys
    a call with ``key`` when given. The customer asks ``question``. Returns the session id."""
    definitions = [{"name": n, "description": f"the {n} tool", "input_schema": {"type": "object"}} for n in offered]

    def policy(body: dict[str, Any]) -> Any:
        step = sum(1 for m in body["messages"] if m["role"] == "assistant")
        if step < len(script):
            return reply(*(tool_use(n, a, id=f"toolu_{step}_{i}") for i, (n, a) in enumerate(script[step])),
                         stop_reason="tool_use", input_tokens=300, output_tokens=30)
        return reply("Done.", stop_reason="end_turn", input_tokens=300, output_tokens=10)

    recorder = tracer.Recorder(db())
    client = recorder.instrument(FakeModel(policy=policy).client())
    messages: list[dict[str, Any]] = [{"role": "user", "content": question}]
    with recorder.session(agent, session_id=session_id, **{"flightrec.route": route}) as s:
        while True:
            with s.turn():
                answer = client.messages.create(model="claude-haiku-4-5", max_tokens=256, messages=messages,
                                                tools=definitions)
                messages.append({"role": "assistant", "content": [b.model_dump(exclude_none=True)
                                                                  for b in answer.content]})
                if answer.stop_reason != "tool_use":
                    break
                results = []
                for block in (b for b in answer.content if b.type == "tool_use"):
                    with s.tool_call(block.name, block.input, call_id=block.id) as call:
                        if key is not None and (k := key(block.name, block.input)):
                            call.set(idempotency_key=k)
                        try:
                            result = tools[block.name](**block.input)
                        except KeyError:
                            call.set_error(f"unknown tool {block.name!r}", error_type="KeyError")
                            result = {"error": "unknown tool"}
                        except Exception as exc:  # the tool's own failure, as the agent reports it
                            call.set_error(str(exc), error_type=type(exc).__name__)
                            result = {"error": str(exc)}
                        else:
                            call.set_result(result)
                    results.append({"type": "tool_result", "tool_use_id": block.id, "content": json.dumps(result)})
                messages.append({"role": "user", "content": results})
        if status:
            s.set_status(status)
    recorder.shutdown()
    return s.id


def lookup(order_id: str) -> dict[str, Any]:
    if order_id.startswith("X"):
        raise LookupError(f"order {order_id} not found")
    return {"order_id": order_id, "status": "shipped"}


def flaky(order_id: str) -> dict[str, Any]:
    raise ConnectionError("connection refused by orders-db:5432")


SHOP = {"get_order": lookup, "track": flaky, "search": lambda query: {"hits": []}}


# -- tools.hallucinated -------------------------------------------------------------------------------


def test_a_tool_the_decision_was_not_offered_is_a_made_up_call():
    sid = scripted("status", ["get_order", "search"], [[("get_invoice", {"order_id": "A-1"})],
                                                       [("get_order", {"order_id": "A-1"})]], SHOP)
    (alert,) = alerts("tools.hallucinated")
    assert alert.session_id == sid and alert.family == "tools" and alert.turns == [1]
    assert alert.evidence["kind"] == "unknown_tool" and alert.evidence["tools_offered"] == ["get_order", "search"]
    assert alert.title.startswith("get_invoice called but not among the 2 tools offered (1 of 2 tool calls")
    assert alert.severity == "warning"  # half the session's calls


def test_arguments_that_fail_the_tool_s_signature_are_made_up_and_one_slip_in_many_calls_is_info():
    script = [[("get_order", {"order_id": "A-1", "include": "items"})]] + [[("get_order", {"order_id": f"A-{i}"})]
                                                                           for i in range(2, 7)]
    scripted("status", ["get_order", "search"], script, SHOP)
    (alert,) = alerts("tools.hallucinated")
    assert alert.evidence["kind"] == "bad_arguments" and alert.severity == "info"
    assert "unexpected keyword argument" in alert.evidence["calls"][0]["error"]
    assert alert.title.startswith("get_order called with arguments that fail its schema (1 of 6 tool calls")


def test_ordinary_tool_failures_are_not_made_up_calls():
    # A service down, and a record not found by the id the customer typed, are the tools' answers.
    scripted("status", ["get_order", "track"], [[("track", {"order_id": "A-1"})], [("track", {"order_id": "A-1"})],
                                                [("get_order", {"order_id": "X-9"})]], SHOP,
             question="Where is my order X-9? It was A-1 before.")
    assert alerts("tools.hallucinated") == []


def test_an_id_nothing_the_model_was_given_contains_and_that_is_not_found_is_invented():
    # The customer gave A-1; the model asks for X-42, which no message holds, and the shop has no such order.
    sid = scripted("status", ["get_order", "search"], [[("get_order", {"order_id": "X-42"})],
                                                       [("get_order", {"order_id": "A-1"})]], SHOP,
                   question="Where is my order A-1?")
    (alert,) = alerts("tools.hallucinated")
    assert alert.session_id == sid and alert.evidence["kind"] == "invented_id"
    assert alert.evidence["calls"][0]["invented"] == {"argument": "order_id", "value": "X-42"}
    assert alert.title.startswith("get_order asked for order_id 'X-42', which nothing the model was given contains")


def test_another_instrumentation_s_schema_errors_count_without_the_tools_offered_on_record():
    # A LangChain-style agent: no tools offered on record, its validation errors named its own way.
    with tracer.Store(db()) as store:
        insert_session(store, "lc-1", "langchain", "refund", T0)
        insert_calls(store, "lc-1", T0, [("lookup", "ok", None, None)] * 2 + [
            ("refund_order", "error", "ToolException", "1 validation error for RefundArgs\namount\n  field required"),
            ("refund_order", "error", "ToolException", "1 validation error for RefundArgs\namount\n  field required"),
            ("notify", "error", "ToolException", "SMTP server unavailable")])
    (alert,) = alerts("tools.hallucinated")
    assert alert.agent == "langchain" and alert.evidence["tool"] == "refund_order"
    assert alert.severity == "warning" and alert.evidence["made_up_in_session"] == 2


# -- rows as another instrumentation leaves them ------------------------------------------------------


def insert_session(store: tracer.Store, sid: str, agent: str, route: str | None, end_ns: int, *,
                   status: str = "ok", start_ns: int | None = None) -> None:
    # The callers open the store once for all their rows: opening and closing it for each row made this
    # file's tests the slowest of the suite (~40 ms a row).
    store.sql("""INSERT INTO sessions (session_id, agent, route, start_ns, end_ns, ended, status, turns, llm_calls,
                                       llm_errors, tool_calls, tool_errors, input_tokens, output_tokens,
                                       cache_read_tokens, cache_write_tokens, cost_usd, unpriced_calls, origin)
                 VALUES (?, ?, ?, ?, ?, true, ?, 1, 1, 0, 0, 0, 100, 10, 0, 0, 0.001, 0, 'production')""",
              [sid, agent, route, end_ns - 300 * SECOND if start_ns is None else start_ns, end_ns, status])


def insert_calls(store: tracer.Store, sid: str, at_ns: int, calls: list[tuple[str, str, str | None, str | None]], *,
                 offered: list[str] | None = None, args: dict | None = None) -> None:
    """Tool calls (tool, status, error type, error message), each after a decision that offered
    ``offered`` (no decision on record when None), one second apart from ``at_ns``."""
    for i, (tool, status, etype, message) in enumerate(calls):
        t = at_ns + i * SECOND
        if offered is not None:
            store.sql("""INSERT INTO llm_calls (span_id, trace_id, session_id, turn_index, attempt, start_ns,
                                                end_ns, status, stream, tools_available, tools_chosen, action)
                         VALUES (?, 't', ?, ?, 0, ?, ?, 'ok', false, ?, ?, 'tool_use')""",
                      [f"{sid}-d{i}", sid, i + 1, t, t + 100, offered, [tool]])
        arguments = json.dumps(args if args is not None else {"i": i})
        store.sql("""INSERT INTO tool_calls (span_id, trace_id, session_id, turn_index, tool_name, start_ns, end_ns,
                                             status, error_type, error_message, arguments, result, args_key)
                     VALUES (?, 't', ?, ?, ?, ?, ?, ?, ?, ?, ?, '{}', md5(? || ?))""",
                  [f"{sid}-c{i}", sid, i + 1, tool, t + 200, t + 300, status, etype, message, arguments, tool,
                   arguments])


def test_a_tool_that_ran_though_its_decision_was_not_offered_it_is_made_up():
    # Recorded by another instrumentation: the decision offered two tools, the agent ran a third, and it worked.
    with tracer.Store(db()) as store:
        insert_session(store, "other-1", "router", "triage", T0)
        insert_calls(store, "other-1", T0 - 60 * SECOND,
                     [("lookup", "ok", None, None), ("delete_all", "ok", None, None)], offered=["lookup", "search"])
    (alert,) = alerts("tools.hallucinated")
    assert alert.evidence["kind"] == "unknown_tool" and alert.evidence["calls"][0]["error"] is None
    assert alert.title.startswith("delete_all called but not among the 2 tools offered")


# -- tools.overload -----------------------------------------------------------------------------------


def many(n: int) -> list[str]:
    return [f"tool_{i:02d}" for i in range(n)]


def test_forty_tools_with_accurate_choices_raise_nothing():
    with tracer.Store(db()) as store:
        for i in range(30):
            insert_session(store, f"wide-{i:02d}", "wide", "ops", T0 + i * HOUR)
            insert_calls(store, f"wide-{i:02d}", T0 + i * HOUR - 60 * SECOND,
                         [(f"tool_{(i + j) % 40:02d}", "ok", None, None) for j in range(3)], offered=many(40))
    assert alerts("tools.overload") == []


def test_many_tools_that_spoil_the_agent_s_choices_alert_with_both_rates():
    # 40 tools: a third of the decisions pick a tool that is not there or ask for what does not exist;
    # with 5 tools the same agent chooses well.
    with tracer.Store(db()) as store:
        for i in range(30):
            insert_session(store, f"few-{i:02d}", "crowded", "small", T0 + i * HOUR)
            insert_calls(store, f"few-{i:02d}", T0 + i * HOUR - 60 * SECOND, [("tool_01", "ok", None, None)] * 3,
                         offered=many(5))
        for i in range(30):
            sid = f"crowd-{i:02d}"
            insert_session(store, sid, "crowded", "big", T0 + (40 + i) * HOUR)
            bad = ("tool_99", "error", "not_found", "no such record") if i % 3 == 0 else ("tool_02", "ok", None, None)
            insert_calls(store, sid, T0 + (40 + i) * HOUR - 60 * SECOND, [bad, ("tool_03", "ok", None, None)],
                         offered=many(40))
    found = alerts("tools.overload")
    assert found and {a.route for a in found} == {"big"}
    (alert,) = found
    acc = alert.evidence["choice_accuracy"]
    assert acc["few_tools"]["bad_rate"] == 0 and acc["many_tools"]["bad_rate"] >= 0.15
    assert "offered more than 20 tools (up to 40)" in alert.title and "against 0% of" in alert.title


# -- tools.diversity ----------------------------------------------------------------------------------


def route_sessions(agent: str, route: str, tool_sets: list[list[str]], *, at: int = 0) -> list[str]:
    ids = []
    with tracer.Store(db()) as store:
        for i, used in enumerate(tool_sets):
            sid = f"{agent}-{route}-{at + i:03d}"
            end = T0 + (at + i) * HOUR
            insert_session(store, sid, agent, route, end)
            insert_calls(store, sid, end - 60 * SECOND, [(t, "ok", None, None) for t in used])
            ids.append(sid)
    return ids


FOUR = ["lookup", "search", "summarise", "reply"]


def test_a_route_whose_sessions_narrow_to_one_tool_alerts():
    route_sessions("triage", "inbox", [FOUR[: 3 + i % 2] for i in range(50)])
    route_sessions("triage", "inbox", [["search", "search", "search"]] * 12, at=50)
    found = alerts("tools.diversity")
    assert found and found[-1].route == "inbox" and found[-1].evidence["recent"]["median_distinct_tools"] == 1
    assert found[-1].evidence["tools_recent"] == {"search": 30}
    assert "narrowed: the last 10 sessions used a median of 1 distinct tools" in found[-1].title


def test_a_young_route_a_route_of_one_tool_and_a_varied_route_raise_nothing():
    route_sessions("triage", "young", [FOUR] * 8)
    route_sessions("triage", "young", [["search"]] * 12, at=8)
    route_sessions("poller", "jobs", [["get_status"] * 5] * 70)
    route_sessions("triage", "varied", [FOUR[: 2 + i % 3] for i in range(70)])
    assert alerts("tools.diversity") == []


# -- safety.duplicate_effect --------------------------------------------------------------------------


PAID: list[dict[str, Any]] = []


def pay_invoice(invoice: str, amount_cents: int) -> dict[str, Any]:
    PAID.append({"invoice": invoice, "amount_cents": amount_cents})
    return {"paid": True, "payment": f"pay_{len(PAID)}"}


def test_a_payment_made_again_after_a_resume_without_a_key_alerts():
    script = [[("get_order", {"order_id": "A-1"})], [("pay_invoice", {"invoice": "I-7", "amount_cents": 4200})]]
    tools = {**SHOP, "pay_invoice": pay_invoice}
    sid = scripted("billing", ["get_order", "pay_invoice"], script, tools, agent="payer")
    # The process died before it noted the payment; the resumed run (same session) pays again.
    scripted("billing", ["get_order", "pay_invoice"], script[1:], tools, agent="payer", session_id=sid)
    (alert,) = alerts("safety.duplicate_effect")
    assert alert.session_id == sid and alert.severity == "critical" and alert.family == "safety"
    assert alert.evidence["executions"] == 2 and alert.evidence["runs"] == 2
    assert alert.title == ("pay_invoice was executed 2 times in one session with the same arguments across a "
                           "resume: an irreversible side effect done twice")


def test_a_resumed_refund_under_the_same_key_that_got_the_stored_result_raises_nothing():
    refunds: dict[str, dict] = {}

    def issue_refund(order_id: str, amount_cents: int) -> dict[str, Any]:
        key = f"{order_id}:{amount_cents}"
        if key in refunds:
            return {**refunds[key], "idempotent_replay": True}
        refunds[key] = {"status": "refunded", "refund_id": f"r{len(refunds)}"}
        return refunds[key]

    script = [[("issue_refund", {"order_id": "A-2", "amount_cents": 900})]]
    keyed = {"issue_refund": issue_refund}
    sid = scripted("refund", ["issue_refund"], script, keyed, agent="keyed", key=lambda n, a: f"{n}:{a['order_id']}")
    scripted("refund", ["issue_refund"], script, keyed, agent="keyed", session_id=sid,
             key=lambda n, a: f"{n}:{a['order_id']}")
    assert len(refunds) == 1 and alerts("safety.duplicate_effect") == []


def test_a_polling_agent_and_two_different_e_mails_are_not_duplicates():
    status = iter(["queued", "running", "running", "done"])
    scripted("export", ["get_job_status", "send_email"],
             [[("get_job_status", {"job": "J-1"})]] * 4 + [[("send_email", {"to": "a@x.example", "body": "1"})],
                                                            [("send_email", {"to": "b@x.example", "body": "1"})]],
             {"get_job_status": lambda job: {"state": next(status)}, "send_email": lambda to, body: {"sent": True}},
             agent="poller")
    assert alerts("safety.duplicate_effect") == []


def test_the_reference_agent_crashed_after_a_refund_and_resumed_pays_once_and_raises_nothing():
    recorder = tracer.Recorder(db())

    def crash(name: str, outcome: Any) -> None:
        session = tracer.current_session()
        if name == "issue_refund" and not outcome.is_error and session is not None:
            raise SimulatedCrash(session.id, name)

    with World(default_world_path(db())) as world:
        try:
            Agent(world, recorder, after_tool=crash).run(get_scenario("refund_under_threshold"))
            raise AssertionError("the agent did not crash")
        except SimulatedCrash as exc:
            out = Agent(world, recorder).resume(exc.session_id)
        assert len(world.refunds(out.session_id)) == 1
    recorder.shutdown()
    with tracer.Store(db()) as store:
        keyed = store.sql("SELECT count(*) FROM tool_calls WHERE tool_name = 'issue_refund' AND idempotency_key <> ''")
    assert keyed[0][0] >= 1 and alerts("safety.duplicate_effect") == []


def test_a_duplicate_is_found_online_as_the_session_ends():
    got: list[tracer.AlertRecord] = []
    online = D.OnlineDetector(db(), publish=got.extend, interval_s=0.05)
    recorder = tracer.Recorder(db(), on_sessions_ended=online)
    client = recorder.instrument(FakeModel(policy=lambda body: reply("ok", stop_reason="end_turn")).client())
    with recorder.session("payer", **{"flightrec.route": "billing"}) as s:
        with s.turn():
            client.messages.create(model="claude-haiku-4-5", max_tokens=64, messages=[{"role": "user", "content": "x"}])
        for _ in range(2):
            with s.turn(), s.tool_call("transfer_funds", {"to": "ACC-1", "cents": 500}) as call:
                call.set_result({"transfer": "ok"})
    recorder.flush()
    assert online.flush(10)
    online.close()
    recorder.shutdown()
    assert [a.detector for a in got] == ["safety.duplicate_effect"] and online.errors == 0


# -- approval.waiting, approval.expired ---------------------------------------------------------------


def parked(sid: str, end_ns: int, events: list[dict[str, Any]], *, agent: str = "support") -> None:
    with tracer.Store(db()) as store:
        insert_session(store, sid, agent, "refund", end_ns, status="waiting_human")
        store.sql("INSERT INTO turns VALUES (?, 1, 't', ?, ?, ?, ?)",
                  [sid, f"{sid}-turn", end_ns - SECOND, end_ns, json.dumps(events)])


def requested(approval_id: str, at_ns: int, timeout_s: float = 86400 * 2) -> dict[str, Any]:
    return {"name": "approval_requested", "time_ns": at_ns,
            "attributes": {"approval_id": approval_id, "summary": "refund $250.00 for A-1002", "tool": "issue_refund",
                           "requested_at": at_ns / 1e9, "deadline": at_ns / 1e9 + timeout_s, "timeout_s": timeout_s}}


@pytest.mark.parametrize("waited_h, severity", [(3.9, None), (5, "warning"), (30, "critical")])
def test_an_approval_waiting_past_the_threshold_alerts_by_how_long(waited_h, severity):
    parked("s-wait", T0, [requested("apr_1", T0)])
    found = alerts("approval.waiting", now_ns=T0 + int(waited_h * HOUR))
    assert [a.severity for a in found] == ([severity] if severity else [])
    if severity:
        assert found[0].evidence["approval_id"] == "apr_1" and found[0].turns == [1]
        assert found[0].title.startswith(f"refund $250.00 for A-1002 has waited {waited_h:.1f} h")


def test_an_approval_past_its_deadline_is_critical_and_a_decided_one_raises_nothing():
    parked("s-late", T0, [requested("apr_2", T0, timeout_s=3 * 3600)])
    parked("s-done", T0, [requested("apr_3", T0), {"name": "human_decision", "time_ns": T0 + HOUR,
                                                    "attributes": {"approval_id": "apr_3", "decision": "approved"}}])
    (alert,) = alerts("approval.waiting", now_ns=T0 + 5 * HOUR)
    assert alert.session_id == "s-late" and alert.severity == "critical" and "past its deadline" in alert.title
    # Seen again by a later run: one observation per approval and severity, so nothing new.
    assert alerts("approval.waiting", now_ns=T0 + 6 * HOUR) == []


def test_an_agent_that_records_no_approval_events_is_timed_from_when_it_parked():
    parked("s-bare", T0, [], agent="other")
    (alert,) = alerts("approval.waiting", now_ns=T0 + 5 * HOUR)
    assert alert.agent == "other" and alert.evidence["counted_from"].startswith("when the session parked")


def test_the_reference_agent_s_held_refund_alerts_hours_later_on_its_own_clock():
    wall = FakeClock(start=1_760_000_000.0)
    recorder = tracer.Recorder(db())
    with World(default_world_path(db())) as world:
        out = Agent(world, recorder, wall_clock=wall).run(get_scenario("refund_over_threshold"))
    recorder.shutdown()
    assert out.status == "waiting_human"
    (alert,) = alerts("approval.waiting", now_ns=int((1_760_000_000 + 5 * 3600) * 1e9))
    assert alert.session_id == out.session_id and alert.evidence["tool"] == "issue_refund"
    assert alert.evidence["waited_s"] == 5 * 3600 and alert.family == "approvals"


def test_an_expired_approval_alerts_once_per_expiry():
    with tracer.Store(db()) as store:
        insert_session(store, "s-exp", "support", "refund", T0)
        store.sql("INSERT INTO turns VALUES ('s-exp', 3, 't', 'x', ?, ?, ?)", [T0 - SECOND, T0, json.dumps([
            {"name": "approval_expired", "time_ns": T0, "attributes": {
                "approval_id": "apr_9", "tool": "issue_refund", "waited_s": 90000.0, "timeout_s": 86400,
                "outcome": "escalate"}}])])
    (alert,) = alerts("approval.expired")
    assert alert.turns == [3] and alert.title == ("an approval of issue_refund expired after 25.0 h with no decision; "
                                                  "the agent went on to escalate")
    assert alerts("approval.expired") == []  # the same history again: nothing new


def test_the_new_settings_load_from_yaml_and_a_bad_pattern_is_named(tmp_path):
    good = tmp_path / "detect.yaml"
    good.write_text("tools: {max_tools: 50}\nsafety: {irreversible_tools: [wire_money]}\n"
                    "approvals: {wait_warning_s: 60}\n")
    config = D.load_config(good)
    assert config.tools.max_tools == 50 and config.safety.irreversible_tools == ["wire_money"]
    assert config.approvals.wait_warning_s == 60 and "approvals:" in D.config_yaml(config)
    bad = tmp_path / "bad.yaml"
    bad.write_text("tools: {bad_argument_patterns: ['(']}\n")
    with pytest.raises(tracer.ConfigError, match=r"tools.bad_argument_patterns: '\(' is not a regular expression"):
        D.load_config(bad)


# -- the same alert reads the same on every run ------------------------------------------------------


def test_tools_that_failed_are_named_in_order_whatever_order_they_failed_in():
    # DuckDB's ``list(DISTINCT …)`` keeps no order: the title and evidence changed from run to run.
    names = ["zap", "mend", "audit", "quote", "bill", "ship", "fetch", "pack"]
    broken = {n: flaky for n in names}
    scripted("ops", names, [[(n, {"order_id": "A1"})] for n in names], broken)
    (alert,) = alerts("reliability.tool_errors")
    assert alert.title == f"8 of 8 tool calls failed for good ({', '.join(sorted(names))})"
    assert alert.evidence["tools"] == sorted(names)
