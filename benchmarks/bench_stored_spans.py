"""The stored-span check of a commit when its batch holds a span that started long before the others.

    python benchmarks/bench_stored_spans.py [--stored 1000000,5000000] [--rate 10000] [--ages 0,60,600,1800]
                                            [--batch 2048] [--reps 9]

Each commit first asks which of its spans the store has already (``Store._stored_spans``: a retry
repeats them), reading only the stored spans that started when the batch's did. A session's root
span starts when the session began and is sent when it ends, so a batch of new spans often holds one
that is minutes old. This times the check alone on a store of ``--stored`` spans that arrived at
``--rate`` a second, for a batch of ``--batch`` spans of the last moment and one ``--age`` seconds
old, two ways in turn:

- ``one range``: from the batch's earliest start to its latest (flightrec before §71);
- ``ranges``: the batch's start times split at their gaps (``_start_ranges``).

Prints the median milliseconds of each.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pyarrow as pa  # noqa: E402
from _workload import machine_header  # noqa: E402

import tracer._store as S  # noqa: E402
from tracer._ingest import Batch  # noqa: E402
from tracer._store import Store  # noqa: E402

_T0 = 1_750_000_000 * 10**9


def _fill(store: Store, n: int, rate: int) -> int:
    """``n`` stored spans, one every ``1/rate`` s (with jitter, as spans of many sessions interleave);
    returns the time just after the last."""
    step = 10**9 // rate
    store._con.execute(f"""
        INSERT INTO spans (trace_id, span_id, name, kind, start_ns, end_ns, status_code, attributes)
        SELECT md5(i::VARCHAR), left(md5((-i)::VARCHAR), 16), 'chat', 'CLIENT',
               {_T0} + i * {step} + hash(i) % {10 * step}, {_T0} + i * {step} + {100 * step}, 'UNSET', '{{}}'
        FROM range({n}) t(i)""")
    store._con.execute("CHECKPOINT")
    return _T0 + n * step


def _batch(now: int, size: int, age_s: int, rng: random.Random) -> tuple[Batch, pa.Table]:
    starts = [now + k * 100_000 for k in range(size - 1)] + [now - age_s * 10**9]
    ids = [(f"{rng.getrandbits(128):032x}", f"{rng.getrandbits(64):016x}") for _ in starts]
    table = pa.table({"trace_id": [t for t, _ in ids], "span_id": [s for _, s in ids],
                      "start_ns": pa.array(starts, pa.int64())})
    return Batch(spans=list(ids)), table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stored", default="1000000,5000000")
    parser.add_argument("--rate", type=int, default=10_000, help="spans a second the store took")
    parser.add_argument("--ages", default="0,60,600,1800", help="seconds before the batch its oldest span started")
    parser.add_argument("--batch", type=int, default=2048)
    parser.add_argument("--reps", type=int, default=9)
    args = parser.parse_args()
    print(machine_header("stored-span check"))
    rng = random.Random(1)
    ways = {"one range": lambda starts: [(min(starts), max(starts))], "ranges": S._start_ranges}
    print(f"| stored spans | oldest span's age | {' | '.join(f'{w}: ms' for w in ways)} |")
    print(f"|---|---|{'---|' * len(ways)}")
    with tempfile.TemporaryDirectory() as tmp:
        for n in (int(x) for x in args.stored.split(",")):
            with Store(Path(tmp) / f"s{n}.duckdb") as store:
                now = _fill(store, n, args.rate)
                for age in (int(x) for x in args.ages.split(",")):
                    times: dict[str, list[float]] = {w: [] for w in ways}
                    for rep in range(args.reps + 2):
                        for way, ranges in ways.items():  # in turn, so that the machine's drift falls on each alike
                            S._start_ranges = ranges
                            batch, table = _batch(now, args.batch, age, rng)
                            began = time.perf_counter()
                            assert store._stored_spans(batch, table) is None  # new spans: nothing to drop
                            if rep >= 2:  # the first two warm the caches
                                times[way].append((time.perf_counter() - began) * 1000)
                    cells = " | ".join(f"{statistics.median(times[w]):.1f}" for w in ways)
                    print(f"| {n:,} | {age:,} s | {cells} |", flush=True)


if __name__ == "__main__":
    main()
