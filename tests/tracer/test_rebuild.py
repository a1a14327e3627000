"""Exact capture: every stored call rebuilds to the hash recorded when it was made."""

from __future__ import annotations

import json
import random

import pytest

import tracer
from tests.tracer.fakes import FakeAPI, message, run_agent


def _varied_policy(rng: random.Random):
    def policy(body):
        turn = len(body["messages"])
        if turn < rng.randint(3, 9):
            return message([
                {"type": "thinking", "thinking": f"step {turn}: check the order", "signature": "sig"},
                {"type": "text", "text": "Checking — ünïcödé ✓"},
                {"type": "tool_use", "id": f"toolu_{turn}_{rng.randint(0, 9999)}", "name": "get_order",
                 "input": {"order_id": f"A-{turn}", "nested": {"qty": turn, "price": 12.5, "tags": ["x", None]}}},
            ], "tool_use", cache_read=100 * turn, cache_write=10)
        return message([{"type": "text", "text": "All done."}], "end_turn")
    return policy


def _realistic_store(rec: tracer.Recorder, sessions: int = 12) -> None:
    rng = random.Random(7)
    for i in range(sessions):
        api = FakeAPI(_varied_policy(rng), errors=[529] if i % 4 == 0 else [])
        client = rec.instrument(api.client(max_retries=2))
        params = {
            "system": [{"type": "text", "text": "You are support. Rules: be brief.",
                        "cache_control": {"type": "ephemeral", "ttl": "1h"}},
                       {"type": "text", "text": f"Customer tier: {rng.choice(['gold', 'basic'])}"}],
            "tool_choice": rng.choice([{"type": "auto"}, {"type": "any", "disable_parallel_tool_use": True}]),
            "metadata": {"user_id": f"u-{i}"},
            "stop_sequences": ["\n\nHuman:"],
            "extra_body": {"temperature": round(rng.random(), 3), "top_k": 5},
        }
        if i % 3 == 0:
            params["thinking"] = {"type": "enabled", "budget_tokens": 1024}
            params["max_tokens"] = 4096
        with rec.session(agent=f"agent-{i % 2}"):
            run_agent(client, f"Question {i}: where is my order? 📦", stream=bool(i % 2), **params)
    rec.flush()


def test_every_call_in_a_realistic_store_rebuilds_exactly():
    rec = tracer.Recorder()
    _realistic_store(rec)
    rec.shutdown()
    with tracer.Store(rec.db_path, read_only=True) as store:
        result = store.verify_requests()
        calls = store._query("SELECT count(*) FROM llm_calls WHERE status = 'ok'")[0][0]
    assert result.failures == []
    assert result.exact == result.total > 40 and calls > 30


def test_rebuilt_body_is_the_request_that_was_sent():
    api = FakeAPI()
    rec = tracer.Recorder()
    system = [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}]
    with rec.session(agent="support"):
        run_agent(rec.instrument(api.client()), system=system, tool_choice={"type": "tool", "name": "get_order"},
                  thinking={"type": "enabled", "budget_tokens": 2000}, max_tokens=3000,
                  extra_body={"temperature": 0.3})
    rec.shutdown()
    with tracer.Store(rec.db_path, read_only=True) as store:
        span_ids = [r[0] for r in store._query("SELECT span_id FROM llm_calls ORDER BY start_ns")]
        rebuilt = [store.rebuild_request(s) for s in span_ids]
    assert rebuilt == api.requests
    assert rebuilt[0]["tools"][1]["cache_control"] == {"type": "ephemeral"}
    assert rebuilt[0]["temperature"] == 0.3


def test_content_mode_none_stores_no_content_and_says_why():
    api = FakeAPI()
    rec = tracer.Recorder(content="none")
    with rec.session(agent="support") as s:
        run_agent(rec.instrument(api.client()))
    rec.shutdown()
    with tracer.Store(rec.db_path, read_only=True) as store:
        assert store._query("SELECT count(*) FROM content")[0][0] == 0
        dump = json.dumps(store._query("SELECT * FROM spans")) + json.dumps(store._query("SELECT * FROM tool_calls"))
        acc = store.session_account(s.id)
        result = store.verify_requests()
        with pytest.raises(tracer.NotRebuildableError, match="content was not captured"):
            store.rebuild_request(acc.turns[0].llm_calls[0].span_id)
    assert "Where is A-1" not in dump and "shipped" not in dump
    assert acc.turns[0].llm_calls[0].tools_chosen == ["get_order"]  # metadata is still there
    assert result.exact == 0
    assert {f["reason"] for f in result.failures} == {"content was not captured (content mode none)"}
