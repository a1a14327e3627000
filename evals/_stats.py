"""Is the candidate a real regression, or noise? A paired sign-flip test on per-case pass rates.

The eval harness runs every case of a dataset K times ("trials") against a baseline and a
candidate agent. Each trial passes or fails. ``paired_test`` decides whether the candidate is
worse (or better) than the baseline by more than trial-to-trial noise explains.

Why a *paired* test
    Both runs see the same cases, so each case is its own control. Case difficulty varies far
    more than the change we look for: some cases pass every time, some almost never. An
    unpaired comparison of overall pass rates would count that spread between cases as noise
    and miss real regressions; comparing each case with itself removes it. Cases present in
    only one run cannot be compared, so they are left out and listed in ``unpaired``.

Why per-case pass rates
    With several trials per case the trials of one case are not independent observations of
    the agent (they share the case), so the unit of analysis is the case. Each case contributes
    one number, ``d_i = mean(candidate_i) - mean(baseline_i)``, its change in pass rate. Taking
    the mean, rather than the count, lets the number of trials differ between runs and cases.

Why a sign-flip permutation test
    If the candidate is no different (H0), a case's baseline and candidate trials are
    exchangeable, so each ``d_i`` is symmetric around 0: ``-d_i`` was as likely as ``d_i``.
    Flipping the signs of the ``d_i`` at random therefore draws from the exact null
    distribution of the statistic ``sum(d_i)``. That needs no normality assumption (pass rates
    of a few trials are far from normal) and stays valid for a handful of cases, where a t-test
    is not. With at most ``EXACT_MAX_CASES`` (20) non-zero ``d_i`` all ``2**m`` sign patterns
    are enumerated and the p-value is exact; beyond that ``resamples`` random sign patterns
    give a Monte Carlo p-value, ``(1 + hits) / (1 + resamples)`` so it is never 0. Cases with
    ``d_i == 0`` flip to themselves and carry no information about the direction, so they do
    not count towards ``m`` (they still count in the pass rates, the effect and its interval).

Significance level and ties
    The default ``alpha`` is 0.05, one-sided: ``p_value`` tests "the candidate is worse",
    ``p_value_improvement`` tests "the candidate is better"; the harness gates on the first.
    Sign patterns whose statistic equals the observed one count as at least as extreme (the
    comparison has a small tolerance so that floating-point noise does not break a tie). Pass
    rates of a few trials tie often, so this makes the test conservative: it flags a
    regression less often than ``alpha`` when there is none, which is the error we would
    rather not make in a CI gate.

The number of trials per case
    Trials are the lever on power. More trials per case shrink the noise in each ``d_i``
    (its variance falls as ``1/K``), so a smaller regression stands out, but every trial is one
    more agent run on both sides: cost grows linearly with K while the noise falls only as
    ``1/sqrt(K)``. With the simulator model as the agent's backend, the eval harness defaults
    to 5 trials per case; that number is the harness's choice, not this module's, and any K
    (even unequal ones) is valid here. For scale, in simulation with 30 cases of which 6 go
    from 90% to 10% pass: with 5 trials the test flags it about 70-85% of the time, depending
    on how flaky the other 24 cases are (flaky bystanders add noise); with 10 trials, 85-95%.
    A false alarm when nothing changed stays under 5% either way.

The effect comes with a bootstrap confidence interval: the cases are resampled with
replacement ``resamples`` times and the percentile interval of the mean ``d_i`` is reported.
Everything random draws from ``numpy.random.default_rng(seed)``, so a result is reproducible.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
from pydantic import BaseModel

EXACT_MAX_CASES = 20
"""Up to this many non-zero per-case differences the sign-flip test enumerates every pattern.

2**20 sums are 8 MiB of float64 and take a few milliseconds; each case more doubles both.
"""

_TIE_TOLERANCE = 1e-9
"""Sums that differ by less than this are ties.

The same sum reached by different sign patterns (or summed in a different order) may differ in
the last bits; a tie must count as "at least as extreme", or the test stops being conservative.
Distinct sums of pass-rate differences differ by far more than this for any realistic trial count.
"""

_CHUNK_ELEMENTS = 1 << 22
"""Resampling works on blocks of about this many numbers, to bound memory on large datasets."""


class RegressionTest(BaseModel):
    """The outcome of comparing a candidate's trials with a baseline's, case by case."""

    method: str
    """How the p-values were computed, e.g. ``paired sign-flip permutation test ... (exact)``."""
    alpha: float
    """The one-sided significance level each direction was tested at."""
    cases: int
    """Cases present in both runs, the ones compared."""
    unpaired: list[str]
    """Ids of cases with trials in only one run (or in neither), sorted; left out of the test."""
    baseline_pass_rate: float
    """The baseline's pass rate: the mean over the paired cases of each case's pass rate."""
    candidate_pass_rate: float
    """The candidate's pass rate, computed the same way."""
    effect: float
    """``candidate_pass_rate - baseline_pass_rate``, the mean per-case change; negative is worse."""
    ci_low: float
    """Lower end of the bootstrap (over cases, percentile) confidence interval of ``effect``."""
    ci_high: float
    """Upper end of that interval."""
    confidence: float
    """The interval's confidence level, e.g. 0.95."""
    p_value: float
    """One-sided p-value against "the candidate is worse than the baseline"."""
    p_value_improvement: float
    """One-sided p-value against "the candidate is better than the baseline"."""
    regression: bool
    """The candidate is significantly worse: ``p_value < alpha`` and ``effect < 0``."""
    improvement: bool
    """The candidate is significantly better: ``p_value_improvement < alpha`` and ``effect > 0``."""


def case_status(trials: Sequence[bool]) -> Literal["pass", "fail", "flaky"]:
    """Sums up one case's trials in one run.

    Args:
        trials: The case's trial outcomes, ``True`` for a pass.

    Returns:
        ``"pass"`` when every trial passed, ``"fail"`` when none did, ``"flaky"`` when some did.

    Raises:
        ValueError: There are no trials; a case that never ran has no status.
    """
    if len(trials) == 0:
        raise ValueError("case_status needs at least one trial")
    passed = sum(1 for t in trials if t)
    if passed == len(trials):
        return "pass"
    if passed == 0:
        return "fail"
    return "flaky"


def paired_test(
    outcomes: Mapping[str, tuple[Sequence[bool], Sequence[bool]]],
    *,
    alpha: float = 0.05,
    confidence: float = 0.95,
    resamples: int = 20_000,
    seed: int = 0,
    exact_max_cases: int = EXACT_MAX_CASES,
) -> RegressionTest:
    """Tests whether the candidate passes fewer (or more) trials than the baseline, case by case.

    Args:
        outcomes: Case id -> (baseline trial outcomes, candidate trial outcomes), ``True`` for a
            pass. The two sides may have different numbers of trials. A case with no trials on
            either side is unpaired: it is left out and listed in the result.
        alpha: One-sided significance level, applied to each direction.
        confidence: Confidence level of the bootstrap interval of the effect.
        resamples: Random sign patterns for the Monte Carlo test (when it is used), and bootstrap
            resamples for the interval.
        seed: Seed of the random generator, so that a result can be reproduced.
        exact_max_cases: Enumerate all sign patterns up to this many non-zero case differences;
            above it, use Monte Carlo. Lower it to force Monte Carlo; at most 24, since the
            enumeration doubles in time and memory with each case.

    Returns:
        The test's outcome. With no case that changed, both p-values are 1.

    Raises:
        ValueError: A parameter is out of range, or no case has trials in both runs (there is
            nothing to compare, and a silent "no regression" would mislead).
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    if not 0 <= exact_max_cases <= 24:
        raise ValueError(f"exact_max_cases must be in [0, 24], got {exact_max_cases}")

    unpaired = sorted(case for case, (base, cand) in outcomes.items() if len(base) == 0 or len(cand) == 0)
    paired = [(base, cand) for base, cand in outcomes.values() if len(base) > 0 and len(cand) > 0]
    if not paired:
        raise ValueError(
            f"no case has trials in both runs ({len(unpaired)} unpaired): the runs share no cases to compare"
        )

    base_rate = np.array([_pass_rate(base) for base, _ in paired])
    cand_rate = np.array([_pass_rate(cand) for _, cand in paired])
    # k/n is correctly rounded, so equal pass rates give exactly equal floats and d == 0 exactly.
    d = cand_rate - base_rate
    changed = d[d != 0.0]
    rng = np.random.default_rng(seed)

    if changed.size <= exact_max_cases:
        p_worse, p_better = _sign_flip_exact(changed)
        kind = "exact"
    else:
        p_worse, p_better = _sign_flip_monte_carlo(changed, resamples, rng)
        kind = f"Monte Carlo, {resamples} resamples"

    effect = float(d.mean())
    ci_low, ci_high = _bootstrap_interval(d, confidence, resamples, rng)
    return RegressionTest(
        method=f"paired sign-flip permutation test on per-case pass-rate differences ({kind})",
        alpha=alpha,
        cases=len(paired),
        unpaired=unpaired,
        baseline_pass_rate=float(base_rate.mean()),
        candidate_pass_rate=float(cand_rate.mean()),
        effect=effect,
        ci_low=ci_low,
        ci_high=ci_high,
        confidence=confidence,
        p_value=p_worse,
        p_value_improvement=p_better,
        regression=p_worse < alpha and effect < 0,
        improvement=p_better < alpha and effect > 0,
    )


def _pass_rate(trials: Sequence[bool]) -> float:
    return sum(1 for t in trials if t) / len(trials)


def _sign_flip_exact(d: np.ndarray) -> tuple[float, float]:
    """One-sided p-values (worse, better) of ``sum(d)`` over all ``2**len(d)`` sign patterns."""
    if d.size == 0:
        return 1.0, 1.0
    # Build every pattern's sum by doubling: after case i the array holds the sums over cases
    # 0..i for every sign choice. 2**m additions in all, no 2**m x m matrix.
    sums = np.zeros(1)
    for x in d:
        sums = np.concatenate((sums + x, sums - x))
    observed = float(sums[0])  # the all-plus pattern, summed in the same order: the data itself
    total = sums.size
    worse = np.count_nonzero(sums <= observed + _TIE_TOLERANCE) / total
    better = np.count_nonzero(sums >= observed - _TIE_TOLERANCE) / total
    return float(worse), float(better)


def _sign_flip_monte_carlo(d: np.ndarray, resamples: int, rng: np.random.Generator) -> tuple[float, float]:
    """One-sided p-values (worse, better) of ``sum(d)`` from ``resamples`` random sign patterns."""
    if d.size == 0:
        return 1.0, 1.0
    observed = float(d.sum())
    worse = better = 0
    rows = max(1, _CHUNK_ELEMENTS // d.size)
    for start in range(0, resamples, rows):
        n = min(rows, resamples - start)
        signs = rng.integers(0, 2, size=(n, d.size), dtype=np.int8) * 2 - 1
        stats = signs @ d
        worse += int(np.count_nonzero(stats <= observed + _TIE_TOLERANCE))
        better += int(np.count_nonzero(stats >= observed - _TIE_TOLERANCE))
    # The observed pattern counts as one of the draws, so a p-value is never 0 (and stays valid).
    return (1 + worse) / (1 + resamples), (1 + better) / (1 + resamples)


def _bootstrap_interval(
    d: np.ndarray, confidence: float, resamples: int, rng: np.random.Generator
) -> tuple[float, float]:
    """Percentile interval of ``mean(d)`` over ``resamples`` resamples of the cases, with replacement."""
    means = np.empty(resamples)
    rows = max(1, _CHUNK_ELEMENTS // d.size)
    for start in range(0, resamples, rows):
        n = min(rows, resamples - start)
        means[start : start + n] = d[rng.integers(0, d.size, size=(n, d.size))].mean(axis=1)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return float(low), float(high)
