"""Ingest+write cost of the retry check (issue 15 item 6; RESULTS.md section 20).

`record` once, then `run <tree> <db> <group>` per variant, each in its own process."""
import dataclasses
import os
import pickle
import random
import sys
import time

MODE = sys.argv[1]
OUT = os.environ.get("BENCH_OUT", "/tmp/rt")


def _old_session(attrs: dict, k: int) -> dict:
    sid = attrs.get("gen_ai.conversation.id")
    return {} if sid is None else {"gen_ai.conversation.id": f"old{k}-{sid}"}


if MODE == "record":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from benchmarks._workload import Agent, collecting_recorder
    from tracer._ingest import from_readable
    rec, collect = collecting_recorder(os.path.join(OUT, "unused.duckdb"))
    agent = Agent(rec)
    rng = random.Random(7)
    i = 0
    while len(collect.spans) < 50_000:
        agent.run(rng.randint(4, 16), 7_000_003 + i)
        i += 1
    rec.provider.shutdown()
    records = [from_readable(s) for s in collect.spans[:50_000]]
    # older history with other ids: the same spans a day earlier under other trace ids
    old = [dataclasses.replace(r, trace_id="f" + r.trace_id[1:], start_ns=r.start_ns - 86_400 * 10**9 * k,
                               end_ns=r.end_ns - 86_400 * 10**9 * k,
                               attributes={**r.attributes, **_old_session(r.attributes, k)})
           for k in (1, 2, 3, 4) for r in records]
    pickle.dump((records, old), open(f"{OUT}/records.pkl", "wb"))
    print(i, "sessions", len(records), "spans")
    sys.exit()

tree, db, group = sys.argv[2], sys.argv[3], int(sys.argv[4])
sys.path.insert(0, tree)
from tracer._ingest import Ingestor  # noqa: E402  (from the tree under test)
from tracer._store import Store  # noqa: E402

records, old = pickle.load(open(f"{OUT}/records.pkl", "rb"))
if MODE == "preload":
    with Store(db) as store:
        store.defer_checkpoints("128MB")
        ing = Ingestor()
        for i in range(0, len(old), group):
            store.write(ing.build(old[i:i + group]))
    sys.exit()
with Store(db) as store:
    store.defer_checkpoints("128MB")
    ing = Ingestor()
    t = time.perf_counter()
    for i in range(0, len(records), group):
        store.write(ing.build(records[i:i + group]))
    dt = time.perf_counter() - t
    n = store.sql("SELECT count(*) FROM spans")[0][0]
print(f"{dt:.3f} {n}")
