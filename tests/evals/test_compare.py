"""Comparing two stored runs: what the verdict says when the evidence is thin."""

from __future__ import annotations

import pytest

import evals
import tracer


def run(run_id: str, outcomes: dict[str, list[bool]], sha: str = "same") -> tuple[tracer.EvalRunRecord, list]:
    results = [tracer.EvalResultRecord(run_id=run_id, case_id=c, trial=k, session_id=f"{run_id}-{c}-{k}", tags=[],
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


def test_too_few_changed_cases_says_the_gate_cannot_fire_and_what_to_do():
    a = run("a", {"x": [True] * 5, "y": [True] * 5, "z": [True] * 5})
    b = run("b", {"x": [False] * 5, "y": [False] * 5, "z": [True] * 5})
    c = evals.compare(*a, *b)
    assert c.verdict == "no regression" and c.flips_to_fail == ["x", "y"]
    assert "only 2 case(s) changed" in c.verdict_reason and "at least 5 changed cases" in c.verdict_reason


def test_enough_changed_cases_are_a_regression_with_the_reasons_and_sessions():
    a = run("a", {f"c{i}": [True] * 3 for i in range(6)})
    b = run("b", {f"c{i}": [False] * 3 for i in range(6)})
    c = evals.compare(*a, *b)
    assert c.verdict == "regression" and c.test.p_value == pytest.approx(1 / 64)
    assert c.cases[0].reasons == ["c0 said False"] and c.cases[0].failing_sessions[0] == "b-c0-0"


def test_runs_of_different_datasets_are_flagged_or_refused():
    a = run("a", {"x": [True], "y": [True]})
    b = run("b", {"x": [True], "y": [True]}, sha="other")
    assert "dataset hash differs" in evals.compare(*a, *b).verdict_reason
    with pytest.raises(evals.EvalError, match="share no case"):
        evals.compare(*a, *run("c", {"q": [True]}))
