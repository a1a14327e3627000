"""The tests behind the eval gate: the aggregate sign-flip test, each case's Fisher test with its
Holm-Tarone correction, the gate that combines them, and the power figures the reports quote."""

from __future__ import annotations

import numpy as np
import pytest

from evals._stats import (
    RegressionTest,
    case_status,
    detection_power,
    fisher_exact_worse,
    gate,
    holm_tarone,
    min_attainable_p,
    paired_test,
    trials_needed,
)

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


def test_same_seed_same_result_and_20_cases_are_counted_exactly():
    # 2**20 sign patterns, vectorised: milliseconds (its time is measured in benchmarks/RESULTS.md, not here).
    outcomes = {f"c{i}": (PASS5, [j < i % 5 for j in range(5)]) for i in range(20)}
    r = paired_test(outcomes, seed=3)
    assert r.method.endswith("(exact)")
    assert r == paired_test(outcomes, seed=3)


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


# -- each case's own test ------------------------------------------------------------------------


def test_fisher_exact_by_hand():
    # 5/5 -> 0/5: of the C(10, 5) = 252 ways to place the 5 passes, one puts none in the candidate.
    assert fisher_exact_worse(5, 5, 0, 5) == pytest.approx(1 / 252)
    # 4/5 -> 0/5: 4 passes, all in the baseline: C(5, 4) / C(10, 4) = 5 / 210.
    assert fisher_exact_worse(4, 5, 0, 5) == pytest.approx(5 / 210)
    # The example: 15/15 -> 0/5 is 1 / C(20, 5).
    assert fisher_exact_worse(15, 15, 0, 5) == pytest.approx(1 / 15504)
    # No drop, or a rise, is no evidence of one.
    assert fisher_exact_worse(3, 5, 3, 5) > 0.5 and fisher_exact_worse(0, 5, 5, 5) == 1.0
    assert fisher_exact_worse(5, 5, 5, 5) == 1.0


def test_a_case_that_cannot_reach_significance_says_so():
    assert min_attainable_p(5, 5, 5, 5) == 1.0  # nothing failed anywhere
    assert min_attainable_p(5, 5, 4, 5) == pytest.approx(0.5)  # one failure: either side, even odds
    assert min_attainable_p(4, 5, 3, 5) == pytest.approx(10 / 120)
    assert min_attainable_p(5, 5, 0, 5) == pytest.approx(1 / 252)


@pytest.mark.parametrize("counts", [(6, 5, 0, 5), (0, 0, 0, 5), (1, 5, -1, 5)])
def test_a_bad_table_is_rejected(counts):
    with pytest.raises(ValueError, match="bad 2x2 table"):
        fisher_exact_worse(*counts)


def test_holm_tarone_does_not_count_cases_that_cannot_reach_significance():
    p = {"broken": 1 / 252, **{f"stable-{i}": 1.0 for i in range(29)}}
    min_p = {"broken": 1 / 252, **{f"stable-{i}": 1.0 for i in range(29)}}
    rejected, levels, k = holm_tarone(p, min_p, 0.025)
    assert rejected == {"broken"} and k == 1 and levels["broken"] == 0.025
    # Plain Holm would hold it to 0.025 / 30 and miss it.
    assert 1 / 252 > 0.025 / 30


def test_holm_tarone_steps_down_and_stops_at_the_first_miss():
    p = {"a": 0.001, "b": 0.008, "c": 0.02, "d": 0.5}
    min_p = {"a": 0.001, "b": 0.004, "c": 0.004, "d": 0.004}
    rejected, levels, k = holm_tarone(p, min_p, 0.025)
    # Step 1: four testable at 0.025 / 4, so k = 4: a passes. Step 2: three left, 0.025 / 3: b passes.
    # Step 3: two left, 0.0125: c (0.02) does not, and d is never reached.
    assert k == 4 and rejected == {"a", "b"}
    assert levels["a"] == pytest.approx(0.025 / 4) and levels["b"] == pytest.approx(0.025 / 3)
    assert levels["c"] == levels["d"] == pytest.approx(0.0125)
    assert holm_tarone({}, {}, 0.05) == (set(), {}, 1)


def test_the_gate_splits_alpha_between_its_families():
    plain = gate({"a": (PASS5, FAIL5), "b": (PASS5, PASS5)})
    assert (plain.aggregate_alpha, plain.case_alpha, plain.critical_alpha) == (0.025, 0.025, 0.0)
    assert plain.aggregate.alpha == 0.025 and plain.regression and plain.regressions == ["a"]
    crit = gate({"a": (PASS5, FAIL5), "b": (PASS5, PASS5)}, critical={"b", "not-in-the-runs"})
    assert (crit.aggregate_alpha, crit.case_alpha, crit.critical_alpha) == (0.0125, 0.0125, 0.025)
    assert [c.critical for c in crit.cases] == [False, True]
    assert gate({"a": (PASS5, FAIL5)}, critical={"elsewhere"}).critical_alpha == 0.0  # no critical case ran


def test_the_gate_does_not_fail_on_identical_runs_or_flaky_noise():
    same = {f"c{i}": ([j < i % 6 for j in range(5)],) * 2 for i in range(30)}
    assert not gate(same).regression
    noise = {"a": ([True, True, False, True, True], [True, False, True, True, False]), **{
        f"s{i}": (PASS5, PASS5) for i in range(29)}}
    assert not gate(noise).regression


@pytest.mark.parametrize("alpha", [0.0, 1.0, -0.05])
def test_the_gate_rejects_a_bad_alpha_and_says_what_is_usual(alpha):
    with pytest.raises(ValueError, match="0.05 is the usual gate"):
        gate({"a": (PASS5, FAIL5)}, alpha=alpha)


# -- power -----------------------------------------------------------------------------------------


def test_detection_power_by_hand():
    # One trial a side at level 0.5: flagged only by 1/1 -> 0/1 (p = 1/2), which has probability 0.9 * 0.4.
    assert detection_power(0.9, 0.4, base_trials=1, cand_trials=1, level=0.5) == pytest.approx(0.9 * 0.6)
    # A certain total break at 5 trials a side gives p = 1/252 every time.
    assert detection_power(1.0, 0.0, base_trials=5, cand_trials=5, level=0.025) == pytest.approx(1.0)
    assert detection_power(1.0, 0.0, base_trials=5, cand_trials=5, level=0.003) == 0.0
    # No change is flagged at most `level` of the time.
    for rate in (0.5, 0.8, 0.95):
        assert detection_power(rate, rate, base_trials=5, cand_trials=5, level=0.025) <= 0.025


def test_more_trials_catch_smaller_drops():
    five = detection_power(1.0, 0.4, base_trials=5, cand_trials=5, level=0.025)
    ten = detection_power(1.0, 0.4, base_trials=10, cand_trials=10, level=0.025)
    assert five < 0.8 <= ten
    assert trials_needed(1.0, 0.0, level=0.025) == 4
    assert trials_needed(1.0, 0.4, level=0.025) == 10
    assert trials_needed(0.9, 0.6, level=0.025) == 36
    assert trials_needed(0.9, 0.85, level=0.025, max_trials=20) is None


@pytest.mark.parametrize("kwargs", [dict(base_rate=1.2), dict(base_trials=0), dict(level=0.0)])
def test_detection_power_rejects_bad_input(kwargs):
    args = dict(base_rate=1.0, cand_rate=0.0, base_trials=5, cand_trials=5, level=0.025) | kwargs
    with pytest.raises(ValueError):
        detection_power(args.pop("base_rate"), args.pop("cand_rate"), **args)
