"""Comparing two eval runs: pass rates, per-case flips, flaky cases, cost and latency, and a
verdict from a paired test (``_stats.py``) instead of a difference of two noisy numbers."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel

import tracer

from ._errors import EvalError
from ._stats import RegressionTest, case_status, paired_test

Verdict = Literal["regression", "no regression", "improvement"]


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
    """The paired test over the cases both runs have."""
    cases: list[CaseComparison]
    flips_to_fail: list[str]
    flips_to_pass: list[str]
    flaky: list[str]
    """Cases with mixed outcomes in either run."""
    cost_delta_usd: float | None
    """Candidate minus baseline mean cost per trial."""
    latency_delta_ms: float | None
    """Candidate minus baseline median session time."""
    verdict: Verdict
    verdict_reason: str


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
    test = paired_test(outcomes, alpha=alpha)
    cases = []
    for case_id in sorted(outcomes):
        a, b = outcomes[case_id]
        sa, sb = (case_status(a) if a else None), (case_status(b) if b else None)
        flip = "pass→fail" if (sa, sb) == ("pass", "fail") else "fail→pass" if (sa, sb) == ("fail", "pass") else None
        bad = failing.get(case_id, [])
        reasons = list(dict.fromkeys(
            [s["reason"] for r in bad for s in r.scores if not s.get("passed")] + [r.error for r in bad if r.error]))
        cases.append(CaseComparison(
            case_id=case_id, tags=tags[case_id], baseline=a, candidate=b, baseline_status=sa, candidate_status=sb,
            flip=flip, delta=(sum(b) / len(b) - sum(a) / len(a)) if a and b else None,
            failing_sessions=[r.session_id for r in bad if r.session_id], reasons=reasons))
    base, cand = _side(baseline, baseline_results), _side(candidate, candidate_results)
    same = baseline.dataset_sha256 == candidate.dataset_sha256
    if test.regression:
        verdict: Verdict = "regression"
        reason = (f"the candidate's pass rate is {-test.effect * 100:.1f} points lower per case on average "
                  f"({test.confidence:.0%} CI {test.ci_low * 100:+.1f} to {test.ci_high * 100:+.1f}); "
                  f"p = {test.p_value:.4f} < {test.alpha}")
    elif test.improvement:
        verdict, reason = "improvement", (f"the candidate's pass rate is {test.effect * 100:.1f} points higher per "
                                          f"case (p = {test.p_value_improvement:.4f}); no regression")
    else:
        verdict = "no regression"
        reason = (f"the difference ({test.effect * 100:+.1f} points per case, {test.confidence:.0%} CI "
                  f"{test.ci_low * 100:+.1f} to {test.ci_high * 100:+.1f}) is within noise: "
                  f"p = {test.p_value:.3f} ≥ {test.alpha}")
    moved = sum(1 for a, b in outcomes.values() if a and b and sum(a) / len(a) != sum(b) / len(b))
    if verdict == "no regression" and test.effect < 0 and 2.0 ** -moved > alpha:
        reason += (f"; only {moved} case(s) changed, and the smallest p-value {moved} cases can give is "
                   f"{2.0 ** -moved:.3g}: a regression needs at least {_cases_needed(alpha)} changed cases to show, "
                   "so add cases (or trials, which make smaller changes count)")
    if not same:
        reason += "; note: the two runs used different cases or scorers (dataset hash differs)"
    return Comparison(
        baseline=base, candidate=cand, same_dataset=same, test=test, cases=cases,
        flips_to_fail=[c.case_id for c in cases if c.flip == "pass→fail"],
        flips_to_pass=[c.case_id for c in cases if c.flip == "fail→pass"],
        flaky=[c.case_id for c in cases if "flaky" in (c.baseline_status, c.candidate_status)],
        cost_delta_usd=None if base.cost_usd is None or cand.cost_usd is None else cand.cost_usd - base.cost_usd,
        latency_delta_ms=None if base.latency_ms_median is None or cand.latency_ms_median is None
        else cand.latency_ms_median - base.latency_ms_median,
        verdict=verdict, verdict_reason=reason)


def _cases_needed(alpha: float) -> int:
    """The fewest changed cases whose sign-flip test can reach ``alpha`` (all moving one way: p = 2^-n)."""
    n = 1
    while 2.0 ** -n > alpha:
        n += 1
    return n


def compare_stored(store: tracer.Store, baseline: str, candidate: str, *, alpha: float = 0.05) -> Comparison:
    """Compares two stored runs, each named by id, unique prefix or label.

    Raises:
        tracer.UnknownEvalRunError: a run is not in the store.
    """
    a, b = store.find_eval_run(baseline), store.find_eval_run(candidate)
    return compare(a, store.eval_results(a.run_id), b, store.eval_results(b.run_id), alpha=alpha)
