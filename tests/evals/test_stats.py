"""The regression test behind eval comparisons: it flags real regressions, and not noise."""

from __future__ import annotations

import time

import numpy as np
import pytest

from evals._stats import RegressionTest, case_status, paired_test

PASS5 = [True] * 5
FAIL5 = [False] * 5


def _clear_regression() -> dict[str, tuple[list[bool], list[bool]]]:
    """30 cases: 8 go from 5/5 to 0/5 or 1/5, the other 22 score the same in both runs."""
    outcomes: dict[str, tuple[list[bool], list[bool]]] = {}
    for i in range(8):
        outcomes[f"broken-{i}"] = (PASS5, FAIL5 if i % 2 else [True] + [False] * 4)
    for i in range(22):
        same = [j < i % 6 for j in range(5)]  # 0/5 .. 5/5: difficulty varies, unchanged
        outcomes[f"same-{i}"] = (same, list(same))
    return outcomes


def _simulate(
    rng: np.random.Generator, *, reps: int, drop: int, trials: int = 5, cases: int = 30
) -> list[RegressionTest]:
    """Runs baseline and candidate `reps` times on `cases` cases of varied difficulty.

    Each repetition draws every case's true pass probability from Beta(5, 1) (most cases pass
    most of the time, with a tail of hard ones), the same for both runs, except that the first
    `drop` cases fall from 0.9 in the baseline to 0.1 in the candidate.
    """
    results = []
    for _ in range(reps):
        base_p = rng.beta(5.0, 1.0, size=cases)
        cand_p = base_p.copy()
        base_p[:drop], cand_p[:drop] = 0.9, 0.1
        base = rng.random((cases, trials)) < base_p[:, None]
        cand = rng.random((cases, trials)) < cand_p[:, None]
        outcomes = {f"c{i}": (base[i].tolist(), cand[i].tolist()) for i in range(cases)}
        results.append(paired_test(outcomes, resamples=2000, seed=int(rng.integers(2**31))))
    return results


def test_identical_runs_are_not_a_regression():
    outcomes = {f"c{i}": ([j < i % 6 for j in range(5)],) * 2 for i in range(30)}
    r = paired_test(outcomes)
    assert r.p_value == 1.0 and r.p_value_improvement == 1.0
    assert not r.regression and not r.improvement
    assert r.effect == 0.0 and r.ci_low == 0.0 and r.ci_high == 0.0
    assert r.baseline_pass_rate == r.candidate_pass_rate == pytest.approx(sum(i % 6 for i in range(30)) / 150)


def test_a_clear_regression_is_flagged_with_an_interval_below_zero():
    r = paired_test(_clear_regression())
    assert r.regression and not r.improvement
    assert r.cases == 30 and r.unpaired == []
    assert r.effect == pytest.approx(-(4 * 1.0 + 4 * 0.8) / 30)
    assert r.ci_low < r.ci_high < 0
    # Only 8 cases changed, all for the worse: the data is the most extreme of 2**8 sign patterns.
    assert r.p_value == pytest.approx(1 / 256)
    assert r.method.endswith("(exact)")


def test_the_same_change_reversed_is_an_improvement():
    reversed_ = {case: (cand, base) for case, (base, cand) in _clear_regression().items()}
    r = paired_test(reversed_)
    assert r.improvement and not r.regression
    assert r.effect > 0 and 0 < r.ci_low < r.ci_high
    assert r.p_value_improvement == pytest.approx(1 / 256)
    assert r.p_value == 1.0


def test_exact_p_value_by_hand():
    # Five cases each going from always passing to never: 1 of the 32 sign patterns is as extreme.
    r = paired_test({f"c{i}": (PASS5, FAIL5) for i in range(5)})
    assert r.p_value == 1 / 32
    assert r.p_value_improvement == 1.0
    # Significant at 0.05 but not at 0.01: alpha is honoured.
    assert r.regression
    assert not paired_test({f"c{i}": (PASS5, FAIL5) for i in range(5)}, alpha=0.01).regression


def test_ties_count_as_extreme_so_the_test_is_conservative():
    # Two cases change by +0.2 and -0.2: patterns (+,-) and (-,+) both reach the observed sum 0.
    one, two = [True] + [False] * 4, [True, True] + [False] * 3
    r = paired_test({"a": (one, two), "b": (two, one)})
    assert r.p_value == 3 / 4 and r.p_value_improvement == 3 / 4


def test_exact_and_monte_carlo_agree():
    rng = np.random.default_rng(7)
    for m in (15, 18, 20):
        # A regression of moderate strength, so that p lands where the two methods could disagree.
        base_p = rng.uniform(0.3, 1.0, size=m)
        outcomes = {
            f"c{i}": ((rng.random(5) < base_p[i]).tolist(), (rng.random(5) < base_p[i] - 0.15).tolist())
            for i in range(m)
        }
        exact = paired_test(outcomes)
        monte_carlo = paired_test(outcomes, exact_max_cases=0, resamples=20_000)
        assert exact.method.endswith("(exact)")
        assert monte_carlo.method.endswith("(Monte Carlo, 20000 resamples)")
        # 20000 draws: the standard error of p is below 0.0036, so 0.015 is over 4 of them.
        assert monte_carlo.p_value == pytest.approx(exact.p_value, abs=0.015)
        assert monte_carlo.p_value_improvement == pytest.approx(exact.p_value_improvement, abs=0.015)
        assert exact.effect == monte_carlo.effect


def test_monte_carlo_p_value_is_never_zero():
    r = paired_test({f"c{i}": (PASS5, FAIL5) for i in range(30)}, resamples=1000)
    assert r.method.endswith("(Monte Carlo, 1000 resamples)")
    assert r.p_value == 1 / 1001 and r.regression


def test_same_seed_same_result_and_exact_is_fast_at_20_cases():
    outcomes = {f"c{i}": (PASS5, [j < i % 5 for j in range(5)]) for i in range(20)}
    start = time.perf_counter()
    r = paired_test(outcomes, seed=3)
    elapsed = time.perf_counter() - start
    assert r.method.endswith("(exact)")
    assert r == paired_test(outcomes, seed=3)
    # 2**20 patterns, vectorised: milliseconds. Generous bound so a loaded CI machine does not flake.
    assert elapsed < 1.0


def test_unpaired_cases_are_excluded_and_listed():
    outcomes = {
        "both": (PASS5, PASS5),
        "only-baseline": (FAIL5, []),
        "only-candidate": ([], PASS5),
        "neither": ([], []),
    }
    r = paired_test(outcomes)
    assert r.cases == 1
    assert r.unpaired == ["neither", "only-baseline", "only-candidate"]
    # Had the excluded cases counted, the baseline's rate would be diluted by the failing one.
    assert r.baseline_pass_rate == r.candidate_pass_rate == 1.0


def test_trial_counts_may_differ_between_runs_and_cases():
    # 1/2 vs 2/4 and 3/3 vs 1/1: the same pass rates, however many trials each side ran.
    r = paired_test({"a": ([True, False], [True, True, False, False]), "b": ([True, True, True], [True])})
    assert r.effect == 0.0 and r.p_value == 1.0
    r = paired_test({"a": ([True, True], [True, False, False, False]), "b": (PASS5, [True, False, False])})
    assert r.baseline_pass_rate == 1.0
    assert r.candidate_pass_rate == pytest.approx((0.25 + 1 / 3) / 2)


def test_no_paired_case_is_an_error_not_a_pass():
    with pytest.raises(ValueError, match="no case has trials in both runs"):
        paired_test({"a": (PASS5, []), "b": ([], FAIL5)})


@pytest.mark.parametrize("kwargs", [{"alpha": 0.0}, {"alpha": 1.5}, {"confidence": 1.0}, {"resamples": 0}])
def test_bad_parameters_are_rejected(kwargs):
    with pytest.raises(ValueError):
        paired_test({"a": (PASS5, FAIL5)}, **kwargs)


def test_calibration_no_change_is_rarely_flagged():
    """A/A: when nothing changed, at most alpha (5%) of comparisons may be flagged as regressions."""
    results = _simulate(np.random.default_rng(20240601), reps=400, drop=0)
    false_alarms = sum(r.regression for r in results) / len(results)
    assert false_alarms <= 0.05
    # Either direction at 5% each: a false alarm of any kind at most 10% of the time.
    assert sum(r.regression or r.improvement for r in results) / len(results) <= 0.10


def test_power_a_real_regression_is_usually_flagged_and_more_trials_flag_it_more():
    """A/B: 6 of 30 cases fall from 90% to 10% pass. Power measured here: 0.785 at 5 trials, 0.93 at 10.

    Power at 5 trials depends on how flaky the 24 unaffected cases are: from about 0.70 when their
    pass rates are spread uniformly over 0.2..1 to about 0.90 when most of them always pass or
    always fail. Doubling the trials halves each case's noise variance and buys the rest.
    """
    five = _simulate(np.random.default_rng(11), reps=200, drop=6, trials=5)
    ten = _simulate(np.random.default_rng(11), reps=200, drop=6, trials=10)
    power_5 = sum(r.regression for r in five) / len(five)
    power_10 = sum(r.regression for r in ten) / len(ten)
    assert power_5 >= 0.7
    assert power_10 >= 0.9
    assert power_10 > power_5
    assert not any(r.improvement for r in five + ten)


def test_case_status():
    assert case_status([True, True, True]) == "pass"
    assert case_status([False, False]) == "fail"
    assert case_status([True, False, True]) == "flaky"
    assert case_status([False]) == "fail"
    with pytest.raises(ValueError):
        case_status([])
