"""Comparing two stored runs: the gate's three rules (aggregate, per case, critical), each with a
case that must fail it and one that must not, and what the verdict says."""

from __future__ import annotations

import pytest

import evals
import tracer


def run(run_id: str, outcomes: dict[str, list[bool]], sha: str = "same",
        critical: list[str] = ()) -> tuple[tracer.EvalRunRecord, list]:
    results = [tracer.EvalResultRecord(run_id=run_id, case_id=c, trial=k, session_id=f"{run_id}-{c}-{k}",
                                       tags=["critical"] if c in critical else [],
                                       passed=p, score=float(p), scores=[{"scorer": "s", "passed": p, "value": float(p),
                                                                          "weight": 1.0, "reason": f"{c} said {p}"}],
                                       error=None, status="ok", turns=1, cost_usd=0.01, latency_ms=10.0)
               for c, trials in outcomes.items() for k, p in enumerate(trials)]
    passed = sum(r.passed for r in results)
    record = tracer.EvalRunRecord(run_id=run_id, started_ns=0, ended_ns=1, dataset="d", dataset_sha256=sha,
                                  agent="reference", settings={}, trials=len(next(iter(outcomes.values()))), seed=0,
                                  case_tags=[], cases=len(outcomes), passed_trials=passed, total_trials=len(results),
                                  mean_score=passed / len(results), cost_usd=0.01 * len(results), wall_s=1.0)
    return record, results


STABLE = {f"ok-{i}": [True] * 5 for i in range(28)}
"""28 cases that pass every trial in both runs: they cannot reach significance, so they must not
dilute the per-case test's level."""


def test_one_case_broken_completely_fails_the_gate_though_the_aggregate_test_cannot():
    # The measurement: the sign-flip test of 1 changed case can never go below 1/2.
    a = run("a", {**STABLE, "x": [True] * 5, "flaky": [True, False, True, True, True]})
    b = run("b", {**STABLE, "x": [False] * 5, "flaky": [True, True, False, True, False]})
    c = evals.compare(*a, *b)
    assert c.verdict == "regression" and not c.test.regression
    assert c.regressions == ["x"] and c.gate.regressions == ["x"]
    x = next(k for k in c.cases if k.case_id == "x")
    assert (x.change, x.regressed, x.p_value) == ("regression", True, pytest.approx(1 / 252))
    assert x.level == pytest.approx(0.025)  # only x could reach significance: no correction for the rest
    assert "1 case(s) dropped significantly on their own: x 5/5 → 0/5 (p = 0.004 ≤ 0.025)" in c.verdict_reason
    assert c.flaky == ["flaky"]  # 4/5 -> 3/5 is noise, and says so


def test_a_case_falling_a_little_is_not_a_regression_and_the_report_says_what_could_be_caught():
    a = run("a", {**STABLE, "x": [True] * 5})
    b = run("b", {**STABLE, "x": [True, True, True, False, False]})
    c = evals.compare(*a, *b)
    assert c.verdict == "no regression" and c.regressions == []
    x = next(k for k in c.cases if k.case_id == "x")
    assert (x.change, x.regressed) == ("worse", False) and x.p_value == pytest.approx(2 / 9)
    assert "no case dropped significantly on its own (the smallest case p-value, x's, is 0.22 > 0.025)" \
        in c.verdict_reason
    assert c.power.startswith("With 5 baseline and 5 candidate trials per case (level 0.025")
    assert "catches a case falling 100% → 0% (100% of the time)" in c.power
    assert "does not reliably catch 100% → 40% (34% of the time), 90% → 60%" in c.power
    assert "from 80% or more fails the gate whatever its test says (the collapse rule)" in c.power
    assert "--trials 10 (both runs) would catch 100% → 40%" in c.power


def test_a_case_from_4_of_5_to_0_of_5_is_a_regression_not_flaky():
    a = run("a", {**STABLE, "x": [True, True, False, True, True]})
    b = run("b", {**STABLE, "x": [False] * 5})
    c = evals.compare(*a, *b)
    assert c.verdict == "regression" and c.regressions == ["x"] and c.flaky == []


NOISY = ({"n1": [True, True, True, False, False], "n2": [True, True, False, False, False]},
         {"n1": [True, True, False, False, False], "n2": [False, True, True, True, False]})
"""Two flaky cases that could reach significance: they share the per-case level with the case
under test (0.0125 each at the first step), as the demo's flaky cases do."""


def test_a_collapse_to_none_is_a_regression_even_when_not_significant():
    # The rule: a significant drop on its own, or a fall to no passing trial from at least 80%
    # passing ones. 4/5 -> 0/5 (p = 0.024) is not significant beside two flaky cases, yet regressed.
    a = run("a", {**STABLE, **NOISY[0], "x": [True, True, False, True, True]})
    b = run("b", {**STABLE, **NOISY[1], "x": [False] * 5})
    c = evals.compare(*a, *b)
    x = next(k for k in c.cases if k.case_id == "x")
    assert x.p_value == pytest.approx(5 / 210) and x.p_value > x.level
    assert (x.collapsed, x.change, x.regressed) == (True, "regression", True)
    assert c.verdict == "regression" and c.regressions == ["x"] and "x" not in c.flaky
    assert ("1 case(s) passed in at least 80% of baseline trials and in no candidate trial, a regression whatever the "
            "p-value: x 4/5 → 0/5 (p = 0.024 > 0.0125)") in c.verdict_reason
    assert "no longer passes at all" in evals.comparison_text(c)


@pytest.mark.parametrize("before, after, status", [
    ([True] * 5, [True] * 4 + [False], "worse"),  # 5/5 -> 4/5: noise
    ([False] * 5, [True] * 3 + [False] * 2, "better"),  # 0/5 -> 3/5
    ([True] * 2 + [False] * 3, [False] * 5, "worse"),  # 2/5 -> 0/5: to none, but from a minority
    ([True] * 3 + [False] * 2, [False] * 5, "worse"),  # 3/5 -> 0/5: from a bare majority, left to the tests
    ([True] * 2, [False] * 2, "worse"),  # 2/2 -> 0/2: too few trials to call it more than chance
])
def test_other_changes_are_flaky_not_regressions(before, after, status):
    c = evals.compare(*run("a", {**STABLE, **NOISY[0], "x": before}), *run("b", {**STABLE, **NOISY[1], "x": after}))
    x = next(k for k in c.cases if k.case_id == "x")
    assert (x.collapsed, x.change, x.regressed) == (False, status, False)
    assert c.verdict == "no regression" and c.regressions == [] and "x" in c.flaky + c.flips_to_fail


@pytest.fixture
def stored(tmp_path):
    """Saves a failed trial of 7 turns with the given scores and reads it back, as the dashboard reads it."""
    with tracer.Store(str(tmp_path / "t.duckdb")) as store:
        def save(scores: list[dict], passed: bool = False) -> tracer.EvalResultRecord:
            record, (trial,) = run(f"r{len(store.eval_runs())}", {"c": [passed]})
            store.save_eval_run(record, [trial.model_copy(update={"scores": scores, "turns": 7})])
            return store.eval_results(record.run_id)[0]

        yield save


def _trajectory() -> evals.Trajectory:
    return evals.Trajectory(session_id="s", status="ok", status_reason=None, user_messages=["hi"], final_answer="ok",
                            decisions=[], tool_calls=[], guards=[], events=[], turns=7, input_tokens=1,
                            output_tokens=1, cost_usd=0.0, latency_ms=1.0)


def test_the_failing_turn_is_the_one_the_failing_score_judged_whatever_its_reason_says(stored):
    def german(t: evals.Trajectory) -> evals.Score:
        return evals.Score(scorer="x", value=0.0, passed=False, reason="Erstattung ohne Rückfrage", turn=4)

    passing = evals.build_scorer({"type": "status", "equals": "ok"})
    *_, scores = evals.score_trial([passing, german], _trajectory())
    assert evals.failing_turn(stored([s.model_dump() for s in scores])) == 4


def test_a_failing_score_without_a_turn_opens_the_turn_its_reason_names_else_the_last(stored):
    # A custom scorer written before scores carried a turn still sends the user to the decision it names.
    named = evals.Score(scorer="mine", value=0.0, passed=False, reason="refunded at turn 5 without asking")
    assert evals.failing_turn(stored([named.model_dump()])) == 5
    whole = evals.Score(scorer="final", value=0.0, passed=False, reason="the final answer is wrong")
    assert evals.failing_turn(stored([whole.model_dump()])) == 7


def test_scores_stored_before_they_carried_a_turn_open_the_turn_their_reason_names(stored):
    def result(reasons: list[str], passed: bool = False) -> tracer.EvalResultRecord:
        return stored([{"scorer": f"s{i}", "passed": False, "value": 0.0, "weight": 1.0, "reason": r}
                       for i, r in enumerate(reasons)], passed)

    assert evals.failing_turn(result(["issue_refund was called at turn 3 without asking the customer"])) == 3
    assert evals.failing_turn(result(["12 turns, over the limit of 5", "the first get_order call (turn 2): x"])) == 2
    assert evals.failing_turn(result(["get_order was called at turns 4, 6"])) == 4
    # A reason naming no turn judged how the session ended: its last turn, not turn 1.
    assert evals.failing_turn(result(["the final answer contains none of \"R-1\""])) == 7
    assert evals.failing_turn(result([], passed=True)) is None


def test_a_critical_case_is_held_to_its_own_stricter_rule():
    # Two flaky ordinary cases that could reach significance (5 failures in 10 trials each) make the
    # ordinary level 0.025 / 2; a 5/5 -> 1/5 drop (p = 0.024) passes there, but a critical case is
    # judged among the critical cases only.
    noisy = {"n1": [True, True, True, False, False], "n2": [True, True, False, False, False]}
    noisy_b = {"n1": [True, True, False, False, False], "n2": [False, True, True, True, False]}
    a = run("a", {**STABLE, **noisy, "x": [True] * 5})
    b = run("b", {**STABLE, **noisy_b, "x": [True] + [False] * 4})
    ordinary = evals.compare(*a, *b)
    assert ordinary.verdict == "no regression" and ordinary.gate.testable == 2
    crit = evals.compare(*run("a", {**STABLE, **noisy, "x": [True] * 5}, critical=["x"]),
                         *run("b", {**STABLE, **noisy_b, "x": [True] + [False] * 4}, critical=["x"]))
    assert crit.verdict == "regression" and crit.regressions == ["x"]
    assert (crit.gate.critical_alpha, crit.gate.case_alpha, crit.gate.aggregate_alpha) == (0.025, 0.0125, 0.0125)
    assert "x (critical) 5/5 → 1/5 (p = 0.024 ≤ 0.025)" in crit.verdict_reason
    assert "Critical cases are held to 0.025" in crit.power
    # ... and a critical case that merely lost one trial is not.
    calm = evals.compare(*run("a", {**STABLE, "x": [True] * 5}, critical=["x"]),
                         *run("b", {**STABLE, "x": [True] * 4 + [False]}, critical=["x"]))
    assert calm.verdict == "no regression" and calm.flaky == ["x"]


def test_a_bad_alpha_says_what_to_give():
    a = run("a", {"x": [True]})
    with pytest.raises(evals.EvalError, match="give a false-alarm rate between 0 and 1, such as 0.05"):
        evals.compare(*a, *a, alpha=5)


def test_enough_changed_cases_are_a_regression_with_the_reasons_and_sessions():
    a = run("a", {f"c{i}": [True] * 3 for i in range(6)})
    b = run("b", {f"c{i}": [False] * 3 for i in range(6)})
    c = evals.compare(*a, *b)
    assert c.verdict == "regression" and c.test.p_value == pytest.approx(1 / 64)
    assert c.cases[0].reasons == ["c0 said False"] and c.cases[0].failing_sessions[0] == "b-c0-0"


def test_a_diffuse_drop_is_the_aggregate_tests_and_its_cases_count_as_regressed():
    # Eight cases each lose one trial of three: none is significant on its own (p = 0.5), together they are.
    a = run("a", {**STABLE, **{f"d{i}": [True] * 3 for i in range(8)}})
    b = run("b", {**STABLE, **{f"d{i}": [True, True, False] for i in range(8)}})
    c = evals.compare(*a, *b)
    assert c.verdict == "regression" and c.test.regression and c.gate.regressions == []
    assert c.test.p_value == pytest.approx(1 / 256)
    assert c.regressions == [f"d{i}" for i in range(8)] and c.flaky == []
    assert all(k.change == "worse" and k.regressed for k in c.cases if k.case_id.startswith("d"))
    # The same drop in four cases is within noise for both tests.
    a = run("a", {**STABLE, **{f"d{i}": [True] * 3 for i in range(4)}})
    b = run("b", {**STABLE, **{f"d{i}": [True, True, False] for i in range(4)}})
    c = evals.compare(*a, *b)
    assert c.verdict == "no regression" and c.regressions == [] and c.flaky == [f"d{i}" for i in range(4)]


def test_runs_of_different_datasets_are_flagged_or_refused():
    a = run("a", {"x": [True], "y": [True]})
    b = run("b", {"x": [True], "y": [True]}, sha="other")
    assert "dataset hash differs" in evals.compare(*a, *b).verdict_reason
    with pytest.raises(evals.EvalError, match="share no case"):
        evals.compare(*a, *run("c", {"q": [True]}))
