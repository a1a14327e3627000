"""Getting around by clicks: eval failures open the decision that failed, the Session page says which
eval trial it was, and the sidebar's Replay entry opens on a session that has no turn 1 (a fork)."""

from __future__ import annotations

import re

import evals
import replay
import tracer
from tests.dashboard.conftest import app, drawn, follow, link_tables, metrics, no_exceptions, switches
from tests.evals.test_compare import NOISY, STABLE, run


def _comparison(store) -> evals.Comparison:
    with tracer.Store(str(store), read_only=True) as s:
        return evals.compare_stored(s, "baseline", s.eval_runs()[0].run_id)


def _decision(at, session_id: str) -> int:
    """The decision the Session page of ``session_id`` shows: its picker's current choice."""
    assert at.query_params["id"] == session_id
    [current] = [c for c in switches(at)["Decision"] if c.link is None]
    return int(current.text)


def test_an_eval_failure_in_the_comparison_opens_the_turn_its_reason_names(store):
    c = _comparison(store)
    case = next(k for k in c.cases if k.regressed and any("at turn" in r for r in k.reasons))
    with tracer.Store(str(store), read_only=True) as s:
        failed = next(r for r in s.eval_results(c.candidate.run_id) if r.case_id == case.case_id and not r.passed)
    turn = evals.failing_turn(failed)
    assert turn is not None and turn > 1 and f"turn {turn}" in failed.scores[-1]["reason"] + str(failed.scores)
    at = app("evals")
    compared = link_tables(at)[1]
    assert compared.chosen == []
    at = follow(compared.links[compared.column("case").index(case.case_id)])
    no_exceptions(at)
    assert at.query_params["case"] == case.case_id
    compared = link_tables(at)[1]  # the case shown below is marked in the comparison
    assert compared.chosen == [compared.column("case").index(case.case_id)]
    # The case in both runs, trial by trial.
    baseline, candidate = link_tables(at)[2:]
    assert baseline.column("passed") == ["pass" if p else "fail" for p in case.baseline]
    assert candidate.column("passed") == ["pass" if p else "fail" for p in case.candidate]
    at = follow(candidate.links[candidate.column("trial").index(str(failed.trial))])
    no_exceptions(at)
    assert (at.query_params["id"], at.query_params["turn"]) == (failed.session_id, str(turn))
    assert _decision(at, failed.session_id) == turn
    # The box at the top says which run and case this session was a trial of, and why it failed.
    box = next(m.value for m in at.markdown if "**Eval trial**" in m.value)
    assert box.startswith(":red-badge[failed]") and f"case `{case.case_id}`" in box
    assert f"run `{c.candidate.run_id[:8]}`" in box and case.reasons[0] in box


def test_a_failing_case_of_one_run_opens_its_failing_decision_not_turn_1(store):
    # A failure whose reason names no turn ("18 turns, over the limit of 16") points at the last turn.
    c = _comparison(store)
    with tracer.Store(str(store), read_only=True) as s:
        results = s.eval_results(c.candidate.run_id)
    first_failures: dict[str, tracer.EvalResultRecord] = {}
    for r in results:
        if not r.passed:
            first_failures.setdefault(r.case_id, r)
    failed = next(r for r in first_failures.values()
                  if not re.search(r"\bturns? \d", " ".join(x["reason"] for x in r.scores if not x["passed"])))
    at = app("evals", run=c.candidate.run_id)
    cases = link_tables(at)[0]
    at = follow(cases.links[cases.column("case").index(failed.case_id)])
    no_exceptions(at)
    assert at.query_params["id"] == failed.session_id
    assert _decision(at, failed.session_id) == failed.turns > 1


def test_the_runs_table_opens_a_run(store):
    c = _comparison(store)
    at = app("evals")
    runs = link_tables(at)[0]
    at = follow(runs.links[runs.column("run").index(c.baseline.run_id[:8])])
    no_exceptions(at)
    assert at.query_params["run"] == c.baseline.run_id
    assert f"Run {c.baseline.run_id[:8]} (baseline)" in drawn(at)


def test_the_comparison_lists_a_case_that_fell_from_4_of_5_to_0_of_5_as_regressed(store):
    # Beside two flaky cases the case's own test cannot call 4/5 -> 0/5 significant (p = 0.024 against
    # 0.0125), and the aggregate test sees one case of thirty-one: only the collapse rule catches it.
    with tracer.Store(str(store)) as s:
        for name, side in (("nav-baseline", 0), ("nav-candidate", 1)):
            x = [[True, True, False, True, True], [False] * 5][side]
            s.save_eval_run(*run(name, {**STABLE, **NOISY[side], "x": x}))
    at = app("evals", a="nav-baseline", b="nav-candidate")
    no_exceptions(at)
    shown = metrics(at)
    regressed, flaky = shown["regressed"].note.split(", "), shown["flaky"].note.split(", ")
    assert "x" in regressed and "x" not in flaky and "n1" in flaky
    compared = link_tables(at)[1]
    assert compared.rows[compared.column("case").index("x")]["gate"] == "regression"
    assert "REGRESSION : " in drawn(at)


def test_the_sidebar_replay_entry_opens_on_a_fork_at_its_first_turn(store):
    with tracer.Store(str(store), read_only=True) as s:
        origin = s.sql("SELECT session_id FROM sessions WHERE turns >= 3 ORDER BY start_ns LIMIT 1")[0][0]
    fork = replay.fork(origin, 2, tools="recorded", db=str(store))
    with tracer.Store(str(store), read_only=True) as s:
        newest = s.sql("SELECT session_id FROM sessions ORDER BY start_ns DESC LIMIT 1")[0][0]
        first = s.sql("SELECT min(turn_index) FROM llm_calls WHERE session_id = ?", [fork.session_id])[0][0]
    assert newest == fork.session_id and first > 1  # a fork has no turn 1
    at = app("replay")  # the sidebar's entry: no session, no turn in the URL
    no_exceptions(at)
    assert at.query_params["id"] == fork.session_id and at.query_params["turn"] == str(first)
    assert [c.text for c in switches(at)["Turn"] if c.link is None] == [str(first)]  # marked as shown
