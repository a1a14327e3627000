"""The loop rules: what is a loop and what is polling, retrying, paginating or a batch, for the
rules in Python and the guard that asks them before a call; and that the keys the store computes
in DuckDB agree with Python's."""

from __future__ import annotations

import json

import duckdb
import pytest

import tracer
from tests.tracer.loop_corpus import CASES, Case
from tracer import LoopCall as C


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_find_loops_gives_the_corpus_verdict(case: Case):
    kinds = [loop.kind for loop in tracer.find_loops(case.calls)]
    if case.loop is None:
        assert kinds == []
    else:
        assert case.loop in kinds


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_the_guard_never_stops_what_the_rules_let_pass(case: Case):
    guard = tracer.LoopGuard()
    fired = [i for i in range(len(case.calls))
             if guard.check(case.calls[:i], case.calls[i].tool, case.calls[i].arguments) is not None]
    if case.loop is None:
        assert fired == []
    longest = max((loop.repeats for loop in tracer.find_loops(case.calls)), default=0)
    if longest > guard.rules.wait_polls:  # past any waiting budget: the guard must stop it too
        assert fired


def test_a_strict_guard_stops_the_fourth_identical_call_before_it_runs():
    guard = tracer.LoopGuard(tracer.LoopRules(wait_polls=3, retries=3))
    history = [C("search", {"q": "x"}, "[]")] * 3
    assert guard.check(history[:2], "search", {"q": "x"}) is None
    reason = guard.check(history, "search", {"q": "x"})
    assert reason == "search called 4 times with the same arguments and the same result"
    assert guard.check(history, "search", {"q": "something else entirely"}) is None
    # Without results at hand (name and arguments only), repeats of the same call still count.
    assert guard.check([("search", {"q": "x"})] * 3, "search", {"q": "x"}) is not None


def test_a_loop_says_which_calls_and_how_many_were_wasted():
    calls = [C("a", {}, "x"), *[C("search", {"q": "y"}, "[]")] * 5, C("b", {}, "z")]
    (loop,) = tracer.find_loops(calls)
    assert (loop.kind, loop.calls, loop.tools, loop.wasted, loop.repeats, loop.progressed) == (
        "repeat", (1, 2, 3, 4, 5), ("search",), 4, 5, False)


def test_a_wait_past_its_budget_is_a_loop_even_when_the_answer_then_changes():
    calls = [C("job", {"job_id": "J"}, "running")] * 12 + [C("job", {"job_id": "J"}, "done")]
    (loop,) = tracer.find_loops(calls)
    assert loop.progressed and loop.repeats == 12
    assert "before its answer changed (over the budget of 10)" in loop.reason
    assert tracer.find_loops(calls, tracer.LoopRules(wait_polls=12)) == []


def test_a_long_session_costs_about_its_length_not_its_square(monkeypatch):
    # A job polled 3,000 times, a sleep of a new length between polls: every poll after the first
    # is a stall of its own. Each used to look at every later poll for progress (4.5 million
    # comparisons); none can be a loop on its own, so none is asked.
    import tracer._loops as loops

    compared = 0
    same_answer = loops._same_answer

    def counting(a, b):
        nonlocal compared
        compared += 1
        return same_answer(a, b)

    monkeypatch.setattr(loops, "_same_answer", counting)
    calls = [c for i in range(3_000) for c in (C("job_status", {"job": "J-1"}, "running"),
                                               C("sleep", {"seconds": i}, f"slept {i} s"))]
    found = tracer.find_loops(calls)
    assert [(f.kind, len(f.calls)) for f in found] == [("repeat", 3_000), ("polling", 3_000)]
    assert compared < 10 * len(calls)


def test_unknown_results_count_as_the_same_only_for_the_same_arguments():
    same = [C("search", {"q": "x"})] * 4
    assert [loop.kind for loop in tracer.find_loops(same)] == ["repeat"]
    near = [C("search", {"q": q}) for q in ("refund policy", "the refund policy", "refund policy rules", "policy")]
    assert tracer.find_loops(near) == []


def test_canonical_arguments_ignore_order_whitespace_and_number_format():
    a = tracer.canonical_arguments('{"b": [1.0, "x  y"], "a": {"z": 2, "y": 1}}')
    assert a == tracer.canonical_arguments({"a": {"y": 1, "z": 2.0}, "b": [1, "x y"]}) == \
        '{"a":{"y":1,"z":2},"b":[1,"x y"]}'
    assert tracer.canonical_arguments("not json ") == '"not json"'


def test_volatile_fields_are_normalised_and_the_rest_is_kept():
    text = json.dumps({"request_id": "abc", "status": "running", "progress": 40, "updated_at": "x",
                       "id": "4f1e2d3c-1111-4222-8333-123456789abc", "at": "2026-03-01T10:00:00Z", "epoch": 1764600000,
                       "trace": "req_8f2kq9x0", "etag": 7})
    assert tracer.normalise_outcome(text) == (
        '{"request_id":"~", "status": "running", "progress": 40, "updated_at":"~", "id": "<uuid>", "at": "<date>", '
        '"epoch": <epoch>, "trace": "<rid>", "etag":"~"}')


def test_the_stores_outcome_keys_from_duckdb_equal_pythons():
    texts = [json.dumps({"status": "ok", "request_id": "r-1", "at": "2026-03-01 10:00:00"}), "plain  text\n",
             "non-ASCII\u00a0space at 12:30, ref deadbeefdeadbeef00", "x" * 70_000, "it's 'quoted' \\ and \"so\"", "",
             " a \t b  c\n\nd e  \r\n f\f\fg \t\t h  "]
    # Texts that no pattern or one alone changes: the SQL skips the rewrites unless some pattern matches.
    texts += [" nothing volatile here ", '{"nonce": 7}', "id 4f1e2d3c-1111-4222-8333-123456789abc", "on 2026-03-01",
              "at 9:05", "run_abcdef12", "hash 0123456789abcdef0", "since 1764600000", "two  spaces", "tab\there"]
    rows = [(t, None, None, "ok") for t in texts] + [(None, "Timeout", t, "error") for t in texts[:3]]
    rows += [(None, None, None, "ok"), (None, None, None, "error")]
    con = duckdb.connect()
    con.execute("CREATE TABLE t (result VARCHAR, error_type VARCHAR, error_message VARCHAR, status VARCHAR)")
    con.executemany("INSERT INTO t VALUES (?, ?, ?, ?)", rows)
    sql = tracer.outcome_key_sql("result", "error_type", "error_message", "status")
    from_duckdb = [r[0] for r in con.execute(f"SELECT {sql} FROM t").fetchall()]
    from_python = [tracer.outcome_key(r, None if s == "ok" else f"{t or 'error'}: {m or ''}") for r, t, m, s in rows]
    assert from_duckdb == from_python
    assert from_python[-2] is None and from_python[-1] is not None  # unknown result; a failure without a message


def test_call_keys_tell_identity_from_shape():
    ids = {tracer.call_keys("track", {"tracking_number": n}) for n in ("1Z1", "1Z2")}
    assert len({i for i, _ in ids}) == 2 and len({s for _, s in ids}) == 2  # two parcels: two things
    pages = [tracer.call_keys("list", {"q": "x", "page": p}) for p in (1, 2)]
    assert pages[0][0] != pages[1][0] and pages[0][1] == pages[1][1]  # one search, two pages


def test_call_keys_take_any_arguments_ingest_may_see():
    deep = "[" * 5000 + "]" * 5000
    for arguments in (deep, None, "", "not json", {"a": [1, {"b": None}]}, 2**70, float("nan")):
        identity, shape = tracer.call_keys("tool", arguments)
        assert len(identity) == len(shape) == 32
