"""The stored-span check of a commit when its batch holds a span that started long before the others.

    python benchmarks/bench_stored_spans.py [--stored 1000000,5000000] [--rate 10000] [--ages 0,60,600,1800]
                                            [--long-every 30] [--long-s 1800] [--batch 2048] [--reps 9]

Each commit first asks which of its spans the store has already (``Store._stored_spans``: a retry
repeats them), reading only the stored spans of the batch's times. A session's root span starts when
the session began and is sent when it ends, so a batch of new spans often holds one that is minutes
old. This times the check alone on a store of ``--stored`` spans that arrived at ``--rate`` a second
in the order they ended, every ``--long-every``-th a root of up to ``--long-s`` seconds, for a batch
of ``--batch`` spans that ended in the last moment, one of them a root that started ``--age`` seconds
before, three ways in turn:

- ``start, one range``: the stored spans that started between the batch's earliest start and its
  latest (flightrec before §71);
- ``start, split``: the same, the batch's start times split at their gaps (64578b2);
- ``end, split``: by the batch's end times, split at their gaps (``Store._stored_spans`` now).

Prints the median milliseconds of each.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pyarrow as pa  # noqa: E402
from _workload import machine_header  # noqa: E402

import tracer._store as S  # noqa: E402
from tracer._ingest import Batch  # noqa: E402
from tracer._store import Store  # noqa: E402

_T0 = 1_750_000_000 * 10**9


def _fill(store: Store, n: int, rate: int, long_every: int, long_s: int) -> int:
    """``n`` stored spans, in the order they ended (as they arrive), one every ``1/rate`` s; most last
    milliseconds, and every ``long_every``-th (a session's root) up to ``long_s``. Returns the time
    just after the last."""
    step = 10**9 // rate
    store._con.execute(f"""
        INSERT INTO spans (trace_id, span_id, name, kind, start_ns, end_ns, status_code, attributes)
        SELECT md5(i::VARCHAR), left(md5((-i)::VARCHAR), 16), 'chat', 'CLIENT',
               end_ns - CASE WHEN i % {long_every} = 0 THEN hash(i) % {long_s * 10**9} ELSE hash(i) % 10000000 END,
               end_ns, 'UNSET', '{{}}'
        FROM (SELECT i, {_T0} + i * {step} AS end_ns FROM range({n}) t(i))""")
    store._con.execute("CHECKPOINT")
    return _T0 + n * step


def _batch(now: int, size: int, age_s: int, rng: random.Random) -> tuple[Batch, pa.Table]:
    """New spans that ended in the last moment, the last of them a root that started ``age_s`` ago."""
    ends = [now + k * 100_000 for k in range(size)]
    starts = [end - 5_000_000 for end in ends[:-1]] + [ends[-1] - age_s * 10**9]
    ids = [(f"{rng.getrandbits(128):032x}", f"{rng.getrandbits(64):016x}") for _ in ends]
    table = pa.table({"trace_id": [t for t, _ in ids], "span_id": [s for _, s in ids],
                      "start_ns": pa.array(starts, pa.int64()), "end_ns": pa.array(ends, pa.int64())})
    return Batch(spans=list(ids)), table


def _by_start(ranges: Callable[[list[int]], list[tuple[int, int]]]) -> Callable[[Store, Batch, pa.Table], Any]:
    """The check as it was, on the spans' start times (before §71: one range; 64578b2: split)."""
    def check(store: Store, batch: Batch, table: pa.Table) -> Any:
        spans = ranges(table.column("start_ns").to_pylist())
        where = " OR ".join(f"start_ns BETWEEN {lo} AND {hi}" for lo, hi in spans)
        return S._over(store._con, table, f"""SELECT b.trace_id, b.span_id FROM _batch b SEMI JOIN
            (SELECT trace_id, span_id FROM spans WHERE {where}) s USING (trace_id, span_id)""").fetchall()
    return check


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stored", default="1000000,5000000")
    parser.add_argument("--rate", type=int, default=10_000, help="spans a second the store took")
    parser.add_argument("--ages", default="0,60,600,1800", help="seconds before the batch its oldest span started")
    parser.add_argument("--long-every", type=int, default=30, help="one stored span in this many is a session's root")
    parser.add_argument("--long-s", type=int, default=1800, help="the longest a stored root lasted, seconds")
    parser.add_argument("--batch", type=int, default=2048)
    parser.add_argument("--reps", type=int, default=9)
    args = parser.parse_args()
    print(machine_header("stored-span check"))
    rng = random.Random(1)
    ways: dict[str, Callable[[Store, Batch, pa.Table], Any]] = {
        "start, one range": _by_start(lambda starts: [(min(starts), max(starts))]),
        "start, split": _by_start(S._time_ranges), "end, split": Store._stored_spans}
    print(f"| stored spans | oldest span's age | {' | '.join(f'{w}: ms' for w in ways)} |")
    print(f"|---|---|{'---|' * len(ways)}")
    with tempfile.TemporaryDirectory() as tmp:
        for n in (int(x) for x in args.stored.split(",")):
            with Store(Path(tmp) / f"s{n}.duckdb") as store:
                now = _fill(store, n, args.rate, args.long_every, args.long_s)
                for age in (int(x) for x in args.ages.split(",")):
                    times: dict[str, list[float]] = {w: [] for w in ways}
                    for rep in range(args.reps + 2):
                        for way, check in ways.items():  # in turn, so that the machine's drift falls on each alike
                            batch, table = _batch(now, args.batch, age, rng)
                            began = time.perf_counter()
                            assert not check(store, batch, table)  # new spans: nothing stored already
                            if rep >= 2:  # the first two warm the caches
                                times[way].append((time.perf_counter() - began) * 1000)
                    cells = " | ".join(f"{statistics.median(times[w]):.1f}" for w in ways)
                    print(f"| {n:,} | {age:,} s | {cells} |", flush=True)


if __name__ == "__main__":
    main()
