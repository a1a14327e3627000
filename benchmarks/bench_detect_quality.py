"""Detector quality on a labelled corpus from the simulated model: precision and recall per family.

    python benchmarks/bench_detect_quality.py [--seeds 20] [--warmup 25] [--workers 4] [--seed 0]

The corpus is recorded through the real pipeline (``tracer.Recorder`` + ``reference_agent.Agent``)
over every *clean* bundled scenario: a standard world (no outages, no planted articles) and no
default misbehaviour or faults. Two stores:

- **A (loop guard on, the agent's default).** First a warm-up of ``--warmup`` normal sessions per
  scenario, so that every agent + route has a baseline of its own (20 sessions);
  then the labelled phase: ``--seeds`` seeds × scenarios × 6 modes (normal, ``loop``, ``runaway``,
  ``wrong_tool``, ``hallucinate``, ``ignore_rule``), shuffled with a fixed seed.
- **B (loop guard off).** ``--seeds`` seeds × scenarios with ``misbehave=("loop",)`` and
  ``AgentConfig(loop_guard=False)``: the loop runs until ``max_tool_calls`` and the SQL loop
  detectors must find it themselves. B is a store of its own so that these expensive sessions do
  not skew A's cost baselines.

Then ``evals.detectors.detect(store)`` over each whole store with the default thresholds. A session
is predicted positive for a family when an alert of that family has an observation for it
(``alert_observations`` joined to ``alerts``). Labels: loops-positive iff ``misbehave=("loop",)``,
cost-positive iff ``misbehave=("runaway",)``, ``tools.hallucinated``-positive iff
``misbehave=("hallucinate",)``; runaway sessions are left out of the loops score
(their 17 searches cycle through 11 queries, repeating six with the same results, a real
repetition that the label does not mean) and counted apart; the warm-up and labelled normal sessions are the
clean normal sessions, on which no alert of any family should be raised.

The guard-off loops row takes its negatives from store A's labelled non-loop sessions, counted
with the SQL loop detectors only (``loop.guard`` excluded): switching the guard off changes a
session only when the guard fires, and a guard firing on a non-loop session already shows as a
false positive in the guard-on row.

Targets: precision and recall ≥ 0.95 for loops and for cost; zero alerts on clean normal sessions.
"""

from __future__ import annotations

import argparse
import collections
import random
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _workload import machine_header, progress, table  # noqa: E402

import tracer  # noqa: E402
from evals.detectors import DETECTORS, FAMILIES, FAMILIES_OF, detect  # noqa: E402
from reference_agent import SCENARIOS, Agent, AgentConfig, Scenario, World  # noqa: E402

MODES: tuple[str, ...] = ("normal", "loop", "runaway", "wrong_tool", "hallucinate", "ignore_rule")
LOOP_OFF = "loop, guard off"


@dataclass(frozen=True)
class Planned:
    phase: str
    """``warmup`` or ``labelled``."""
    scenario: Scenario
    seed: int
    mode: str
    guard: bool = True


@dataclass
class Played:
    item: Planned
    session_id: str
    status: str
    tool_calls: int
    tokens: int


def clean_scenarios() -> list[Scenario]:
    return [s for s in SCENARIOS if not s.world.articles and not s.world.outages and not s.misbehave and not s.faults]


def record(db: str, world_path: str, items: list[Planned], workers: int, what: str) -> list[Played]:
    """Records ``items`` in order, ``workers`` at a time, into ``db``."""
    recorder = tracer.Recorder(db)
    agents: dict[bool, Agent] = {}
    out: list[Played] = []
    started = time.perf_counter()
    with World(world_path) as world:
        for guard in {i.guard for i in items}:
            agents[guard] = Agent(world, recorder, config=AgentConfig(loop_guard=guard))

        def play(item: Planned) -> Played:
            misbehave = () if item.mode == "normal" else ("loop",) if item.mode == LOOP_OFF else (item.mode,)
            o = agents[item.guard].run(item.scenario, seed=item.seed, misbehave=misbehave, faults=())
            return Played(item, o.session_id, o.status, o.tool_calls, o.tokens)

        try:
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dq") as pool:
                for n, played in enumerate(pool.map(play, items), 1):
                    out.append(played)
                    if n % 250 == 0:
                        progress(f"{what}: {n}/{len(items)} sessions")
        finally:
            recorder.shutdown()
    stats = recorder.stats
    assert stats.dropped == 0, stats
    progress(f"{what}: {len(items)} sessions in {time.perf_counter() - started:.1f} s")
    return out


def observations(store: tracer.Store) -> dict[str, list[tuple[str, str, str]]]:
    """Each observed session's (detector, family, title) list."""
    rows = store.sql("""SELECT o.observation, a.detector, a.family, a.title
                        FROM alert_observations o JOIN alerts a USING (fingerprint)""")
    out: dict[str, list[tuple[str, str, str]]] = collections.defaultdict(list)
    for obs, det, fam, title in rows:
        out[obs].append((det, fam, title))
    return out


def prf(tp: int, fp: int, fn: int) -> tuple[str, str]:
    p = tp / (tp + fp) if tp + fp else float("nan")
    r = tp / (tp + fn) if tp + fn else float("nan")
    return f"{p:.3f}", f"{r:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20, help="labelled seeds per scenario and mode")
    parser.add_argument("--warmup", type=int, default=25, help="normal warm-up sessions per scenario")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0, help="shuffles the labelled phase")
    parser.add_argument("--keep", help="record into this directory instead of a temporary one")
    parser.add_argument("--examples", type=int, default=6, help="misses listed per kind")
    args = parser.parse_args()
    print(machine_header("detectors: precision and recall on a labelled corpus"))

    scenarios = clean_scenarios()
    warmup = [Planned("warmup", s, seed, "normal") for seed in range(args.warmup) for s in scenarios]
    labelled = [Planned("labelled", s, 1_000 + seed, m) for seed in range(args.seeds) for s in scenarios
                for m in MODES]
    random.Random(args.seed).shuffle(labelled)
    guard_off = [Planned("labelled", s, 1_000 + seed, LOOP_OFF, guard=False) for seed in range(args.seeds)
                 for s in scenarios]

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.keep or tmp)
        root.mkdir(parents=True, exist_ok=True)
        db_a, db_b = str(root / "guard_on.duckdb"), str(root / "guard_off.duckdb")
        # The warm-up must end before the labelled phase starts: the baselines trail by end time.
        played_a = record(db_a, str(root / "guard_on.world.sqlite"), warmup, args.workers, "warm-up")
        played_a += record(db_a, str(root / "guard_on.world.sqlite"), labelled, args.workers, "labelled")
        played_b = record(db_b, str(root / "guard_off.world.sqlite"), guard_off, args.workers, "guard off")
        t_rec = time.perf_counter() - t0

        with tracer.Store(db_a) as store:
            res_a = detect(store)
            obs_a = observations(store)
            n_obs_a = store.sql("SELECT count(*) FROM alert_observations")[0][0]
            routes = dict(store.sql("""SELECT session_id, json_extract_string(attributes, '$."flightrec.scenario"')
                                        FROM spans WHERE parent_span_id IS NULL"""))
        with tracer.Store(db_b) as store:
            res_b = detect(store)
            obs_b = observations(store)
    t_all = time.perf_counter() - t0

    known_a = {p.session_id for p in played_a}
    unmatched = [o for o in obs_a if o not in known_a]  # window-level observations (latency drift)
    fam_a = {p.session_id: {f for _, f, _ in obs_a.get(p.session_id, [])} for p in played_a}
    det_a = {p.session_id: {d for d, _, _ in obs_a.get(p.session_id, [])} for p in played_a}
    det_b = {p.session_id: {d for d, _, _ in obs_b.get(p.session_id, [])} for p in played_b}
    lab = [p for p in played_a if p.item.phase == "labelled"]
    normal = [p for p in played_a if p.item.mode == "normal"]

    print(f"scenarios ({len(scenarios)}, clean: standard world, no default misbehaviour or faults): "
          f"{', '.join(s.name for s in scenarios)}")
    print(f"store A (loop guard on): {len(warmup)} warm-up normal sessions ({args.warmup} per scenario), then "
          f"{len(labelled)} labelled sessions ({args.seeds} seeds × {len(scenarios)} scenarios × {len(MODES)} modes, "
          f"shuffled with seed {args.seed}); store B (loop guard off): {len(guard_off)} loop sessions")
    print(f"recording {t_rec:.1f} s; detect: A {res_a.sessions} sessions in {res_a.seconds:.2f} s "
          f"({res_a.findings} findings, {len(res_a.alerts)} alerts, {n_obs_a} observations), "
          f"B {res_b.sessions} sessions in {res_b.seconds:.2f} s; total {t_all:.1f} s")
    print()

    # -- what the sessions did -------------------------------------------------------------------
    statuses: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for p in [*played_a, *played_b]:
        statuses[("warm-up " if p.item.phase == "warmup" else "") + p.item.mode][p.status] += 1
    print("**Sessions by mode and final status**\n")
    print(table(["mode", "sessions", "statuses", "median tool calls", "median tokens"],
                [(m, sum(c.values()), ", ".join(f"{k} {v}" for k, v in c.most_common()),
                  _median([p.tool_calls for p in [*played_a, *played_b] if _mode(p) == m]),
                  _median([p.tokens for p in [*played_a, *played_b] if _mode(p) == m]))
                 for m, c in statuses.items()]))
    print()

    # -- precision and recall ----------------------------------------------------------------------
    rows: list[tuple[Any, ...]] = []
    misses: dict[str, list[Played]] = collections.defaultdict(list)

    def score(name: str, positives: list[Played], negatives: list[Played], flagged: Any) -> None:
        tp = sum(1 for p in positives if flagged(p))
        fn = len(positives) - tp
        fp = sum(1 for p in negatives if flagged(p))
        precision, recall = prf(tp, fp, fn)
        rows.append((name, len(positives), len(negatives), tp, fp, fn, precision, recall))
        misses[f"{name}: missed"] += [p for p in positives if not flagged(p)]
        misses[f"{name}: false alarm"] += [p for p in negatives if flagged(p)]

    loops_pos = [p for p in lab if p.item.mode == "loop"]
    # The runaway policy cycles through 11 knowledge-base queries, so its 17 searches repeat six of
    # them with the same results: a real repetition (loop.calls reports it), which the runaway
    # label does not mean. Those sessions are left out of the loops score and counted apart.
    loops_neg = [p for p in lab if p.item.mode not in ("loop", "runaway")]
    score("loops (guard on)", loops_pos, loops_neg, lambda p: "loops" in fam_a[p.session_id])
    sql_loops = {d for d in DETECTORS if FAMILIES_OF[d] == "loops" and d != "loop.guard"}

    def flagged_off(p: Played) -> bool:
        dets = det_b[p.session_id] if p.item.mode == LOOP_OFF else det_a[p.session_id]
        return bool(dets & sql_loops) or (p.item.mode == LOOP_OFF and "loop.guard" in dets)

    score("loops (guard off, SQL detectors)", played_b, loops_neg, flagged_off)
    cost_pos = [p for p in lab if p.item.mode == "runaway"]
    cost_neg = [p for p in lab if p.item.mode != "runaway"]
    score("cost", cost_pos, cost_neg, lambda p: "cost" in fam_a[p.session_id])
    # The loop misbehaviour repeats the first tool call of a turn: a session that calls no tool
    # (privacy_probe refuses at once) cannot loop. These rows drop such sessions from the positives.
    rows.append(("*loop sessions that called no tool (dropped below)*",
                 sum(1 for p in loops_pos if not p.tool_calls), "", "", "", "", "", ""))
    score("loops (guard on), loops that made a tool call", [p for p in loops_pos if p.tool_calls], loops_neg,
          lambda p: "loops" in fam_a[p.session_id])
    score("loops (guard off), loops that made a tool call", [p for p in played_b if p.tool_calls], loops_neg,
          flagged_off)
    # The hallucinate misbehaviour invents an argument in its first call: an order id (the tool answers
    # not_found, which is no made-up call: a customer's mistyped id gets the same answer) or an
    # out-of-range limit or a malformed e-mail address (invalid_arguments, which is one).
    score("tools.hallucinated (hallucinate mode)", [p for p in lab if p.item.mode == "hallucinate"],
          [p for p in lab if p.item.mode != "hallucinate"], lambda p: "tools.hallucinated" in det_a[p.session_id])
    runaway = [p for p in lab if p.item.mode == "runaway"]
    rows.append(("*runaway sessions (left out of loops) flagged as loops*",
                 f"{sum(1 for p in runaway if 'loops' in fam_a[p.session_id])} / {len(runaway)}", "", "", "", "", "",
                 ""))
    print("**Precision and recall per session (labelled phase)**\n")
    print(table(["family", "positives", "negatives", "TP", "FP", "FN", "precision", "recall"], rows))
    print()

    # -- sessions flagged per family and mode ------------------------------------------------------
    groups: dict[str, list[Played]] = {"normal (warm-up)": [p for p in played_a if p.item.phase == "warmup"]}
    for m in MODES:
        groups[m] = [p for p in lab if p.item.mode == m]
    groups[LOOP_OFF + " (B)"] = played_b

    def dets_of(p: Played) -> set[str]:
        return det_b[p.session_id] if p.item.mode == LOOP_OFF else det_a[p.session_id]

    print("**Sessions flagged, by family and mode** (sessions with at least one alert of the family)\n")
    print(table(["family", *groups], [
        (f, *(f"{sum(1 for p in g if any(FAMILIES_OF[d] == f for d in dets_of(p)))} / {len(g)}"
              for g in groups.values())) for f in FAMILIES]))
    print()
    print("**Sessions flagged, by detector and mode** (detectors that fired at least once)\n")
    fired = [d for d in DETECTORS if any(d in dets_of(p) for g in groups.values() for p in g)]
    print(table(["detector", *groups], [
        (d, *(str(sum(1 for p in g if d in dets_of(p))) for g in groups.values())) for d in fired]))
    print()

    # -- clean normal sessions ---------------------------------------------------------------------
    on_normal = [(p, x) for p in normal for x in obs_a.get(p.session_id, [])]
    by_det = collections.Counter(x[0] for _, x in on_normal)
    print(f"**Alerts on clean normal sessions**: {len(on_normal)} observations on "
          f"{len({p.session_id for p, _ in on_normal})} of {len(normal)} sessions "
          f"({len([p for p in normal if p.item.phase == 'warmup'])} warm-up + "
          f"{len([p for p in normal if p.item.phase == 'labelled'])} labelled)"
          + (f": {', '.join(f'{d} {n}' for d, n in by_det.most_common())}" if by_det else "")
          + f". Observations not tied to a session (window-level): {len(unmatched)}.")
    print()

    # -- misses, with evidence ---------------------------------------------------------------------
    shown = False
    for kind, ps in misses.items():
        if not ps:
            continue
        if not shown:
            print("**Misses and false alarms** (up to "
                  f"{args.examples} per kind; scenario counts over all of them)\n")
            shown = True
        print(f"- {kind}: {len(ps)} sessions; by scenario: "
              + ", ".join(f"{k} {v}" for k, v in collections.Counter(p.item.scenario.name for p in ps).most_common()))
        for p in ps[:args.examples]:
            found = (obs_b if p.item.mode == LOOP_OFF else obs_a).get(p.session_id, [])
            what = "; ".join(f"{d}: {t}" for d, _, t in found) or "no alert"
            print(f"  - `{p.session_id}` {p.item.scenario.name} seed {p.item.seed} mode {p.item.mode}: "
                  f"status {p.status}, {p.tool_calls} tool calls, {p.tokens:,} tokens; {what}")
    if shown:
        print()
    for p in played_a:  # the route of every session is its scenario, as the detectors group it
        assert routes.get(p.session_id) == p.item.scenario.name, p.session_id
    slowest = sorted(res_a.by_detector.items(), key=lambda kv: -kv[1])[:3]
    print(f"detect on store A: {res_a.seconds:.2f} s; slowest detectors: "
          + ", ".join(f"{k} {v:.3f} s" for k, v in slowest))


def _mode(p: Played) -> str:
    return ("warm-up " if p.item.phase == "warmup" else "") + p.item.mode


def _median(xs: list[int]) -> str:
    xs = sorted(xs)
    return f"{xs[len(xs) // 2]:,}" if xs else "-"


if __name__ == "__main__":
    main()
