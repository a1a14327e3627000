"""Tool-call sequences with the verdict the loop rules must give: the one corpus that the Python
rules (``tracer.find_loops``), the in-process ``LoopGuard`` and the SQL detector (``loop.calls``)
are all held to, under the default rules (``CASES``' verdicts) and under others (``RULES``, where
the verdict is ``find_loops``'). Shapes come from agents unlike the reference agent: polling,
pagination, retries, batch lookups and searches."""

from __future__ import annotations

import json
from dataclasses import dataclass

from tracer import LoopCall as C
from tracer import LoopRules


def j(**fields: object) -> str:
    return json.dumps(fields)


@dataclass(frozen=True)
class Case:
    name: str
    calls: list[C]
    loop: str | None
    """The kind of loop ``find_loops`` must report (``repeat``, ``failure``, ``near``, ``cycle``,
    ``polling``), or ``None`` for a sequence that must raise nothing."""


def _rid(i: int) -> str:
    return f"{i:08x}-1111-4222-8333-{i * 7919:012x}"


CASES: list[Case] = [
    # -- loops ---------------------------------------------------------------------------------
    Case("the same search, the same answer", [C("search", {"q": "refund policy"}, "[]")] * 5, "repeat"),
    Case("a fresh request id on every answer",
         [C("get_order", {"order_id": "A-1"}, j(status="shipped", request_id=_rid(i), ts=1764600000 + i))
          for i in range(5)], "repeat"),
    Case("arguments in another key order and number format",
         [C("quote", '{"sku": "X-1", "qty": 2}', "9.99"), C("quote", '{"qty": 2.0, "sku": "X-1"}', "9.99"),
          C("quote", {"qty": 2, "sku": "X-1"}, "9.99"), C("quote", '{ "sku" : "X-1" ,"qty":2 }', "9.99")], "repeat"),
    Case("the same failure, never recovered",
         [C("fetch", {"url": "https://x/a"}, error=f"HTTPError: 503 upstream (req_{i}ab3kd9x)") for i in range(5)],
         "failure"),
    Case("paraphrased queries, no new answer",
         [C("search_kb", {"query": q}, j(hits=[])) for q in
          ("reset password", "password reset steps", "how to reset my password", "reset the password",
           "password resetting")], "near"),
    Case("a page size nudged",
         [C("list_orders", {"status": "open", "page_size": n}, j(orders=[], total=0)) for n in (20, 25, 30, 40)],
         "near"),
    Case("a date shifted by a day",
         [C("find_flights", {"from": "SFO", "to": "JFK", "date": f"2026-03-0{d}"}, j(flights=[], date=f"2026-03-0{d}"))
          for d in range(1, 6)], "near"),
    Case("a cycle of two calls going round",
         [c for _ in range(3) for c in (C("search", {"q": "tracking"}, j(hits=["doc-7"])),
                                        C("read", {"doc_id": "doc-7"}, "Tracking numbers are emailed."))], "cycle"),
    Case("a search re-run between reads of a page that comes back a little different each time",
         [c for n in (40, 55, 30, 62, 47, 51) for c in (C("web_search", {"query": "acme churn"}, j(urls=["u/1"])),
                                                        C("fetch_page", {"url": "u/1"}, j(text="churn data " * n)))],
         "repeat"),
    Case("pages 2 and 3 asked again and again",
         [C("list", {"page": p}, j(items=[f"r{p}"])) for p in (1, 2, 3, 2, 3, 2, 3, 2, 3)], "cycle"),
    Case("an amount sent as a number, a string and rounded, refused each time",
         [C("payout", {"account_id": "SUP-7", "amount": a}, error="invalid_request: account SUP-7 cannot receive EUR")
          for a in (1196.72, "1196.72", 1196, 1196.72, "1196.72")], "failure"),
    Case("a job polled past the budget", [C("job_status", {"job_id": "J-9"}, j(progress=i)) for i in range(60)],
         "polling"),
    Case("a flaky call retried past its budget, then successful",
         [C("fetch", {"url": "https://x/c"}, error="TimeoutError: timed out after 10s") for _ in range(7)]
         + [C("fetch", {"url": "https://x/c"}, j(body="ok"))], "failure"),
    Case("the same call, its results not recorded", [C("search", {"q": "refund policy"})] * 5, "repeat"),
    Case("a stuck job polled until the session ended",
         [C("job_status", {"job_id": "J-9"}, j(status="running", checked_at=f"2026-03-01T10:00:{i:02d}Z"))
          for i in range(12)], "repeat"),
    # -- not loops -----------------------------------------------------------------------------
    Case("a job polled while its progress rises",
         [C("job_status", {"job_id": "J-1"}, j(status="running", progress=p, request_id=_rid(p)))
          for p in range(0, 100, 10)] + [C("job_status", {"job_id": "J-1"}, j(status="done", progress=100))], None),
    Case("a job that says running a few times, then done",
         [C("job_status", {"job_id": "J-2"}, j(status="running")) for _ in range(7)]
         + [C("job_status", {"job_id": "J-2"}, j(status="done"))], None),
    Case("polling with a sleep between the polls",
         [c for _ in range(6) for c in (C("job_status", {"job_id": "J-3"}, j(status="running")),
                                        C("sleep", {"seconds": 5}, "slept 5s"))]
         + [C("job_status", {"job_id": "J-3"}, j(status="done"))], None),
    Case("a job polled between notes, then done",
         [c for k in range(3) for c in (C("job_status", {"job_id": "J-4"}, j(status="running")),
                                        C("add_note", {"text": f"note {k} on the export"}, f"note {k} saved"))]
         + [C("job_status", {"job_id": "J-4"}, j(status="done"))], None),
    Case("near-duplicate searches whose results differ",
         [C("search_kb", {"query": q}, j(hits=[f"doc-{k}"])) for k, q in
          enumerate(("reset password", "password reset steps", "how to reset my password", "reset the password"))],
         None),
    Case("a flaky call retried, then successful",
         [C("fetch", {"url": "https://x/b"}, error="TimeoutError: timed out after 10s") for _ in range(4)]
         + [C("fetch", {"url": "https://x/b"}, j(body="ok"))], None),
    Case("pagination to the end",
         [C("list_records", {"page": p, "page_size": 50}, j(records=[f"r{p}-{k}" for k in range(3)]))
          for p in range(1, 25)] + [C("list_records", {"page": 25, "page_size": 50}, j(records=[]))], None),
    Case("cursor pagination",
         [C("list_records", {"cursor": f"c{p:03d}x"}, j(records=[f"r{p}"], next=f"c{p + 1:03d}x")) for p in range(15)],
         None),
    Case("free slots looked for day after day until one has some",
         [C("find_slots", {"people": ["a@x", "b@x"], "date": f"2026-12-{d}"}, j(slots=[])) for d in range(16, 22)]
         + [C("find_slots", {"people": ["a@x", "b@x"], "date": "2026-12-22"}, j(slots=["11:00"]))], None),
    Case("distinct parcels that share an answer",
         [C("track_parcel", {"tracking_number": f"1Z{k:06d}"}, j(status="delivered")) for k in range(8)], None),
    Case("distinct entities named in free text",
         [C("lookup", {"query": f"where is parcel {k}"}, j(status="delivered")) for k in range(100, 106)], None),
    Case("a batch of SKUs, the same stock answer",
         [C("stock", {"sku": s}, j(in_stock=True)) for s in ("red-shirt", "blue-shirt", "green-hat", "black-hat")],
         None),
    Case("different notes, the same acknowledgement",
         [C("add_note", {"text": t}, "ok") for t in ("customer called about billing", "sent a replacement order",
                                                       "refund approved by the manager", "closing the ticket")], None),
    Case("one re-check of an order", [C("get_order", {"order_id": "A-7"}, j(status="paid"))] * 2, None),
    Case("three identical answers, then the agent moves on",
         [C("search", {"q": "x"}, "[]")] * 3 + [C("escalate", {"reason": "no answer"}, "queued")], None),
]

RULES: list[LoopRules] = [
    LoopRules(),
    LoopRules(repeat=4, wait_polls=2, retries=2),  # waiting budgets under ``repeat``: a strict guard's
    LoopRules(repeat=6, wait_polls=3, retries=3, poll_budget=8),
    LoopRules(repeat=2, wait_polls=20, retries=20, poll_budget=100),
]
"""Thresholds the SQL detector must agree with ``find_loops`` under: defaults, and budgets on either
side of ``repeat``, since the SQL's narrowing depends on all of them."""
