"""Linear storage: the history each request repeats is stored once."""

from __future__ import annotations

import tracer
from tests.tracer.fakes import FakeAPI, message, run_agent


def _long_session_bytes(turns: int, db: str) -> int:
    def policy(body):
        if len(body["messages"]) < 2 * turns - 1:
            return message([{"type": "text", "text": "Checking the order history in detail. " * 5},
                            {"type": "tool_use", "id": f"t{len(body['messages'])}", "name": "get_order",
                             "input": {"order_id": f"A-{len(body['messages'])}"}}], "tool_use")
        return message([{"type": "text", "text": "Done."}], "end_turn")

    rec = tracer.Recorder(db)
    with rec.session(agent="support"):
        run_agent(rec.instrument(FakeAPI(policy).client()), max_turns=turns + 1)
    rec.shutdown()
    with tracer.Store(db, read_only=True) as store:
        # Everything a call stores that grows with the session: content, chain nodes, and the row itself.
        content = store._query("SELECT sum(length(body)) FROM content")[0][0]
        chain = store._query("SELECT 3 * 64 * count(*) FROM message_chain")[0][0]
        inline = store._query(
            "SELECT sum(length(request_params) + length(response_body) + 64 * (2 + len(tool_refs)))"
            " FROM llm_calls")[0][0]
        assert store._query("SELECT max(turns) FROM sessions")[0][0] == turns
    return content + chain + inline


def test_hundred_turns_cost_about_ten_times_ten_turns(tmp_path):
    small = _long_session_bytes(10, str(tmp_path / "10.duckdb"))
    large = _long_session_bytes(100, str(tmp_path / "100.duckdb"))
    # Naive storage (whole request per call) would be about 100x; references keep it near 10x.
    assert large / small <= 12, (small, large)
