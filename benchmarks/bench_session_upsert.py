"""The sessions upsert of a commit as the store grows, with session ids in time order or spread.

    python benchmarks/bench_session_upsert.py [--stored 10000,200000,1000000] [--batch 100,200,500]
                                              [--filter-ids 50,256] [--reps 12]

Each commit adds its sessions' counts into the stored rows and inserts the new ones
(``Store._upsert_sessions``: an ``UPDATE … FROM`` the batch, then an ``INSERT``). This times that
alone, in a transaction rolled back each time, on a store of ``--stored`` sessions, for batches of
``--batch`` sessions, half of them stored already:

- ``ordered``: ids that grow with time (UUIDv7, as flightrec's own conversations); the stored half
  are the newest.
- ``spread``: the stored half drawn from the whole table (random conversation ids, sessions keyed by
  their trace id, or an old long-running session in the batch).

``--filter-ids`` are values of ``_SESSION_FILTER_IDS``, the most ids the UPDATE passes to its scan of
``sessions`` as a filter (50 is DuckDB's own default). Prints the median milliseconds of each.
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
from tracer._store import Store  # noqa: E402


def _fill(store: Store, n: int) -> list[str]:
    """``n`` stored sessions, ids in time order: the first eight characters grow, as UUIDv7's do
    (DuckDB's string statistics keep the first eight bytes)."""
    store._con.execute(f"""
        INSERT INTO sessions (session_id, start_ns, end_ns, ended, status, turns, llm_calls, llm_errors, tool_calls,
                              tool_errors, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, cost_usd,
                              unpriced_calls, origin)
        SELECT printf('%08x-%s', i, md5(i::VARCHAR)), i * 1000, i * 1000 + 5, false, 'running', 1, 1, 0, 1, 0, 10, 10,
               0, 0, 0.01, 0, 'production'
        FROM range({n}) t(i)""")
    store._con.execute("CHECKPOINT")
    return [r[0] for r in store._con.execute("SELECT session_id FROM sessions ORDER BY rowid").fetchall()]


def _batch(store: Store, ids: list[str], k: int, spread: bool, rng: random.Random) -> pa.Table:
    n = len(ids)
    stored = rng.sample(ids, k // 2) if spread else ids[-(k // 2):]
    new = [f"{rng.randrange(n) if spread else n + i:08x}-new-{rng.random()}" for i in range(k - k // 2)]
    schema = store._con.sql("SELECT * FROM sessions LIMIT 0").to_arrow_table().schema
    values = {"start_ns": 1, "end_ns": 2, "ended": False, "status": "running", "cost_usd": 0.1, "origin": "production",
              **{c: 1 for c in S._SESSION_SUMS}}
    return pa.table({c: pa.array(stored + new if c == "session_id" else [values.get(c)] * k,
                                 type=schema.field(c).type) for c in S._SESSION_COLUMNS})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stored", default="10000,200000,1000000")
    parser.add_argument("--batch", default="100,200,500")
    parser.add_argument("--filter-ids", default="50,256")
    parser.add_argument("--reps", type=int, default=12)
    args = parser.parse_args()
    print(machine_header("sessions upsert"))
    rng = random.Random(1)
    filters = [int(f) for f in args.filter_ids.split(",")]
    print(f"| stored | batch | ids | {' | '.join(f'filter {f}: ms' for f in filters)} |")
    print(f"|---|---|---|{'---|' * len(filters)}")
    with tempfile.TemporaryDirectory() as tmp:
        for n in (int(x) for x in args.stored.split(",")):
            with Store(Path(tmp) / f"s{n}.duckdb") as store:
                ids = _fill(store, n)
                for k in (int(x) for x in args.batch.split(",")):
                    for spread in (False, True):
                        times: dict[int, list[float]] = {f: [] for f in filters}
                        for rep in range(args.reps + 2):
                            for f in filters:  # in turn, so that the machine's drift falls on each alike
                                S._SESSION_FILTER_IDS = f
                                batch = _batch(store, ids, k, spread, rng)
                                store._con.execute("BEGIN")
                                began = time.perf_counter()
                                store._upsert_sessions(batch)
                                took = time.perf_counter() - began
                                store._con.execute("ROLLBACK")
                                if rep >= 2:  # the first two warm the caches
                                    times[f].append(took * 1000)
                        cells = " | ".join(f"{statistics.median(times[f]):.1f}" for f in filters)
                        print(f"| {n:,} | {k} | {'spread' if spread else 'ordered'} | {cells} |", flush=True)


if __name__ == "__main__":
    main()
