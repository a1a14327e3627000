"""Ingest reuses each session's previous request by text; whatever the sequence, rebuilds stay exact."""

from __future__ import annotations

import copy
import random

import tracer
from tracer import canonical_json, sha256_hex
from tracer._ingest import Ingestor, SpanRecord


def _record(i: int, session: str, body: dict) -> SpanRecord:
    text = canonical_json(body)
    return SpanRecord(
        trace_id=f"{hash(session) & (2**64 - 1):032x}", span_id=f"{i:016x}", parent_span_id=None,
        name="chat", kind="CLIENT", start_ns=i, end_ns=i + 1, status_code="UNSET", status_message=None,
        attributes={"gen_ai.operation.name": "chat", "gen_ai.conversation.id": session,
                    "flightrec.request.body": text, "flightrec.request.sha256": sha256_hex(text)},
        scope="flightrec",
    )


def _mutate(rng: random.Random, body: dict) -> dict:
    body = copy.deepcopy(body)
    roll = rng.random()
    msgs = body.setdefault("messages", [])
    if roll < 0.45:  # the usual: the conversation grows
        msgs.append({"role": rng.choice(["user", "assistant"]), "content": f"m{rng.randint(0, 99)} " * 3})
    elif roll < 0.55 and msgs:  # an earlier message edited (as a replay or a summariser would)
        msgs[rng.randrange(len(msgs))]["content"] = "edited"
    elif roll < 0.62 and msgs:  # truncation
        del msgs[: rng.randint(1, len(msgs))]
    elif roll < 0.7:
        body["max_tokens"] = rng.choice([1, 10, 100, 1000])  # a value that is a prefix of the next
    elif roll < 0.78:
        body["tools"] = [{"name": f"t{k}", "input_schema": {"type": "object"}} for k in range(rng.randint(0, 3))]
    elif roll < 0.84:
        body.pop(rng.choice(["tools", "system", "messages"]), None)
    elif roll < 0.9:
        body["system"] = rng.choice(["short", [{"type": "text", "text": "blocks"}], "short"])
    else:
        body["zzz_extra"] = {"messages": [1, 2], "n": rng.random()}  # a nested "messages" key
    return body


def test_random_request_sequences_rebuild_exactly():
    rng = random.Random(11)
    store = tracer.Store(":memory:")
    ingestor = Ingestor(known_hash_limit=50)  # small, so that forgetting hashes is exercised too
    bodies = {f"s{k}": {"model": "m", "max_tokens": 10, "messages": []} for k in range(4)}
    i = 0
    for _batch in range(30):
        records = []
        for _ in range(rng.randint(1, 12)):
            session = rng.choice(list(bodies))
            bodies[session] = _mutate(rng, bodies[session])
            records.append(_record(i, session, bodies[session]))
            i += 1
        store.write(ingestor.build(records))
    result = store.verify_requests()
    assert result.total == i and result.failures == []


def test_a_failed_write_does_not_leave_a_broken_chain():
    store = tracer.Store(":memory:")
    ingestor = Ingestor()
    body = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "one"}]}
    lost = ingestor.build([_record(1, "s", body)])
    ingestor.rollback(lost)  # as the exporter does when a write fails
    body["messages"].append({"role": "assistant", "content": "two"})
    store.write(ingestor.build([_record(2, "s", body)]))
    assert store.verify_requests().failures == []
