"""The gate's two promises, shown with the simulated model on the bundled suite:

- A/A: the agent against itself is flagged as a regression in at most 5% of repetitions;
- A/B: the bundled regression (no refund-confirmation rule) is flagged.

Each promise is checked over many repetitions. Running the suite twice per repetition would take
minutes, so each side's trials come from one pooled run with more trials per case; a repetition
draws disjoint sets of ``DEFAULT_TRIALS`` trials from the pools, as two independent runs would
(every trial has its own seed).
"""

from __future__ import annotations

import random

import pytest

import evals
import tracer

POOL = 15
"""Trials per case in the pooled runs: three disjoint draws of 5."""
REPETITIONS = 200


@pytest.fixture(scope="module")
def pools(tmp_path_factory):
    db = str(tmp_path_factory.mktemp("gate") / "gate.duckdb")
    base = evals.run_eval("support", trials=POOL, concurrency=4, seed=1, db=db)
    regressed = evals.run_eval("support", trials=2 * evals.DEFAULT_TRIALS, concurrency=4, seed=2, db=db,
                               settings={"variant": "no-refund-confirmation"})
    return db, base, regressed


def outcomes(run: evals.EvalRun) -> dict[str, list[bool]]:
    out: dict[str, list[bool]] = {}
    for r in run.results:
        out.setdefault(r.case_id, []).append(r.passed)
    return out


def draw(pool: dict[str, list[bool]], rng: random.Random, k: int, skip: dict[str, set[int]] | None = None):
    picked, used = {}, {}
    for case, trials in pool.items():
        free = [i for i in range(len(trials)) if i not in (skip or {}).get(case, set())]
        idx = rng.sample(free, k)
        picked[case], used[case] = [trials[i] for i in idx], set(idx)
    return picked, used


def test_aa_the_agent_against_itself_is_rarely_flagged(pools):
    _, base, _ = pools
    pool = outcomes(base)
    flaky = [c for c, t in pool.items() if 0 < sum(t) < len(t)]
    assert len(flaky) >= 3, "the suite must have flaky cases, or an A/A test proves nothing"
    rng = random.Random(7)
    flagged = 0
    for _ in range(REPETITIONS):
        a, used = draw(pool, rng, evals.DEFAULT_TRIALS)
        b, _ = draw(pool, rng, evals.DEFAULT_TRIALS, skip=used)
        test = evals.paired_test({c: (a[c], b[c]) for c in pool}, resamples=2000)
        flagged += test.regression
    assert flagged / REPETITIONS <= 0.05


def test_ab_the_bundled_regression_is_flagged(pools):
    _, base, regressed = pools
    pool_a, pool_b = outcomes(base), outcomes(regressed)
    rng = random.Random(11)
    flagged = 0
    for _ in range(REPETITIONS):
        a, _ = draw(pool_a, rng, evals.DEFAULT_TRIALS)
        b, _ = draw(pool_b, rng, evals.DEFAULT_TRIALS)
        test = evals.paired_test({c: (a[c], b[c]) for c in pool_a}, resamples=2000)
        flagged += test.regression
    assert flagged / REPETITIONS >= 0.95


def test_a_stored_comparison_names_the_flips_and_opens_their_sessions(pools):
    db, base, regressed = pools
    with tracer.Store(db, read_only=True) as store:
        c = evals.compare_stored(store, base.run.run_id, regressed.run.run_id[:8])
        assert c.verdict == "regression" and c.test.effect < 0 and c.test.ci_high < 0
        assert {"refund-under-threshold", "refund-kettle", "refund-over-threshold"} <= set(c.flips_to_fail)
        worse = next(x for x in c.cases if x.case_id == "refund-kettle")
        assert any("without asking the customer to confirm" in r for r in worse.reasons)
        # Each failure links to its traced session.
        assert store.get_session(worse.failing_sessions[0]).agent == "support"
        assert set(c.flaky) >= {"lost-package"}
