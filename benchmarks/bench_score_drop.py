"""score.drop on a synthetic corpus of online scores: recall on injected drops, by size, and false
alarms per route-day.

    python benchmarks/bench_score_drop.py [--routes 60] [--days 21] [--seed 0] [--sweep] [--db PATH]

Each route (agent ``a0``..``a2``, route ``rN``) is scored by one scorer for ``--days`` days, at a
rate drawn from 10 to 400 scored sessions a day (a 10% sample of a busy route, every session of
a quiet one). Half the scorers are pass/fail (a pass rate drawn from 0.6 to 0.98), half graded
(a judge: a mean from 0.5 to 0.95 and a per-session spread from 0.05 to 0.25, clipped to 0..1).
The routes are not stationary, as production is not: each day's mean wobbles around the route's
(a normal draw of sd 0.03: the day's mix of customers and topics), and 5% of scores are skipped
(NULL: a judge over its budget). Then:

- **drops**: half the routes, from a random time from day 7 to 4 days before the end (at least
  40 scored sessions after it), score lower for good, by 0.05, 0.1,
  0.15, 0.2, 0.3 or 0.4 (taken off the pass rate, or the judge's mean);
- **version changes**: a quarter of the other routes switch their scorer to a new version that
  scores 0.3 lower (a stricter rubric) on a random day: not a drop, and alerting on it is a false alarm.

``evals.detectors.detect`` then runs over the whole store (batch: every scored session is judged,
as in ``flightrec detect``; online runs judge no more often). A drop is found when its route has
an observation at or after the drop's start; the delay is in scored sessions after the start. A
false alarm is a route-day, before a drop or on a route without one, with an observation.
``--sweep`` repeats detection over a grid of the windows (a long window equal to the short one is
no long window), ``min_drop`` and ``z``.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _workload import machine_header, progress, table  # noqa: E402

import tracer  # noqa: E402
from evals.detectors import DetectConfig, ScoreLimits, detect  # noqa: E402

T0 = 1_760_000_000 * 10**9
DAY = 86_400 * 10**9
SIZES = (0.05, 0.1, 0.15, 0.2, 0.3, 0.4)


@dataclass
class Route:
    agent: str
    route: str
    binary: bool
    mean: float
    spread: float
    per_day: int
    drop: float = 0.0
    drop_ns: int | None = None
    version_ns: int | None = None
    sessions: int = 0


def corpus(store: tracer.Store, rng: random.Random, n_routes: int, days: int) -> list[Route]:
    routes = []
    for i in range(n_routes):
        binary = i % 2 == 0
        r = Route(f"a{i % 3}", f"r{i}", binary, rng.uniform(0.6, 0.98) if binary else rng.uniform(0.5, 0.95),
                  rng.uniform(0.05, 0.25), round(10 ** rng.uniform(1, 2.6)))
        if i % 4 in (0, 1):  # half the routes drop, pass/fail and graded alike
            r.drop, r.drop_ns = SIZES[(i // 4) % len(SIZES)], T0 + int(rng.uniform(7, days - 4) * DAY)
        elif i % 8 == 2:
            r.version_ns = T0 + int(rng.uniform(5, days - 1) * DAY)
        routes.append(r)
    ids, agents, names, ends, scorers, versions, values, passed = [], [], [], [], [], [], [], []
    for r in routes:
        for day in range(days):
            day_mean = r.mean + rng.gauss(0, 0.03)
            for end in sorted(T0 + day * DAY + rng.randrange(DAY) for _ in range(r.per_day)):
                mean = day_mean - (r.drop if r.drop_ns is not None and end >= r.drop_ns else 0.0)
                new_version = r.version_ns is not None and end >= r.version_ns
                mean -= 0.3 if new_version else 0.0
                if r.binary:
                    value = 1.0 if rng.random() < mean else 0.0
                else:
                    value = min(1.0, max(0.0, rng.gauss(mean, r.spread)))
                ids.append(f"{r.route}-{len(ids):07d}")
                agents.append(r.agent)
                names.append(r.route)
                ends.append(end)
                scorers.append("resolved" if r.binary else "judge")
                versions.append("v2" if new_version else "v1")
                skipped = rng.random() < 0.05
                values.append(None if skipped else value)
                passed.append(None if skipped else value >= 0.7)
                r.sessions += 1
    store.sql("""INSERT INTO sessions (session_id, agent, route, start_ns, end_ns, ended, status, turns, llm_calls,
                                       llm_errors, tool_calls, tool_errors, input_tokens, output_tokens,
                                       cache_read_tokens, cache_write_tokens, cost_usd, unpriced_calls)
                 SELECT unnest(?), unnest(?), unnest(?), unnest(?) - 60 * 10^9, unnest(?), true, 'ok', 1, 1, 0, 0, 0,
                        100, 10, 0, 0, 0.001, 0""", [ids, agents, names, ends, ends])
    # The rows Store.record_scores writes, in one statement.
    store.sql("INSERT INTO session_scores SELECT unnest(?), unnest(?), unnest(?), unnest(?), unnest(?), 1.0, '', ?, "
              "NULL, 'sample'", [ids, scorers, versions, values, passed, T0])
    return routes


def judge(store: tracer.Store, routes: list[Route], days: int, config: DetectConfig) -> dict[str, object]:
    store.sql("DELETE FROM alert_observations")
    store.sql("DELETE FROM alerts")
    t0 = time.perf_counter()
    detect(store, config=config, detectors=["score.drop"])
    seconds = time.perf_counter() - t0
    seen: dict[str, list[int]] = {}
    for route, end in store.sql("""SELECT a.route, s.end_ns FROM alert_observations o JOIN alerts a USING (fingerprint)
                                   JOIN sessions s ON s.session_id = o.observation ORDER BY s.end_ns"""):
        seen.setdefault(route, []).append(end)
    found: dict[float, list[int]] = {size: [] for size in SIZES}
    delays: dict[float, list[int]] = {size: [] for size in SIZES}
    false_days = route_days = 0
    for r in routes:
        ends = seen.get(r.route, [])
        clean_until = r.drop_ns or T0 + days * DAY
        route_days += (clean_until - T0) / DAY
        false_days += len({(e - T0) // DAY for e in ends if e < clean_until})
        if r.drop_ns is not None:
            after = [e for e in ends if e >= r.drop_ns]
            found[r.drop].append(bool(after))
            if after:
                delays[r.drop].append(store.sql(
                    "SELECT count(*) FROM session_scores c JOIN sessions s USING (session_id) "
                    "WHERE s.route = ? AND c.value IS NOT NULL AND s.end_ns >= ? AND s.end_ns <= ?",
                    [r.route, r.drop_ns, after[0]])[0][0])
    return {"found": found, "delays": delays, "false_days": false_days, "route_days": route_days, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--routes", type=int, default=60)
    parser.add_argument("--days", type=int, default=21)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sweep", action="store_true", help="also try a grid of min_drop and z")
    parser.add_argument("--db", metavar="PATH", help="write the store here and keep it (for bench_detect_memory.py)")
    args = parser.parse_args()
    if args.db and Path(args.db).exists():
        raise SystemExit(f"--db {args.db}: it exists; give a new path, or remove it first.")
    print(machine_header("score.drop on synthetic online scores"))
    with tempfile.TemporaryDirectory() as tmp, tracer.Store(args.db or Path(tmp) / "scores.duckdb") as store:
        progress(f"writing {args.routes} routes × {args.days} days (seed {args.seed})")
        routes = corpus(store, random.Random(args.seed), args.routes, args.days)
        scored = sum(r.sessions for r in routes)
        print(f"\n{len(routes)} routes, {args.days} days, {scored:,} scored sessions "
              f"({min(r.per_day for r in routes)} to {max(r.per_day for r in routes)} a day per route); "
              f"{sum(r.drop_ns is not None for r in routes)} drops, "
              f"{sum(r.version_ns is not None for r in routes)} scorer version changes\n")
        defaults = ScoreLimits()
        grid = [(defaults.window, defaults.long_window, defaults.min_drop, defaults.z)]
        if args.sweep:
            grid += [(w, lw, d, z) for w, lw in ((30, 30), (50, 50), (30, 120), (30, 200), (50, 200))
                     for d in (0.1, 0.15) for z in (3.5, 4.0, 4.5) if (w, lw, d, z) != grid[0]]
        rows = []
        for window, long_window, min_drop, z in grid:
            progress(f"detecting with windows {window} and {long_window}, min_drop {min_drop}, z {z}")
            out = judge(store, routes, args.days, DetectConfig(scores=defaults.model_copy(
                update={"window": window, "long_window": long_window, "min_drop": min_drop, "z": z})))
            found, delays = out["found"], out["delays"]
            recall = [f"{sum(found[s])}/{len(found[s])}" for s in SIZES]
            median_delay = [sorted(delays[s])[len(delays[s]) // 2] if delays[s] else "–" for s in SIZES]
            rows.append((f"{window}, {long_window}", min_drop, z, *recall, " / ".join(map(str, median_delay)),
                         f"{out['false_days']} / {out['route_days']:.0f} = {out['false_days'] / out['route_days']:.4f}",
                         f"{out['seconds']:.2f}"))
        print(table(["windows", "min_drop", "z", *(f"recall −{s}" for s in SIZES),
                     "median delay, scored sessions (by size)", "false-alarm route-days", "detect s"], rows))


if __name__ == "__main__":
    main()
