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

Why the sign-flip test is not enough: the gate (``gate``)
    The sign-flip p-value of ``m`` changed cases can never fall below ``2**-m``: a regression
    confined to 4 or fewer cases (a removed tool, a dropped safety rule) can never reach 0.05,
    however many trials are run, because the test only sees the *signs* that moved. ``gate``
    therefore adds a per-case test and fails when either family finds a regression:

    - **per case**: one-sided Fisher's exact test on each case's 2x2 table (baseline and
      candidate passes and failures), ``fisher_exact_worse``. Conditioned on the case's total
      passes it is the hypergeometric lower tail, exact for any trial counts, and needs no
      large-sample approximation. Boschloo's test is more powerful but needs a search over a
      nuisance parameter per case; Fisher's is exact, fast and well known, and the
      multiplicity refinement below recovers most of what its discreteness costs.
    - **multiplicity**: Holm's step-down procedure controls the family-wise error rate (the
      chance of *any* false alarm), which is what a CI gate needs: one false red build per 20
      is already the budget. Benjamini-Hochberg controls the false discovery rate instead, the
      right choice for screening many effects, not for a pass/fail gate. Plain Holm over 30
      cases is too strict for discrete tests: with 5 trials a side a case going 5/5 -> 0/5 has
      p = 1/252 = 0.004, above 0.025/30. But a case that passed 5/5 in both runs, or that
      lost one trial, *cannot* reach significance whatever happened: with its margins the
      smallest p it can give (``min_attainable_p``) is 1 or 0.5. Tarone's refinement counts
      only the cases whose smallest attainable p is below the level: at each Holm step the
      level is ``alpha / k`` for the smallest ``k`` such that at most ``k`` of the remaining
      cases could reach ``alpha / k`` (``holm_tarone``). It is a valid closed-testing shortcut
      (each step's test is a Bonferroni test over a subset fixed by the margins alone), so the
      family-wise error rate stays at most ``alpha``; stable cases stop diluting the level.
    - **critical cases** (tag ``critical``: safety, money, escalation) have a stricter rule: they
      form a family of their own, held to half of ``alpha`` by themselves. Critical cases are
      few and mostly stable, so Tarone's count there is usually 1 and a critical case is tested
      at 0.025 with no correction for the rest of the suite: with 5 trials a side, 5/5 -> 1/5
      (p = 0.024) fails the gate, where an ordinary case needs 5/5 -> 0/5.
    - **the budget**: ``alpha`` (0.05) is split by Bonferroni between the families, so the
      A/A false-alarm rate of the whole gate is at most ``alpha`` for *any* suite, not only the
      ones simulated. Without critical cases: half to the aggregate sign-flip test, half to the
      per-case family. With critical cases: half to the critical family, a quarter each to the
      other two (``CRITICAL_SHARE``, ``AGGREGATE_SHARE``): tagging cases critical costs the
      other cases some power, so tag the few that must never break. Both tests are conservative
      on discrete data, so the measured rate is well below ``alpha``: 1-3% in simulation, under
      1% on the bundled suite (benchmarks/bench_gate.py, benchmarks/RESULTS.md section 14).

Power, said aloud
    ``detection_power`` is the exact probability that the per-case test flags one case whose
    true pass rate falls from ``base_rate`` to ``cand_rate``, summed over every pair of pass
    counts the two runs can give; ``trials_needed`` finds the fewest trials per run that reach a
    target power. The reports use them to say what a run could and could not have caught.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from functools import lru_cache
from math import comb
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

AGGREGATE_SHARE = 0.5
"""The share of the gate's non-critical budget spent on the aggregate sign-flip test; the rest goes
to the per-case family."""

CRITICAL_SHARE = 0.5
"""The share of the gate's ``alpha`` reserved for the critical cases' own family, when the suite
has any: 0.05 splits into 0.025 critical, 0.0125 aggregate and 0.0125 per case (0.025 and 0.025
without critical cases)."""

CRITICAL_TAG = "critical"
"""Cases with this tag are also tested in a family of their own (safety, money, escalation)."""

_LEVEL_TOLERANCE = 1e-9
"""A p-value this close above a level counts as at the level: 1/252 computed two ways may differ in
the last bit, and p <= level is the rule."""


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


# -- the per-case test and the gate ------------------------------------------------------------


class CaseTest(BaseModel):
    """One case's own test: did its pass count drop by more than chance explains?"""

    case_id: str
    """The case."""
    baseline_passed: int
    """Baseline trials that passed."""
    baseline_trials: int
    """Baseline trials run."""
    candidate_passed: int
    """Candidate trials that passed."""
    candidate_trials: int
    """Candidate trials run."""
    p_value: float
    """One-sided Fisher's exact p-value against "the candidate passes this case less often"."""
    min_p_value: float
    """The smallest p-value a table with these margins can give; above the level, the case cannot
    be significant whatever happened, so it does not count towards the multiplicity correction."""
    critical: bool
    """Tagged ``critical``: tested in the critical family instead of the per-case one."""
    level: float
    """The level ``p_value`` was held to: where its family's Holm-Tarone procedure rejected it, or
    where it stopped."""
    regression: bool
    """The case dropped significantly on its own: ``p_value <= level``."""


class GateResult(BaseModel):
    """The regression gate: the aggregate test, every case's own test, and the verdict."""

    alpha: float
    """The gate's false-alarm budget, split between the families by Bonferroni."""
    aggregate_alpha: float
    """The aggregate sign-flip test's share of ``alpha``."""
    case_alpha: float
    """The per-case family's share (Fisher's exact, Holm-Tarone over the paired non-critical cases)."""
    critical_alpha: float
    """The critical family's share (the same test over the ``critical`` cases only); 0 when none."""
    aggregate: RegressionTest
    """The paired sign-flip test over all cases, at ``aggregate_alpha``."""
    cases: list[CaseTest]
    """Every paired case's own test, by case id."""
    testable: int
    """Tarone's count at the per-case family's first step: the cases that could reach significance."""
    critical_testable: int
    """The same count in the critical family."""
    regressions: list[str]
    """Cases that dropped significantly on their own, by case id."""
    regression: bool
    """The gate fails: the aggregate test or a case's own test found a regression."""


def fisher_exact_worse(baseline_passed: int, baseline_trials: int, candidate_passed: int,
                       candidate_trials: int) -> float:
    """One-sided Fisher's exact test: the p-value of "the candidate passes less often".

    Conditioned on the case's total passes, the candidate's passes are hypergeometric under "no
    change"; the p-value is the chance of as few candidate passes as observed, or fewer.

    Raises:
        ValueError: a count is negative, or more passes than trials, or a side has no trials.
    """
    _check_counts(baseline_passed, baseline_trials, candidate_passed, candidate_trials)
    tails = _lower_tails(baseline_passed + candidate_passed, baseline_trials, candidate_trials)
    return tails[candidate_passed]


def min_attainable_p(baseline_passed: int, baseline_trials: int, candidate_passed: int,
                     candidate_trials: int) -> float:
    """The smallest ``fisher_exact_worse`` p-value a table with these margins can give.

    The most extreme table puts as many of the case's failures as fit on the candidate's side. A
    case that passed every trial in both runs gives 1; one that lost a single trial, 0.5 or so.
    """
    _check_counts(baseline_passed, baseline_trials, candidate_passed, candidate_trials)
    total = baseline_passed + candidate_passed
    tails = _lower_tails(total, baseline_trials, candidate_trials)
    return tails[max(0, total - baseline_trials)]


def holm_tarone(p_values: Mapping[str, float], min_p_values: Mapping[str, float],
                alpha: float) -> tuple[set[str], dict[str, float], int]:
    """Holm's step-down procedure with Tarone's count of testable hypotheses, for discrete tests.

    At each step the smallest remaining p-value is held to ``alpha / k``, where ``k`` is the
    smallest number such that at most ``k`` of the remaining hypotheses have a smallest
    attainable p-value at or below ``alpha / k``; it is rejected if it is at or below that level,
    and the procedure stops at the first one that is not. The family-wise error rate is at most
    ``alpha``.

    Args:
        p_values: Hypothesis -> p-value.
        min_p_values: Hypothesis -> the smallest p-value its test could give (same keys).
        alpha: The family-wise error rate.

    Returns:
        The rejected hypotheses; each hypothesis's level (where it was rejected, or the level at
        which the procedure stopped); and Tarone's ``k`` at the first step (1 for no hypothesis).
    """
    remaining = dict(min_p_values)
    rejected: set[str] = set()
    levels: dict[str, float] = {}
    first_k = _tarone_k(remaining.values(), alpha)
    level = alpha / first_k
    for h in sorted(p_values, key=lambda h: (p_values[h], h)):
        level = alpha / _tarone_k(remaining.values(), alpha)
        if not _at_most(p_values[h], level):
            break
        rejected.add(h)
        levels[h] = level
        del remaining[h]
    for h in p_values:
        levels.setdefault(h, level)
    return rejected, levels, first_k


def gate(
    outcomes: Mapping[str, tuple[Sequence[bool], Sequence[bool]]],
    *,
    critical: Collection[str] = (),
    alpha: float = 0.05,
    resamples: int = 20_000,
    seed: int = 0,
    exact_max_cases: int = EXACT_MAX_CASES,
) -> GateResult:
    """The regression gate: the aggregate sign-flip test, plus each case's own test.

    The gate fails when the candidate is worse overall (``paired_test``), or when any case
    dropped significantly on its own (Fisher's exact test, Holm-Tarone over the non-critical
    paired cases), or when a ``critical`` case did (the same over the critical cases alone). The
    families' shares add up to ``alpha`` (see ``CRITICAL_SHARE``), so a candidate no different
    from the baseline fails the gate with probability at most ``alpha`` (Bonferroni).

    Args:
        outcomes: Case id -> (baseline trial outcomes, candidate trial outcomes), as for
            ``paired_test``; cases with no trials on a side are left out.
        critical: Ids of the critical cases (those tagged ``critical``).
        alpha: The gate's false-alarm budget, in (0, 1).
        resamples, seed, exact_max_cases: As for ``paired_test``.

    Returns:
        Every test's outcome and the verdict.

    Raises:
        ValueError: A parameter is out of range, or no case has trials in both runs.
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}; 0.05 is the usual gate")
    counts = {case: (sum(1 for t in base if t), len(base), sum(1 for t in cand if t), len(cand))
              for case, (base, cand) in outcomes.items() if len(base) > 0 and len(cand) > 0}
    crit = {case for case in counts if case in critical}
    critical_alpha = alpha * CRITICAL_SHARE if crit else 0.0
    aggregate_alpha = (alpha - critical_alpha) * AGGREGATE_SHARE
    case_alpha = alpha - critical_alpha - aggregate_alpha
    aggregate = paired_test(outcomes, alpha=aggregate_alpha, resamples=resamples, seed=seed,
                            exact_max_cases=exact_max_cases)
    p = {case: fisher_exact_worse(*c) for case, c in counts.items()}
    min_p = {case: min_attainable_p(*c) for case, c in counts.items()}
    ordinary = [c for c in counts if c not in crit]
    rejected, levels, testable = holm_tarone({c: p[c] for c in ordinary}, {c: min_p[c] for c in ordinary},
                                             case_alpha)
    critical_testable = 0
    if crit:
        crit_rejected, crit_levels, critical_testable = holm_tarone(
            {c: p[c] for c in crit}, {c: min_p[c] for c in crit}, critical_alpha)
        rejected |= crit_rejected
        levels.update(crit_levels)
    cases = [CaseTest(case_id=case, baseline_passed=counts[case][0], baseline_trials=counts[case][1],
                      candidate_passed=counts[case][2], candidate_trials=counts[case][3], p_value=p[case],
                      min_p_value=min_p[case], critical=case in crit, level=levels[case],
                      regression=case in rejected) for case in sorted(counts)]
    return GateResult(alpha=alpha, aggregate_alpha=aggregate_alpha, case_alpha=case_alpha,
                      critical_alpha=critical_alpha, aggregate=aggregate, cases=cases, testable=testable,
                      critical_testable=critical_testable, regressions=sorted(rejected),
                      regression=aggregate.regression or bool(rejected))


def detection_power(base_rate: float, cand_rate: float, *, base_trials: int, cand_trials: int,
                    level: float) -> float:
    """The chance that one case's own test flags a drop from ``base_rate`` to ``cand_rate``.

    Exact: the sum, over every pair of pass counts the two runs can give, of its binomial
    probability when the test's p-value is at or below ``level``.

    Args:
        base_rate: The case's true pass rate in the baseline, in [0, 1].
        cand_rate: Its true pass rate in the candidate, in [0, 1].
        base_trials: Baseline trials of the case, at least 1.
        cand_trials: Candidate trials of the case, at least 1.
        level: The level the case's p-value is held to (for example ``alpha / testable``).

    Raises:
        ValueError: A rate or level is out of range, or a trial count is below 1.
    """
    if not (0.0 <= base_rate <= 1.0 and 0.0 <= cand_rate <= 1.0):
        raise ValueError(f"pass rates must be in [0, 1], got {base_rate} and {cand_rate}")
    if base_trials < 1 or cand_trials < 1:
        raise ValueError(f"trial counts must be at least 1, got {base_trials} and {cand_trials}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    pb, pc = _binomial(base_trials, base_rate), _binomial(cand_trials, cand_rate)
    power = 0.0
    for xb, wb in enumerate(pb):
        if wb == 0.0:
            continue
        for xc, wc in enumerate(pc):
            if wc != 0.0 and _at_most(_lower_tails(xb + xc, base_trials, cand_trials)[xc], level):
                power += wb * wc
    return min(power, 1.0)


def trials_needed(base_rate: float, cand_rate: float, *, level: float, power: float = 0.8,
                  base_trials: int | None = None, max_trials: int = 50) -> int | None:
    """The fewest trials per case that give ``detection_power`` of at least ``power``.

    Args:
        base_rate, cand_rate, level: As for ``detection_power``.
        power: The power wanted, in (0, 1).
        base_trials: The baseline's trials per case; ``None``: the same as the candidate's (both
            runs at the new count).
        max_trials: Search no further than this.

    Returns:
        The trial count, or ``None`` when even ``max_trials`` falls short.
    """
    if not 0.0 < power < 1.0:
        raise ValueError(f"power must be in (0, 1), got {power}")
    for n in range(1, max_trials + 1):
        if detection_power(base_rate, cand_rate, base_trials=base_trials or n, cand_trials=n, level=level) >= power:
            return n
    return None


def _check_counts(bp: int, bn: int, cp: int, cn: int) -> None:
    if bn < 1 or cn < 1 or not 0 <= bp <= bn or not 0 <= cp <= cn:
        raise ValueError(f"bad 2x2 table: {bp}/{bn} baseline and {cp}/{cn} candidate passes; each side needs "
                         "at least one trial and at most as many passes as trials")


def _at_most(p: float, level: float) -> bool:
    return p <= level * (1.0 + _LEVEL_TOLERANCE)


def _tarone_k(min_ps: Collection[float], alpha: float) -> int:
    """The smallest k >= 1 with at most k of ``min_ps`` at or below ``alpha / k``."""
    k = 1
    while sum(1 for m in min_ps if _at_most(m, alpha / k)) > k:
        k += 1
    return k


@lru_cache(maxsize=65_536)
def _lower_tails(total_passed: int, base_trials: int, cand_trials: int) -> tuple[float, ...]:
    """P(candidate passes <= x | total passes), for x = 0 .. cand_trials: exact, in integers."""
    n = base_trials + cand_trials
    fails = n - total_passed
    weights = [comb(total_passed, x) * comb(fails, cand_trials - x) if 0 <= cand_trials - x <= fails else 0
               for x in range(cand_trials + 1)]
    whole = comb(n, cand_trials)
    out, running = [], 0
    for w in weights:
        running += w
        out.append(running / whole)
    return tuple(out)


def _binomial(n: int, p: float) -> list[float]:
    return [comb(n, x) * p**x * (1.0 - p) ** (n - x) for x in range(n + 1)]
