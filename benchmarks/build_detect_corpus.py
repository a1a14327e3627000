"""Records the labelled detector corpus: sessions of six agents unlike the reference one, with labels.

    python benchmarks/build_detect_corpus.py --db corpus.duckdb --labels corpus.labels.jsonl --seed 0 [--scale 1]

The agents, their scripted models and the session kinds are in ``corpus_agents.py``. Each route
(the ``flightrec.route`` attribute) plays its sessions one after another, so that a detector that
judges a session against its route's earlier sessions sees history: first a warm-up of negatives
(clean sessions and the route's natural hard negatives, in its proportions), then the labelled
phase, shuffled. New routes have only 3-6 sessions before their first positive (a cold-start
cost spike on the 4th session, or a loop); the drift route has 10 stable sessions, then 30 that
each cost 5% more than the one before. Routes play in parallel threads into one store.

The labels file has one JSON line per session: ``session_id``, ``key`` (agent/route/index, the same
in every build of a seed, unlike session ids), ``agent``, ``route``, ``kind``, ``phase`` and
``labels`` ({"loops", "cost", "steps"}: true, false, or null to leave the session out of that
family's score). The same seed gives the same labels and the same tool-call sequences.
"""

from __future__ import annotations

import argparse
import collections
import itertools
import json
import random
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _workload import progress, table  # noqa: E402
from corpus_agents import HARD_NEGATIVES, KINDS, Spec, run_session  # noqa: E402

import tracer  # noqa: E402

DRIFT_STEP = 1.05
"""Each drifting session is meant to cost this much more than the one before."""


@dataclass(frozen=True)
class Route:
    """One agent route's sessions: a warm-up of negatives, then a labelled mix."""

    agent: str
    route: str
    warmup: int
    mix: dict[str, int] = field(default_factory=dict)
    """Labelled phase: sessions of each kind, shuffled."""
    new: bool = False
    """A new route: counts do not scale, and the labelled phase opens with its first positive kind."""
    drift: int = 0
    """Sessions of a slow cost drift after the warm-up, in order, before the mix."""


ROUTES: tuple[Route, ...] = (
    Route("jobrunner", "export", 80, {"clean": 88, "poll_running": 12, "loop_volatile": 8, "model_switch": 6,
          "wander": 6}),
    Route("jobrunner", "training", 50, {"clean": 56, "poll_progress": 16, "poll_stuck": 8, "loop_cycle": 6,
          "loop_volatile": 4}),
    Route("jobrunner", "backfill", 60, {"clean": 44, "poll_running": 24, "poll_stuck": 6, "loop_cycle": 6}),
    Route("jobrunner", "reindex", 3, {"cold_start_spike": 1, "clean": 8, "loop_volatile": 1}, new=True),
    Route("crm_export", "contacts_export", 80, {"clean": 80, "many_pages": 12, "loop_same": 8, "loop_nudged": 8,
          "runaway_context": 8}),
    Route("crm_export", "overdue_invoices", 60, {"clean": 72, "many_pages": 6, "loop_cycle": 8, "loop_nudged": 6,
          "token_blowup": 6}),
    Route("crm_export", "activity_digest", 5, {"loop_same": 2, "clean": 19, "runaway_context": 2,
          "many_pages": 2}, new=True),
    Route("payments", "daily_reconcile", 80, {"clean": 76, "retry_then_ok": 20, "loop_same_error": 10,
          "token_blowup": 8}),
    Route("payments", "fx_payout", 60, {"clean": 58, "retry_then_ok": 14, "loop_nudged": 8, "loop_same_error": 6,
          "model_switch": 4}),
    Route("payments", "chargeback_review", 3, {"cold_start_spike": 1, "clean": 10, "retry_then_ok": 2,
          "loop_same_error": 1}, new=True),
    Route("parcels", "bulk_status", 80, {"clean": 72, "shared_answer": 24, "loop_volatile": 8, "loop_nudged": 8,
          "model_switch": 4, "wander": 4}),
    Route("parcels", "stock_check", 60, {"clean": 60, "loop_same": 8, "loop_nudged": 6, "wander": 4}),
    Route("parcels", "carrier_digest", 20, drift=30),
    Route("research", "market_brief", 60, {"clean": 62, "loop_paraphrase": 8, "runaway_context": 6}),
    Route("research", "due_diligence", 50, {"clean": 44, "costly_legit": 24, "loop_cycle": 6,
          "loop_paraphrase": 6}),
    Route("research", "literature_review", 50, {"clean": 56, "costly_legit": 10, "wander": 8,
          "loop_paraphrase": 6, "model_switch": 6}),
    Route("research", "board_pack", 0, {"expensive_route": 15}, new=True),
    Route("scheduler", "book_1on1", 80, {"clean": 84, "date_scan": 16, "loop_nudged": 10, "token_blowup": 4,
          "wander": 6}),
    Route("scheduler", "team_sync", 60, {"clean": 66, "loop_cycle": 6, "loop_same": 6, "wander": 6,
          "model_switch": 6}),
    Route("scheduler", "offsite_planning", 3, {"cold_start_spike": 1, "clean": 12}, new=True),
)

NATURAL = HARD_NEGATIVES | {"clean"}
"""Kinds that a route does on its own; the rest are what the detectors should catch."""


def plan(route: Route, seed: int, scale: float) -> list[tuple[str, Spec]]:
    """The route's sessions in the order they play, each with its phase (``warmup`` or ``labelled``)."""
    rng = random.Random(f"{seed}/plan/{route.agent}/{route.route}")

    def count(n: int) -> int:
        return n if route.new or n == 0 else max(1, round(n * scale))

    mix = {kind: count(n) for kind, n in route.mix.items()}
    natural = [k for k in mix if k in NATURAL] or ["clean"]
    warmup = rng.choices(natural, weights=[mix.get(k, 1) for k in natural], k=count(route.warmup))
    labelled = [kind for kind, n in mix.items() for _ in range(n)]
    rng.shuffle(labelled)
    if route.new:
        first = next((k for k in route.mix if k not in NATURAL), None)
        if first:
            labelled.remove(first)
            labelled.insert(0, first)
    kinds = [("warmup", k, 1.0) for k in warmup]
    kinds += [("labelled", "drift", DRIFT_STEP ** (i + 1)) for i in range(route.drift)]
    kinds += [("labelled", k, 1.0) for k in labelled]
    return [(phase, Spec(route.agent, route.route, kind, i, seed, drift))
            for i, (phase, kind, drift) in enumerate(kinds)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True, help="the store to create (must not exist)")
    parser.add_argument("--labels", required=True, help="the JSONL labels file to write")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies the sessions of established routes")
    parser.add_argument("--workers", type=int, default=4, help="routes recorded at once")
    args = parser.parse_args()
    if Path(args.db).exists():
        sys.exit(f"error: {args.db} exists; the corpus needs a store of its own. Remove it or pick another path.")

    plans = [plan(r, args.seed, args.scale) for r in ROUTES]
    total = sum(len(p) for p in plans)
    recorder = tracer.Recorder(args.db)
    counter = itertools.count(1)  # next() on it is atomic under the GIL: the threads share it
    started = time.perf_counter()

    def play(sessions: list[tuple[str, Spec]]) -> list[tuple[str, Spec, str]]:
        out = []
        for phase, spec in sessions:
            out.append((phase, spec, run_session(recorder, spec)))
            if (n := next(counter)) % 250 == 0:
                progress(f"{n}/{total} sessions")
        return out

    # The slowest routes (research: big contexts) first, so that no thread is left with one at the end.
    order = sorted(plans, key=lambda p: (p[0][1].agent != "research", -len(p)))
    try:
        with ThreadPoolExecutor(max_workers=args.workers, thread_name_prefix="corpus") as pool:
            played = [row for rows in pool.map(play, order) for row in rows]
    finally:
        recorder.shutdown()
    seconds = time.perf_counter() - started
    assert recorder.stats.dropped == 0, recorder.stats

    played.sort(key=lambda row: row[1].key)
    with open(args.labels, "w") as f:
        for phase, spec, session_id in played:
            labels = spec.labels()
            f.write(json.dumps({"session_id": session_id, "key": spec.key, "agent": spec.agent, "route": spec.route,
                                "kind": spec.kind, "phase": phase, "labels": {
                                    "loops": labels.loops, "cost": labels.cost, "steps": labels.steps}}) + "\n")

    agents = list(dict.fromkeys(r.agent for r in ROUTES))
    by_kind: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for _, spec, _ in played:
        by_kind[spec.kind][spec.agent] += 1
    print(f"**Corpus, seed {args.seed}, scale {args.scale}**: {len(played)} sessions, {len(ROUTES)} routes, "
          f"recorded in {seconds:.1f} s ({len(played) / seconds:.0f} sessions/s, {args.workers} threads)\n")
    print(table(["kind", *agents, "total"],
                [(k, *(by_kind[k][a] or "" for a in agents), sum(by_kind[k].values())) for k in KINDS if k in by_kind]
                + [("**all**", *(sum(c[a] for c in by_kind.values()) for a in agents), len(played))]))
    print()
    rows = []
    for fam in ("loops", "cost", "steps"):
        values = [getattr(spec.labels(), fam) for _, spec, _ in played]
        rows.append((fam, values.count(True), values.count(False), values.count(None)))
    positives = sum(1 for _, spec, _ in played if True in vars(spec.labels()).values())
    print(table(["family", "positive", "negative", "left out"], rows))
    print(f"\nsessions positive for some family: {positives} ({positives / len(played):.1%})")


if __name__ == "__main__":
    main()
