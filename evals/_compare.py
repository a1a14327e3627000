"""Comparing two eval runs: pass rates, per-case flips, flaky cases, cost and latency, and a
verdict from the regression gate (``_stats.gate``: the aggregate paired test, each case's own
test, and the critical cases' rule) instead of a difference of two noisy numbers.

What the reports call a case, so that they agree with the gate:

- ``regression``: the case dropped significantly on its own (its Fisher test, corrected), or it
  collapsed: it passed in at least ``COLLAPSE_FROM`` of the baseline's trials and in none of the
  candidate's (4/5 → 0/5, with at least ``COLLAPSE_TRIALS`` trials in each run).
  A collapse fails the gate whatever its p-value: with a few trials per case and several flaky
  cases sharing the per-case level, the test cannot call even 4/5 → 0/5 significant, yet a case
  that stopped passing at all is what the gate is there to stop.
- ``worse``: a lower pass rate that is neither (5/5 → 4/5). When the aggregate test fails the gate,
  these cases are the drop it found, so they count as regressed too (``regressed``).
- ``flaky``: mixed outcomes in either run, and not regressed (5/5 → 4/5, 0/5 → 3/5): it passes
  with a note.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel

import tracer

from ._errors import EvalError
from ._stats import CRITICAL_TAG, GateResult, RegressionTest, case_status, detection_power, gate, trials_needed

Verdict = Literal["regression", "no regression", "improvement"]
Change = Literal["regression", "worse", "better", "same"]

POWER_SCENARIOS = ((1.0, 0.0), (1.0, 0.4), (0.9, 0.6))
"""The drops (true pass rate before, after) every report says it could or could not catch."""

POWER = 0.8
"""A drop counts as caught when the per-case test flags it at least this often."""

COLLAPSE_FROM = 0.8
"""The baseline pass rate from which a fall to no passing trial is a collapse. From a bare majority
(3/5 → 0/5) the rule fired in 5.4% of no-change comparisons of a very flaky suite, beyond the gate's
whole false-alarm budget; from 4/5, 2.3% (RESULTS.md, section 36)."""

COLLAPSE_TRIALS = 3
"""The fewest trials per case, in each run, at which a collapse counts: below it, 1/1 → 0/1 or
2/2 → 0/2 is one or two coin flips, and only the tests judge it."""

_TURN = re.compile(r"\bturns? (\d+)")
"""How scorers' reasons name a turn ("at turn 3", "(turn 2)", "at turns 2, 5"): read only for a failing
score that does not give its ``turn``."""


class CaseComparison(BaseModel):
    """One case in both runs."""

    case_id: str
    tags: list[str]
    baseline: list[bool]
    """The baseline's trial outcomes (empty when the case was not in it)."""
    candidate: list[bool]
    """The candidate's trial outcomes (empty when the case was not in it)."""
    baseline_status: Literal["pass", "fail", "flaky"] | None
    """All trials passed, all failed, or mixed."""
    candidate_status: Literal["pass", "fail", "flaky"] | None
    flip: Literal["pass→fail", "fail→pass"] | None
    """A case that passed every trial and now fails every one, or the other way."""
    delta: float | None
    """Candidate pass rate minus baseline pass rate."""
    failing_sessions: list[str]
    """The candidate's failing trials' sessions, to open in ``traces show`` and ``replay``."""
    reasons: list[str]
    """Why the candidate's failing trials failed (distinct scorer reasons)."""
    critical: bool = False
    """Tagged ``critical``: held to the critical cases' stricter rule."""
    p_value: float | None = None
    """The case's own one-sided Fisher p-value (``None`` when it is in one run only)."""
    level: float | None = None
    """The level that p-value was held to, after the multiplicity correction."""
    collapsed: bool = False
    """Passed in most of the baseline's trials and in none of the candidate's: a regression
    whatever its p-value."""
    change: Change | None = None
    """``regression`` (a significant drop on its own, or a collapse), ``worse``, ``better`` or
    ``same`` (``None`` when the case is in one run only)."""
    regressed: bool = False
    """The gate counts this case as regressed: a significant drop on its own, a collapse, or a
    worse case when the aggregate test failed the gate. JUnit fails exactly these cases."""


class RunSide(BaseModel):
    """One run's figures."""

    run_id: str
    labels: list[str]
    settings: dict[str, str]
    pass_rate: float
    """Passed trials over all trials."""
    mean_score: float
    cost_usd: float | None
    """Mean cost per trial; ``None`` when unknown."""
    latency_ms_median: float | None
    """Median session wall time."""


class Comparison(BaseModel):
    """Baseline against candidate."""

    baseline: RunSide
    candidate: RunSide
    same_dataset: bool
    """Both runs ran the same cases and scorers (the dataset hash matches)."""
    test: RegressionTest
    """The aggregate paired test over the cases both runs have (``gate.aggregate``)."""
    gate: GateResult
    """The whole gate: the aggregate test, each case's own test, the critical rule."""
    cases: list[CaseComparison]
    flips_to_fail: list[str]
    flips_to_pass: list[str]
    regressions: list[str] = []
    """Cases the gate counts as regressed (``CaseComparison.regressed``)."""
    flaky: list[str]
    """Cases with mixed outcomes in either run that did not regress."""
    cost_delta_usd: float | None
    """Candidate minus baseline mean cost per trial."""
    latency_delta_ms: float | None
    """Candidate minus baseline median session time."""
    verdict: Verdict
    verdict_reason: str
    power: str = ""
    """What the per-case test could and could not catch at these trial counts, and what
    ``--trials`` would."""


def _side(run: tracer.EvalRunRecord, results: Sequence[tracer.EvalResultRecord]) -> RunSide:
    costs = [r.cost_usd for r in results]
    latencies = [r.latency_ms for r in results if r.latency_ms is not None]
    return RunSide(
        run_id=run.run_id, labels=run.labels, settings=run.settings,
        pass_rate=run.passed_trials / run.total_trials if run.total_trials else 0.0, mean_score=run.mean_score,
        cost_usd=None if not costs or any(c is None for c in costs) else sum(c for c in costs if c) / len(costs),
        latency_ms_median=statistics.median(latencies) if latencies else None)


def compare(baseline: tracer.EvalRunRecord, baseline_results: Sequence[tracer.EvalResultRecord],
            candidate: tracer.EvalRunRecord, candidate_results: Sequence[tracer.EvalResultRecord], *,
            alpha: float = 0.05) -> Comparison:
    """Compares two stored runs case by case."""
    outcomes: dict[str, tuple[list[bool], list[bool]]] = {}
    tags: dict[str, list[str]] = {}
    failing: dict[str, list[tracer.EvalResultRecord]] = {}
    for side, results in ((0, baseline_results), (1, candidate_results)):
        for r in results:
            outcomes.setdefault(r.case_id, ([], []))[side].append(r.passed)
            tags[r.case_id] = r.tags
            if side == 1 and not r.passed:
                failing.setdefault(r.case_id, []).append(r)
    if not any(a and b for a, b in outcomes.values()):
        raise EvalError(f"runs {baseline.run_id[:8]} and {candidate.run_id[:8]} share no case ({baseline.dataset} vs "
                        f"{candidate.dataset}); compare two runs of the same dataset.")
    if not 0.0 < alpha < 1.0:
        raise EvalError(f"alpha {alpha} is out of range: give a false-alarm rate between 0 and 1, such as 0.05.")
    critical = {case for case, t in tags.items() if CRITICAL_TAG in t}
    result = gate(outcomes, critical=critical, alpha=alpha)
    test = result.aggregate
    own = {c.case_id: c for c in result.cases}
    cases = []
    for case_id in sorted(outcomes):
        a, b = outcomes[case_id]
        sa, sb = (case_status(a) if a else None), (case_status(b) if b else None)
        flip = "pass→fail" if (sa, sb) == ("pass", "fail") else "fail→pass" if (sa, sb) == ("fail", "pass") else None
        bad = failing.get(case_id, [])
        reasons = list(dict.fromkeys(
            [s["reason"] for r in bad for s in r.scores if not s.get("passed")] + [r.error for r in bad if r.error]))
        delta = (sum(b) / len(b) - sum(a) / len(a)) if a and b else None
        t = own.get(case_id)
        fell = collapsed(a, b)
        change: Change | None = None
        if t is not None and delta is not None:
            change = ("regression" if t.regression or fell else "worse" if delta < 0 else "better" if delta > 0
                      else "same")
        cases.append(CaseComparison(
            case_id=case_id, tags=tags[case_id], baseline=a, candidate=b, baseline_status=sa, candidate_status=sb,
            flip=flip, delta=delta, failing_sessions=[r.session_id for r in bad if r.session_id], reasons=reasons,
            critical=case_id in critical, p_value=t.p_value if t else None, level=t.level if t else None,
            collapsed=fell, change=change,
            regressed=change == "regression" or (change == "worse" and test.regression)))
    base, cand = _side(baseline, baseline_results), _side(candidate, candidate_results)
    same = baseline.dataset_sha256 == candidate.dataset_sha256
    own_drops = [c for c in cases if c.case_id in result.regressions]
    collapses = [c for c in cases if c.collapsed and c.case_id not in result.regressions]
    if result.regression or collapses:
        verdict: Verdict = "regression"
        parts = []
        if test.regression:
            parts.append(f"the candidate's pass rate is {-test.effect * 100:.1f} points lower per case on average "
                         f"({test.confidence:.0%} CI {test.ci_low * 100:+.1f} to {test.ci_high * 100:+.1f}); "
                         f"p = {test.p_value:.4f} < {test.alpha:g}")
        if own_drops:
            parts.append(f"{len(own_drops)} case(s) dropped significantly on their own: " + ", ".join(
                f"{c.case_id}{' (critical)' if c.critical else ''} {_count(c.baseline)} → {_count(c.candidate)} "
                f"(p = {c.p_value:.2g} ≤ {c.level:.3g})" for c in own_drops))
        if collapses:
            parts.append(f"{len(collapses)} case(s) passed in at least {COLLAPSE_FROM:.0%} of baseline trials and "
                         "in no candidate trial, a regression whatever the p-value: " + ", ".join(
                             f"{c.case_id}{' (critical)' if c.critical else ''} {_count(c.baseline)} → "
                             f"{_count(c.candidate)} (p = {c.p_value:.2g} > {c.level:.3g})" for c in collapses))
        reason = "; ".join(parts)
    elif test.improvement:
        verdict, reason = "improvement", (f"the candidate's pass rate is {test.effect * 100:.1f} points higher per "
                                          f"case (p = {test.p_value_improvement:.4f}); no regression")
    else:
        verdict = "no regression"
        smallest = min(result.cases, key=lambda c: c.p_value)
        reason = (f"the difference ({test.effect * 100:+.1f} points per case, {test.confidence:.0%} CI "
                  f"{test.ci_low * 100:+.1f} to {test.ci_high * 100:+.1f}) is within noise: "
                  f"p = {test.p_value:.3f} ≥ {test.alpha:g}; and no case dropped significantly on its own "
                  f"(the smallest case p-value, {smallest.case_id}'s, is {smallest.p_value:.2g} > "
                  f"{smallest.level:.3g})")
    if not same:
        reason += "; note: the two runs used different cases or scorers (dataset hash differs)"
    return Comparison(
        baseline=base, candidate=cand, same_dataset=same, test=test, gate=result, cases=cases,
        flips_to_fail=[c.case_id for c in cases if c.flip == "pass→fail"],
        flips_to_pass=[c.case_id for c in cases if c.flip == "fail→pass"],
        regressions=[c.case_id for c in cases if c.regressed],
        flaky=[c.case_id for c in cases if "flaky" in (c.baseline_status, c.candidate_status) and not c.regressed],
        cost_delta_usd=None if base.cost_usd is None or cand.cost_usd is None else cand.cost_usd - base.cost_usd,
        latency_delta_ms=None if base.latency_ms_median is None or cand.latency_ms_median is None
        else cand.latency_ms_median - base.latency_ms_median,
        verdict=verdict, verdict_reason=reason,
        power=power_note(result, _typical([len(a) for a, _ in outcomes.values() if a]),
                         _typical([len(b) for _, b in outcomes.values() if b])))


def collapsed(baseline: Sequence[bool], candidate: Sequence[bool]) -> bool:
    """The collapse rule: the case passed in at least ``COLLAPSE_FROM`` of the baseline's trials and
    in none of the candidate's, with at least ``COLLAPSE_TRIALS`` trials in each run. Such a case is
    a regression whatever its p-value (``Comparison.verdict``)."""
    return min(len(baseline), len(candidate)) >= COLLAPSE_TRIALS and not any(candidate) \
        and sum(baseline) >= COLLAPSE_FROM * len(baseline)


def failing_turn(result: tracer.EvalResultRecord) -> int | None:
    """The decision to open for a failed trial: the turn its first failing scorer judged (the
    score's ``turn``, else the first its reason names), else its last turn, since a score with
    neither judged how the session ended (its final answer, status or budget). ``None`` for a trial
    that passed or took no turn."""
    if result.passed:
        return None
    for score in result.scores:
        if score.get("passed"):
            continue
        # A score without a turn (stored before scores carried one, or from a custom scorer that does
        # not set it, as the bundled suite's did) may still name one in words: the best there is.
        turn = score.get("turn") or _turn_named(score.get("reason") or "")
        if turn is not None:
            return turn
    return result.turns or None


def _turn_named(reason: str) -> int | None:
    m = _TURN.search(reason)
    return int(m.group(1)) if m else None


def _count(trials: Sequence[bool]) -> str:
    return f"{sum(trials)}/{len(trials)}"


def _typical(counts: Sequence[int]) -> int:
    """The most common trial count (runs give every case the same count; ties go to the smaller)."""
    return max(sorted(set(counts)), key=counts.count)


def _pct(x: float) -> str:
    return f"{x:.0%}"


def power_note(result: GateResult | None, base_trials: int, cand_trials: int, *, alpha: float = 0.05) -> str:
    """What the per-case test could and could not catch at these trial counts, in a sentence or two.

    Args:
        result: The gate's outcome, for the level a newly dropped case would be held to (its
            family's ``alpha`` over the cases that could reach significance); ``None`` for a run
            without a baseline: the level of a gate with no critical case and one testable case.
        base_trials: The baseline's trials per case.
        cand_trials: The candidate's trials per case.
        alpha: The gate's budget, when ``result`` is ``None``.
    """
    if result is None:
        level, where = alpha / 2, f"level {alpha / 2:g}"
    else:
        level = result.case_alpha / max(1, result.testable)
        where = (f"level {level:.3g}: {result.case_alpha:g} shared by the {result.testable} case(s) that could "
                 "reach significance")
    caught, missed = [], []
    for before, after in POWER_SCENARIOS:
        p = detection_power(before, after, base_trials=base_trials, cand_trials=cand_trials, level=level)
        (caught if p >= POWER else missed).append(f"{_pct(before)} → {_pct(after)} ({_pct(p)} of the time)")
    out = f"With {base_trials} baseline and {cand_trials} candidate trials per case ({where}), one case's own test "
    if caught:
        out += f"catches a case falling {', '.join(caught)}"
        out += f"; it does not reliably catch {', '.join(missed)}." if missed else "."
    else:
        out += f"does not reliably catch even a case falling {', '.join(missed)}."
    hints = []
    for before, after in POWER_SCENARIOS:
        if detection_power(before, after, base_trials=base_trials, cand_trials=cand_trials, level=level) >= POWER:
            continue
        n = trials_needed(before, after, level=level, power=POWER)
        hints.append(f"--trials {n} (both runs) would catch {_pct(before)} → {_pct(after)}" if n else
                     f"not even --trials 50 would catch {_pct(before)} → {_pct(after)} case by case")
    if hints:
        out += " " + "; ".join(hints) + "."
    if result is not None and result.critical_alpha:
        crit = result.critical_alpha / max(1, result.critical_testable)
        p = detection_power(1.0, 0.4, base_trials=base_trials, cand_trials=cand_trials, level=crit)
        out += f" Critical cases are held to {crit:.3g}: 100% → 40% is caught {_pct(p)} of the time."
    if min(base_trials, cand_trials) >= COLLAPSE_TRIALS:  # the figures above are the test's alone
        out += (f" A case that falls to no passing trial from {_pct(COLLAPSE_FROM)} or more fails the gate "
                "whatever its test says (the collapse rule).")
    out += (" Drops spread over many cases are the aggregate test's to catch "
            "(README, Evals: its measured rates).")
    return out


def compare_stored(store: tracer.Store, baseline: str, candidate: str, *, alpha: float = 0.05) -> Comparison:
    """Compares two stored runs, each named by id, unique prefix or label.

    Raises:
        tracer.UnknownEvalRunError: a run is not in the store.
    """
    a, b = store.find_eval_run(baseline), store.find_eval_run(candidate)
    return compare(a, store.eval_results(a.run_id), b, store.eval_results(b.run_id), alpha=alpha)
