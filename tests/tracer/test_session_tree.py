"""Sub-agents: a session started by another is its child (``flightrec.parent_session_id``), and the
tree of sessions adds up its costs (``Store.session_tree``), recorded embedded or sent by any OTLP sender."""

from __future__ import annotations

import json

import pytest

import tracer
from tests.tracer.fakes import FakeAPI, run_agent
from tests.tracer.test_collector import post
from tests.tracer.test_foreign import _kv
from tracer._collector import Collector

_CALL_COST = 400 * 1e-6 + 40 * 5e-6  # a FakeAPI call on claude-haiku-4-5: 400 input, 40 output tokens


def _family(db: str) -> dict[str, str]:
    """A support session that runs a researcher (opened inside it), which runs a checker of its own;
    a session opened inside with ``parent_session_id=""``, which is no child; and a handoff to a
    session in another process, which names its parent. Every session makes two calls."""
    rec = tracer.Recorder(db)
    ids: dict[str, str] = {}
    with rec.session("support", **{"flightrec.route": "policy"}) as support:
        run_agent(rec.instrument(FakeAPI().client()))
        with rec.session("researcher") as researcher:
            run_agent(rec.instrument(FakeAPI().client()))
            with rec.session("checker") as checker:
                run_agent(rec.instrument(FakeAPI().client()))
        with rec.session("unrelated", parent_session_id="") as unrelated:
            run_agent(rec.instrument(FakeAPI().client()))
        run_agent(rec.instrument(FakeAPI().client()), "Where is A-2?")  # the parent's own calls go on after
    with rec.session("billing", parent_session_id=support.id) as billing:
        run_agent(rec.instrument(FakeAPI().client()))
    rec.shutdown()
    ids.update(support=support.id, researcher=researcher.id, checker=checker.id, unrelated=unrelated.id,
               billing=billing.id)
    assert (researcher.parent_session_id, checker.parent_session_id, unrelated.parent_session_id) == (
        support.id, researcher.id, None)
    return ids


def test_a_session_opened_inside_another_is_its_child_and_the_tree_adds_up(tmp_path):
    db = str(tmp_path / "s.duckdb")
    ids = _family(db)
    with tracer.Store(db, read_only=True) as store:
        parents = dict(store.sql("SELECT session_id, parent_session_id FROM sessions"))
        assert parents == {ids["support"]: None, ids["researcher"]: ids["support"], ids["checker"]: ids["researcher"],
                           ids["unrelated"]: None, ids["billing"]: ids["support"]}
        assert store.get_session(ids["checker"]).parent_session_id == ids["researcher"]
        # The child's own calls are its own: the parent's account holds only its four.
        assert store.get_session(ids["support"]).llm_calls == 4
        assert store.get_session(ids["researcher"]).llm_calls == 2

        # Asked from any session of it, the tree is the same: from the root, depth first, siblings by start.
        tree = store.session_tree(ids["checker"][:13])
        assert tree == store.session_tree(ids["support"])
        assert tree.root_session_id == ids["support"]
        assert [(n.session_id, n.depth, n.agent) for n in tree.nodes] == [
            (ids["support"], 0, "support"), (ids["researcher"], 1, "researcher"), (ids["checker"], 2, "checker"),
            (ids["billing"], 1, "billing")]
        root, researcher, checker, billing = tree.nodes
        assert root.cost_usd == pytest.approx(4 * _CALL_COST)
        assert researcher.cost_usd == checker.cost_usd == billing.cost_usd == pytest.approx(2 * _CALL_COST)
        assert researcher.subtree_cost_usd == pytest.approx(4 * _CALL_COST)
        assert root.subtree_cost_usd == pytest.approx(10 * _CALL_COST)
        assert root.subtree_tokens == 10 * 440 and root.tokens == 4 * 440
        # A session that started nothing, and was started by nothing, is a tree of one.
        alone = store.session_tree(ids["unrelated"])
        assert [n.session_id for n in alone.nodes] == [ids["unrelated"]]
        assert alone.root.subtree_cost_usd == alone.root.cost_usd == pytest.approx(2 * _CALL_COST)
        with pytest.raises(tracer.UnknownSessionError):
            store.session_tree("no-such-session")

        # The child's root span names its parent, and links to the parent's root span (and, for a session
        # opened inside, the parent's turn it was opened in).
        (attrs, links), = store.sql(
            "SELECT attributes, links FROM spans WHERE session_id = ? AND parent_span_id IS NULL", [ids["researcher"]])
        assert json.loads(attrs)["flightrec.parent_session_id"] == ids["support"]
        (root_span,), = store.sql("SELECT span_id FROM spans WHERE session_id = ? AND parent_span_id IS NULL",
                                  [ids["support"]])
        assert root_span in [link["span_id"] for link in json.loads(links)]


def test_a_child_inherits_the_origin_of_its_parent(tmp_path):
    db = str(tmp_path / "s.duckdb")
    rec = tracer.Recorder(db)
    with tracer.eval_trial("run-1", "case-1", 0), rec.session("support") as parent:
        with rec.session("researcher") as child:
            run_agent(rec.instrument(FakeAPI().client()))
    marks = {"flightrec.replay.kind": "fork", "flightrec.replay.session": "original"}
    with rec.session("support", **marks) as fork, rec.session("researcher") as fork_child:
        run_agent(rec.instrument(FakeAPI().client()))
    rec.shutdown()
    with tracer.Store(db, read_only=True) as store:
        row = "SELECT origin, eval_run_id, source_session_id, parent_session_id FROM sessions WHERE session_id = ?"
        assert store.sql(row, [child.id]) == [("eval", "run-1", None, parent.id)]
        assert store.sql(row, [fork_child.id]) == [("fork", None, None, fork.id)]  # not a fork *of* the original


def _span(trace: str, span_id: str, parent: str | None, conversation: str, agent: str, start: int,
          **attrs: object) -> dict:
    span = {"traceId": trace, "spanId": span_id, "name": f"invoke_agent {agent}", "kind": 1,
            "startTimeUnixNano": str(start), "endTimeUnixNano": str(start + 1_000_000), "status": {},
            "attributes": _kv({"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": agent,
                               "gen_ai.conversation.id": conversation, **attrs})}
    if parent:
        span["parentSpanId"] = parent
    return span


def _chat(trace: str, span_id: str, parent: str, start: int) -> dict:
    return {"traceId": trace, "spanId": span_id, "parentSpanId": parent, "name": "chat claude-haiku-4-5", "kind": 3,
            "startTimeUnixNano": str(start), "endTimeUnixNano": str(start + 500_000), "status": {},
            "attributes": _kv({"gen_ai.operation.name": "chat", "gen_ai.request.model": "claude-haiku-4-5",
                               "gen_ai.usage.input_tokens": 400, "gen_ai.usage.output_tokens": 40})}


def test_a_child_session_from_otlp_names_its_parent_or_sits_under_its_span(tmp_path):
    db = str(tmp_path / "served.duckdb")
    t0 = 1_700_000_000_000_000_000
    a, b = "5b8efff798038103d269b633813fc60c", "6c9f00089914921403e37a744924fd71"
    # One trace in one request: a triage agent hands off to a refunds agent, a child span of its own
    # with another conversation id (the OpenAI Agents SDK's and LangGraph's shape).
    handoff = [_span(a, "aaaaaaaaaaaaaaa1", None, "conv-triage", "triage", t0),
               _chat(a, "aaaaaaaaaaaaaaa2", "aaaaaaaaaaaaaaa1", t0 + 1),
               _span(a, "aaaaaaaaaaaaaaa3", "aaaaaaaaaaaaaaa1", "conv-refunds", "refunds", t0 + 2),
               _chat(a, "aaaaaaaaaaaaaaa4", "aaaaaaaaaaaaaaa3", t0 + 3)]
    # Another trace, another request: a session that names its parent itself.
    named = [_span(b, "bbbbbbbbbbbbbbb1", None, "conv-audit", "auditor", t0 + 5,
                   **{"flightrec.parent_session_id": "conv-refunds"}),
             _chat(b, "bbbbbbbbbbbbbbb2", "bbbbbbbbbbbbbbb1", t0 + 6)]
    with Collector(db, port=0) as collector:
        for spans in (handoff, named):
            body = {"resourceSpans": [{"resource": {"attributes": _kv({"service.name": "py-agents"})},
                                       "scopeSpans": [{"scope": {"name": "agents"}, "spans": spans}]}]}
            assert post(collector.url, json.dumps(body).encode(), "application/json")[0] == 200
    with tracer.Store(db, read_only=True) as store:
        assert dict(store.sql("SELECT session_id, parent_session_id FROM sessions")) == {
            "conv-triage": None, "conv-refunds": "conv-triage", "conv-audit": "conv-refunds"}
        tree = store.session_tree("conv-audit")
        assert [(n.session_id, n.depth) for n in tree.nodes] == [("conv-triage", 0), ("conv-refunds", 1),
                                                                 ("conv-audit", 2)]
        assert tree.root.subtree_cost_usd == pytest.approx(3 * _CALL_COST)
        assert tree.root.cost_usd == pytest.approx(_CALL_COST)
