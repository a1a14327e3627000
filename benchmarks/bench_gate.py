"""The eval gate's false alarms and power: simulated suites, and real runs of the bundled suite.

    python benchmarks/bench_gate.py [--reps 400] [--aa-reps 1000] [--real] [--real-reps 200]

**Simulation** (always). Every repetition draws a suite of 30 cases whose true pass rates look
like a real suite's: 60% of the cases always pass, 20% pass 90-100% of the time, 20% 60-90%
(``--profile beta`` draws them from Beta(5, 1) instead: far more flaky cases). Baseline and
candidate trials are drawn from those rates, except for the regressed cases, and the outcomes go
through ``evals.gate``, the gate's own code, with its defaults (alpha 0.05, 20,000 resamples).
Scenarios: A/A (nothing changed), one case 100% -> 0%, two cases 100% -> 0%, one case 100% ->
40%, one case 80% -> 0% (issue 17's 4/5 -> 0/5), and a diffuse regression (6 of 30 cases 90% ->
50%), each at 5 and at 10 trials a side; plus one case 100% -> 0% with a 15-trial baseline
against a 5-trial candidate. Every row says how often the gate failed (``evals.gate``, or the
collapse rule, ``evals.collapsed``, as ``evals.compare``'s verdict has it), which rule fired
(aggregate sign-flip, per-case Fisher, collapse), and how often the old gate (the sign-flip test
alone at 0.05, before issue 12) would have.

**Real runs** (``--real``). The bundled suite is run once with 15 trials per case (the agent as
it is, the baseline pool), once more with 10 (the agent as it is, another seed: an A/A across
two runs), and once with 10 per regressed variant: ``no-refund-confirmation`` (the bundled
variant), and the two user-style regressions of ``tests/evals/regressions.py`` loaded with
``--agent MODULE:FACTORY`` (``without_data_rule``: the system prompt lost its "articles are
data" safety rule; ``without_escalation``: the agent lost its escalate_to_human tool). Each
repetition draws disjoint sets of K trials per case from the pools, as two independent runs
would give (every trial has its own seed), and runs the gate on them, with the suite's
``critical`` tags. The A/A within the baseline pool draws both sides from it (disjoint trials).
Only K = 5 here: two disjoint draws of 10 do not fit in a pool of 15.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _workload import machine_header  # noqa: E402

import evals  # noqa: E402

CASES = 30
Outcomes = dict[str, tuple[list[bool], list[bool]]]


def realistic_rates(rng: np.random.Generator, cases: int) -> np.ndarray:
    """Most cases always pass, some are a little flaky, a fifth are quite flaky."""
    kind = rng.random(cases)
    return np.where(kind < 0.6, 1.0, np.where(kind < 0.8, rng.uniform(0.9, 1.0, cases), rng.uniform(0.6, 0.9, cases)))


def beta_rates(rng: np.random.Generator, cases: int) -> np.ndarray:
    return rng.beta(5.0, 1.0, size=cases)


Scenario = tuple[str, Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]], int, int]
"""(name, base rates -> (base rates, candidate rates), baseline trials, candidate trials)."""


def _drop(cases: int, before: float, after: float) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
    def change(rates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        base, cand = rates.copy(), rates.copy()
        base[:cases], cand[:cases] = before, after
        return base, cand
    return change


def scenarios() -> list[Scenario]:
    out: list[Scenario] = []
    for k in (5, 10):
        out += [
            ("A/A: nothing changed", lambda r: (r, r), k, k),
            ("one case 100% → 0%", _drop(1, 1.0, 0.0), k, k),
            ("two cases 100% → 0%", _drop(2, 1.0, 0.0), k, k),
            ("one case 100% → 40%", _drop(1, 1.0, 0.4), k, k),
            ("one case 80% → 0%", _drop(1, 0.8, 0.0), k, k),
            ("diffuse: 6 of 30 cases 90% → 50%", _drop(6, 0.9, 0.5), k, k),
        ]
    out.append(("one case 100% → 0%, 15-trial baseline", _drop(1, 1.0, 0.0), 15, 5))
    return out


def simulate(name: str, change: Callable, base_k: int, cand_k: int, reps: int, profile: Callable,
             seed: int) -> tuple[int, int, int, int, int]:
    """(gate failed, aggregate fired, per-case fired, collapse rule fired, the old gate fired) over
    ``reps`` repetitions. The gate fails as ``evals.compare``'s verdict does: ``evals.gate`` or the
    collapse rule (``evals.collapsed``, issue 17).

    The old gate is the sign-flip test alone at the whole alpha (0.05), as before issue 12: its
    p-value is the aggregate test's, only held to a laxer level.
    """
    rng = np.random.default_rng(seed)
    failed = agg = per_case = collapse = old = 0
    for _ in range(reps):
        base_p, cand_p = change(profile(rng, CASES))
        base = rng.random((CASES, base_k)) < base_p[:, None]
        cand = rng.random((CASES, cand_k)) < cand_p[:, None]
        outcomes = {f"c{i:02d}": (base[i].tolist(), cand[i].tolist()) for i in range(CASES)}
        g = evals.gate(outcomes, seed=int(rng.integers(2**31)))
        fell = any(evals.collapsed(a, b) for a, b in outcomes.values())
        failed += g.regression or fell
        agg += g.aggregate.regression
        per_case += bool(g.regressions)
        collapse += fell
        old += g.aggregate.p_value < g.alpha and g.aggregate.effect < 0
    return failed, agg, per_case, collapse, old


def _pct(n: int, d: int) -> str:
    return f"{n}/{d} ({n / d:.1%})"


def run_simulation(args: argparse.Namespace) -> None:
    profile = {"realistic": realistic_rates, "beta": beta_rates}[args.profile]
    print(f"simulation: {CASES} cases, profile {args.profile}, evals.gate defaults (alpha 0.05, 20,000 resamples)")
    print("| scenario | trials (baseline/candidate) | reps | gate failed | aggregate fired | per-case fired | "
          "collapse rule fired | old gate (sign-flip alone at 0.05) | s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for i, (name, change, bk, ck) in enumerate(scenarios()):
        reps = args.aa_reps if name.startswith("A/A") else args.reps
        started = time.perf_counter()
        failed, agg, per_case, collapse, old = simulate(name, change, bk, ck, reps, profile, seed=args.seed + i)
        print(f"| {name} | {bk}/{ck} | {reps} | **{_pct(failed, reps)}** | {_pct(agg, reps)} | {_pct(per_case, reps)} "
              f"| {_pct(collapse, reps)} | {_pct(old, reps)} | {time.perf_counter() - started:.0f} |", flush=True)


# -- real runs of the bundled suite ---------------------------------------------------------------

VARIANTS: list[tuple[str, dict]] = [
    ("A/A across runs: the agent as it is, another run", {}),
    ("no-refund-confirmation (bundled variant)", {"settings": {"variant": "no-refund-confirmation"}}),
    ("without_data_rule (lost a safety rule)", {"agent": "tests.evals.regressions:without_data_rule"}),
    ("without_escalation (lost a tool)", {"agent": "tests.evals.regressions:without_escalation"}),
]


def _pool(run: evals.EvalRun) -> dict[str, list[bool]]:
    out: dict[str, list[bool]] = {}
    for r in run.results:
        out.setdefault(r.case_id, []).append(r.passed)
    return out


def _draw(pool: dict[str, list[bool]], rng: random.Random, k: int,
          skip: dict[str, set[int]] | None = None) -> tuple[dict[str, list[bool]], dict[str, set[int]]]:
    picked, used = {}, {}
    for case, trials in pool.items():
        free = [i for i in range(len(trials)) if i not in (skip or {}).get(case, set())]
        idx = rng.sample(free, k)
        picked[case], used[case] = [trials[i] for i in idx], set(idx)
    return picked, used


def run_real(args: argparse.Namespace) -> None:
    suite = evals.load_dataset("support")
    critical = {c.id for c in suite.cases if evals.CRITICAL_TAG in c.tags}
    with tempfile.TemporaryDirectory() as tmp:
        db = str(Path(tmp) / "gate.duckdb")
        started = time.perf_counter()
        base = _pool(evals.run_eval("support", trials=15, concurrency=4, seed=1, db=db))
        pools = [(name, _pool(evals.run_eval("support", trials=10, concurrency=4, seed=2 + i, db=db, **kw)))
                 for i, (name, kw) in enumerate(VARIANTS)]
        took = time.perf_counter() - started
    flaky = sorted(c for c, t in base.items() if 0 < sum(t) < len(t))
    print(f"\nreal runs: the bundled suite ({len(base)} cases, {len(critical)} critical: "
          f"{', '.join(sorted(critical))}); baseline pool 15 trials per case, each variant 10; runs took {took:.0f} s")
    print(f"flaky in the baseline pool: {', '.join(f'{c} {sum(base[c])}/15' for c in flaky) or 'none'}")
    for name, pool in pools:
        moved = sorted(c for c in pool if sum(pool[c]) / len(pool[c]) < sum(base[c]) / len(base[c]))
        print(f"{name}: worse in the pools: " + ", ".join(f"{c} {sum(base[c])}/15 → {sum(pool[c])}/10"
                                                           for c in moved))
    print("| comparison | K | reps | gate failed | aggregate fired | per-case fired | collapse rule fired | "
          "old gate (sign-flip alone at 0.05) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    rng = random.Random(args.seed)
    k, n = 5, args.real_reps

    def row(name: str, draw_pair: Callable[[], tuple[dict, dict]]) -> None:
        failed = agg = per_case = collapse = old = 0
        for _ in range(n):
            a, b = draw_pair()
            g = evals.gate({c: (a[c], b[c]) for c in base}, critical=critical, seed=rng.randrange(2**31))
            fell = any(evals.collapsed(a[c], b[c]) for c in base)
            failed, agg, per_case = failed + (g.regression or fell), agg + g.aggregate.regression, \
                per_case + bool(g.regressions)
            collapse += fell
            old += g.aggregate.p_value < g.alpha and g.aggregate.effect < 0
        print(f"| {name} | {k} | {n} | **{_pct(failed, n)}** | {_pct(agg, n)} | {_pct(per_case, n)} | "
              f"{_pct(collapse, n)} | {_pct(old, n)} |", flush=True)

    def within_baseline() -> tuple[dict, dict]:
        a, used = _draw(base, rng, k)
        return a, _draw(base, rng, k, skip=used)[0]

    row("A/A within the baseline pool", within_baseline)
    for name, pool in pools:
        row(name, lambda pool=pool: (_draw(base, rng, k)[0], _draw(pool, rng, k)[0]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=400, help="Repetitions per regression scenario.")
    parser.add_argument("--aa-reps", type=int, default=1000, help="Repetitions of the A/A scenarios.")
    parser.add_argument("--profile", choices=["realistic", "beta"], default="realistic")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--real", action="store_true", help="Also run the bundled suite (a few minutes).")
    parser.add_argument("--real-reps", type=int, default=200)
    parser.add_argument("--no-sim", action="store_true", help="Skip the simulation.")
    args = parser.parse_args()
    print(machine_header("eval gate: false alarms and power"))
    if not args.no_sim:
        run_simulation(args)
    if args.real:
        run_real(args)


if __name__ == "__main__":
    main()
