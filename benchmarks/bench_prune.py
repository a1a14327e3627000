"""Retention on a demo-sized store: what prune and delete remove, how long one step holds the
writer, whether replay still rebuilds every kept call exactly, and the file's size before and
after (checkpoint, then compaction).

    python benchmarks/bench_prune.py                      # records `flightrec demo --no-serve` first
    python benchmarks/bench_prune.py --db demo.duckdb     # works on copies of that store

Each round copies the store, then: expires the content of the older half of its sessions
(``prune_step(content_only=True)`` until done), expires the oldest quarter whole, deletes one
recent session, checkpoints, verifies every call (``verify_requests``) and the store's references
(``tracer.reference_problems``), and compacts the file. The cutoffs are
quantiles of the sessions' end times, since a demo's sessions are all minutes old. Times are
process CPU (user+sys); a step's time is what the collector's writer waits for at most.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _workload import machine_header, progress, table  # noqa: E402

import tracer  # noqa: E402
from tracer._retention import PRUNE_BATCH, compact  # noqa: E402


def size(path: str) -> int:
    """The file and its write-ahead log, in bytes."""
    wal = f"{path}.wal"
    return os.path.getsize(path) + (os.path.getsize(wal) if os.path.exists(wal) else 0)


def prune_all(store: tracer.Store, before_ns: int, *, content_only: bool, batch: int) -> tuple[tracer.PruneResult,
                                                                                               list[float]]:
    """Steps until done; the result and each step's CPU milliseconds."""
    total, steps = tracer.PruneResult(content_only=content_only), []
    while True:
        cpu = time.process_time()
        step = store.prune_step(before_ns, content_only=content_only, batch=batch)
        steps.append((time.process_time() - cpu) * 1e3)
        total = total.plus(step)
        if not step.more:
            return total, steps


def in_file(path: str, marker: bytes) -> bool:
    return marker in Path(path).read_bytes() or (os.path.exists(f"{path}.wal") and
                                                 marker in Path(f"{path}.wal").read_bytes())


def one_round(base: str, work: str, batch: int) -> dict[str, object]:
    shutil.copy(base, work)
    Path(f"{work}.wal").unlink(missing_ok=True)
    out: dict[str, object] = {"size_start": size(work)}
    with tracer.Store(work) as store:
        half, quarter = store.sql("SELECT quantile_disc(end_ns, 0.5), quantile_disc(end_ns, 0.25) FROM sessions")[0]
        out["sessions"] = store.count_sessions()
        out["calls"] = store.sql("SELECT count(*) FROM llm_calls")[0][0]
        # The newest session with a tool call: its own response ids are in no other session.
        victim, marker = store.sql("""SELECT session_id, response_id FROM llm_calls WHERE session_id IN
                                       (SELECT session_id FROM tool_calls) ORDER BY end_ns DESC LIMIT 1""")[0]
        store.checkpoint()
        out["marker_before"] = in_file(work, marker.encode())
        out["content"], out["content_steps"] = prune_all(store, half, content_only=True, batch=batch)
        cpu = time.process_time()
        store.checkpoint()
        out["checkpoint_ms"] = (time.process_time() - cpu) * 1e3
        out["size_content"] = size(work)
        out["whole"], out["whole_steps"] = prune_all(store, quarter, content_only=False, batch=batch)
        store.checkpoint()
        out["size_whole"] = size(work)
        cpu = time.process_time()
        out["delete"] = store.delete_session(victim)
        out["delete_ms"] = (time.process_time() - cpu) * 1e3
        store.checkpoint()
        out["size_delete"] = size(work)
        out["marker_after_delete"] = in_file(work, marker.encode())
        out["verify"] = store.verify_requests()
        out["problems"] = tracer.reference_problems(store)
    cpu = time.process_time()
    before, after = compact(work)
    out["compact_ms"] = (time.process_time() - cpu) * 1e3
    out["size_compact"] = after
    out["marker_after_compact"] = in_file(work, marker.encode())
    with tracer.Store(work) as store:
        again = store.verify_requests()
        verify = out["verify"]
        assert isinstance(verify, tracer.VerifyResult)
        out["verify_same_after_compact"] = (again.total, again.exact, len(again.pruned)) == \
            (verify.total, verify.exact, len(verify.pruned))
        out["problems_after_compact"] = tracer.reference_problems(store)
    return out


def compacted_unpruned(base: str, work: str) -> int:
    """The store's size once compacted with nothing removed: what compaction alone gives back."""
    shutil.copy(base, work)
    Path(f"{work}.wal").unlink(missing_ok=True)
    return compact(work)[1]


def one_transaction(base: str, work: str) -> float:
    """CPU ms of the same content expiry as one transaction: what an unbounded prune would hold."""
    shutil.copy(base, work)
    Path(f"{work}.wal").unlink(missing_ok=True)
    with tracer.Store(work) as store:
        half = store.sql("SELECT quantile_disc(end_ns, 0.5) FROM sessions")[0][0]
        _, steps = prune_all(store, half, content_only=True, batch=10**9)
    return steps[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", help="A store to work on copies of (default: record a demo store first).")
    parser.add_argument("--sessions", type=int, default=200, help="Demo sessions to record without --db.")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=PRUNE_BATCH, help="Sessions a prune step takes.")
    args = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix="bench_prune_")
    base = args.db
    if base is None:
        base = os.path.join(tmp, "demo.duckdb")
        progress(f"recording the demo ({args.sessions} sessions) into {base}")
        flightrec = Path(sys.executable).with_name("flightrec")
        subprocess.run([str(flightrec), "demo", "--no-serve", "--sessions", str(args.sessions), "--db", base],
                       check=True, stdout=subprocess.DEVNULL)
    work = os.path.join(tmp, "work.duckdb")
    progress("warm-up round (the first removals in a process pay for loading code; not counted)")
    one_round(base, work, args.batch)
    rounds, unbounded = [], []
    for r in range(args.rounds):
        progress(f"round {r + 1}/{args.rounds}")
        rounds.append(one_round(base, work, args.batch))
        unbounded.append(one_transaction(base, work))
    print(machine_header("Retention on a demo store (benchmarks/bench_prune.py)"))
    first = rounds[0]
    verify = first["verify"]
    assert isinstance(verify, tracer.VerifyResult)
    print(f"Store: {first['sessions']} sessions, {first['calls']} LLM calls, {first['size_start'] / 1e6:.2f} MB. "
          f"Prune steps of at most {args.batch} sessions.\n")
    mb = [("start", "size_start"), ("content of the older half pruned, checkpoint", "size_content"),
          ("oldest quarter pruned whole, checkpoint", "size_whole"), ("one session deleted, checkpoint",
                                                                       "size_delete"),
          ("compacted (COPY FROM DATABASE)", "size_compact")]
    print(table(["file + WAL", "MB (median)"], [(label, f"{statistics.median(r[k] for r in rounds) / 1e6:.2f}")
                                               for label, k in mb]
                + [("the start, compacted with nothing removed", f"{compacted_unpruned(base, work) / 1e6:.2f}")]))
    print()
    rows = []
    for label, key in (("content of the older half", "content"), ("oldest quarter whole", "whole")):
        res = first[key]
        steps = [max(r[f"{key}_steps"]) for r in rounds]
        total = [sum(r[f"{key}_steps"]) for r in rounds]
        rows.append((label, res.sessions, res.llm_calls, res.tool_calls, res.chain_nodes, res.content,
                     len(first[f"{key}_steps"]), f"{statistics.median(total):.0f}", f"{statistics.median(steps):.0f}"))
    res = first["delete"]
    rows.append(("one session deleted", res.sessions, res.llm_calls, res.tool_calls, res.chain_nodes, res.content, 1,
                 f"{statistics.median(r['delete_ms'] for r in rounds):.0f}",
                 f"{statistics.median(r['delete_ms'] for r in rounds):.0f}"))
    print(table(["removal", "sessions", "LLM calls", "tool calls", "chain nodes", "content bodies", "steps",
                 "CPU ms in all", "CPU ms, longest step"], rows))
    print()
    print(f"- the content expiry as one transaction: {statistics.median(unbounded):.0f} CPU ms (median)")
    print(f"- the checkpoint after the content expiry: {statistics.median(r['checkpoint_ms'] for r in rounds):.0f} "
          "CPU ms (median)")
    print(f"- compaction: {statistics.median(r['compact_ms'] for r in rounds):.0f} CPU ms in this process "
          "(DuckDB's own threads are counted too)")
    print(f"- verify after: {verify.exact}/{verify.total} rebuilt exactly, {len(verify.pruned)} pruned, "
          f"{len(verify.failures)} failures, {len(verify.not_rebuildable)} not rebuildable; the same after "
          f"compaction: {all(r['verify_same_after_compact'] for r in rounds)}")
    print(f"- reference problems (dangling or unused rows): {first['problems'] or 'none'}; after compaction: "
          f"{first['problems_after_compact'] or 'none'}")
    print(f"- the deleted session's response id in the file's bytes: before {first['marker_before']}, after the "
          f"delete and a checkpoint {first['marker_after_delete']}, after compaction {first['marker_after_compact']}")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
