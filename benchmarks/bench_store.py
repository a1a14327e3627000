"""Store benchmarks: exporter write throughput, bytes on disk per session, query latency at 1M spans.

    python benchmarks/bench_store.py throughput   # exporter spans/s vs a raw bulk insert of the same rows
    python benchmarks/bench_store.py storage      # bytes per session for 10-, 50- and 100-turn sessions
    python benchmarks/bench_store.py queries      # traces list / traces show on a >=1M-span store

Every subcommand prints the machine, the date, the command and Markdown tables on stdout
(progress goes to stderr). The sessions are produced by the real pipeline: a ``tracer.Recorder``
with an instrumented anthropic client on a ``tracer.testing.FakeModel`` (see ``_workload.py``).
Generated files go to ``benchmarks/out/`` (git-ignored).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _workload import (  # noqa: E402
    Agent,
    RequestChars,
    chunks,
    collecting_recorder,
    machine_header,
    new_tag,
    progress,
    retag,
    table,
)

import tracer  # noqa: E402
import tracer._export  # noqa: E402
from tracer import _attributes as A  # noqa: E402
from tracer._ingest import _SESSION_SUMS, Batch, Ingestor, from_readable  # noqa: E402
from tracer._store import _COLUMNS, _SESSION_COLUMNS, Store, _marks  # noqa: E402

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
EXPORT_BATCH = getattr(tracer._export, "_MAX_BATCH", 4_096)  # the exporter's own batch limit


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs)


def fmt_int(n: float) -> str:
    return f"{n:,.0f}"


def fmt_bytes(n: float) -> str:
    for unit, div in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(n) >= div:
            return f"{n / div:,.1f} {unit}"
    return f"{n:,.0f} B"


def uuid7(ms: int, rng: random.Random) -> str:
    rand = rng.getrandbits(74)
    value = (ms << 80) | (0x7 << 76) | ((rand >> 62) & 0xFFF) << 64 | (0b10 << 62) | (rand & ((1 << 62) - 1))
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


# -- recording base sessions ---------------------------------------------------------------------


def record_base_sessions(n: int, min_turns: int, max_turns: int, seed: int, tmp: str) -> list[dict[str, Any]]:
    """Records ``n`` sessions through the real capture pipeline; returns their finished spans."""
    rec, collect = collecting_recorder(os.path.join(tmp, "unused.duckdb"))
    agent = Agent(rec)
    rng = random.Random(seed)
    sessions = []
    for i in range(n):
        turns = rng.randint(min_turns, max_turns)
        start = len(collect.spans)
        sid, tag = agent.run(turns, seed * 1_000_003 + i)
        spans = collect.spans[start:]
        assert all((s.attributes or {}).get(A.CONVERSATION_ID) == sid for s in spans)
        sessions.append({"id": sid, "tag": tag, "turns": turns, "spans": spans})
        if (i + 1) % 50 == 0:
            progress(f"recorded {i + 1}/{n} sessions ({len(collect.spans):,} spans)")
    rec.provider.shutdown()
    return sessions


def replicate(base: list[dict[str, Any]], copies: int, seed: int, concurrency: int = 16,
              time_step_ns: int = 0, time_offset_ns: int = 0) -> list[Any]:
    """``copies`` replays of every base session, each with its own session id, trace id and content
    tag; spans of ``concurrency`` sessions at a time are interleaved, as concurrent agents would."""
    rng = random.Random(seed)
    replayed: list[list[Any]] = []
    for c in range(copies):
        for b in base:
            shift = time_offset_ns + c * time_step_ns
            start_ms = (b["spans"][0].start_time + shift) // 1_000_000
            replayed.append(retag(b["spans"], uuid7(start_ms, rng), b["tag"], new_tag(rng), rng.getrandbits(128),
                                  shift))
    out: list[Any] = []
    for group in chunks(replayed, concurrency):
        longest = max(len(g) for g in group)
        for i in range(longest):
            out.extend(g[i] for g in group if i < len(g))
    return out


def span_mix(spans: Sequence[Any]) -> list[tuple[str, str]]:
    kinds: Counter[str] = Counter()
    body_chars = []
    for s in spans:
        op = (s.attributes or {}).get(A.OPERATION) or s.name
        kinds[op] += 1
        body = (s.attributes or {}).get(A.REQUEST_BODY)
        if body is not None:
            body_chars.append(len(body))
    sessions = kinds["invoke_agent"]
    return [
        ("sessions", fmt_int(sessions)),
        ("spans", fmt_int(len(spans))),
        ("spans per session", f"{len(spans) / max(sessions, 1):.1f}"),
        ("invoke_agent / flightrec.turn / chat / execute_tool spans",
         f"{kinds['invoke_agent']:,} / {kinds['flightrec.turn']:,} / {kinds['chat']:,} / {kinds['execute_tool']:,}"),
        ("request body per chat span: median / mean / max",
         f"{fmt_bytes(median(body_chars))} / {fmt_bytes(statistics.fmean(body_chars))} / {fmt_bytes(max(body_chars))}"),
        ("request bodies in total", fmt_bytes(sum(body_chars))),
    ]


def profile_table(fn: Any, top: int = 15) -> str:
    """Runs ``fn`` under cProfile; the functions with the most own time, as a Markdown table."""
    import cProfile
    import pstats

    prof = cProfile.Profile()
    prof.enable()
    fn()
    prof.disable()
    st = pstats.Stats(prof)
    total = st.total_tt  # type: ignore[attr-defined]
    rows = []
    for (file, line, name), (_cc, ncalls, tt, ct, _callers) in sorted(
            st.stats.items(), key=lambda kv: kv[1][2], reverse=True)[:top]:  # type: ignore[attr-defined]
        where = f"{Path(file).parent.name}/{Path(file).name}:{line}" if file != "~" else "(built-in)"
        rows.append((f"`{name}`", where, fmt_int(ncalls), f"{tt:.2f}", f"{tt / total:.0%}", f"{ct:.2f}"))
    return (f"cProfile, {total:.2f} s in total (the profiler inflates Python-level call costs):\n\n"
            + table(["function", "where", "calls", "own s", "own share", "cumulative s"], rows))


# -- 2. throughput -------------------------------------------------------------------------------


def run_exporter(spans: Sequence[Any], path: str) -> dict[str, float]:
    """The real exporter: on_end for every span, then force_flush; the store is opened beforehand."""
    proc = tracer.StoreSpanProcessor(lambda: Store(path), max_queue=len(spans) + 1)
    deadline = time.monotonic() + 30
    while proc._store is None and time.monotonic() < deadline:  # the worker opens it lazily
        time.sleep(0.005)
    assert proc._store is not None, proc._store_error
    t0 = time.perf_counter()
    for s in spans:
        proc.on_end(s)
    t_enq = time.perf_counter()
    ok = proc.force_flush(600_000)
    t1 = time.perf_counter()
    stats = proc.stats
    proc.shutdown()
    assert ok and stats.written == len(spans) and stats.dropped == 0, stats
    return {"total": t1 - t0, "enqueue": t_enq - t0}


def run_direct(spans: Sequence[Any], path: str) -> dict[str, float]:
    """from_readable + Ingestor.build + Store.write in the exporter's batch size, without the queue."""
    store = Store(path)
    ing = Ingestor()
    t_conv = t_build = t_write = 0.0
    t0 = time.perf_counter()
    for chunk in chunks(spans, EXPORT_BATCH):
        a = time.perf_counter()
        recs = [from_readable(s) for s in chunk]
        b = time.perf_counter()
        batch = ing.build(recs)
        c = time.perf_counter()
        store.write(batch)
        d = time.perf_counter()
        t_conv += b - a
        t_build += c - b
        t_write += d - c
    total = time.perf_counter() - t0
    store.close()
    return {"total": total, "from_readable": t_conv, "build": t_build, "write": t_write}


def session_rows(batch: Batch) -> list[tuple[Any, ...]]:
    return [
        (d.session_id, d.trace_id, d.agent, d.start_ns, d.end_ns, d.ended, d.status if d.ended else "running",
         d.status_reason, d.content_mode, *(d.sums[c] for c in _SESSION_SUMS), d.cost_usd, *_marks(d.marks))
        for d in batch.sessions.values()
    ]


def arrow_tables(batch: Batch, sessions: list[tuple[Any, ...]]) -> dict[str, pa.Table]:
    def tbl(cols: Sequence[str], rows: list[tuple[Any, ...]]) -> pa.Table:
        return pa.Table.from_arrays([pa.array(list(c)) for c in zip(*rows)], names=list(cols))

    out = {name: tbl(_COLUMNS[name], getattr(batch, name)) for name in ("spans", "llm_calls", "tool_calls", "turns")}
    out["content"] = pa.table({"hash": list(batch.content), "kind": [k for k, _ in batch.content.values()],
                               "body": [b for _, b in batch.content.values()]})
    chain = getattr(batch, "chain", None)
    if chain is not None:
        out["message_chain"] = pa.table({"node": list(chain), "prev": [p for p, _, _ in chain.values()],
                                         "message": [m for _, m, _ in chain.values()],
                                         "session_id": [s for _, _, s in chain.values()]})
    out["sessions"] = tbl(_SESSION_COLUMNS, sessions)
    return out


def run_raw(batch: Batch, sessions: list[tuple[Any, ...]], path: str,
            prebuilt: dict[str, pa.Table] | None = None) -> dict[str, float]:
    """The same final rows, bulk-inserted in one transaction (Python rows -> Arrow -> INSERT)."""
    Store(path).close()  # the same schema, made by the migrations
    con = duckdb.connect(path)
    t0 = time.perf_counter()
    tables = prebuilt if prebuilt is not None else arrow_tables(batch, sessions)
    t1 = time.perf_counter()
    con.execute("BEGIN")
    for name, t in tables.items():
        con.register("_raw", t)
        con.execute(f"INSERT INTO {name} SELECT * FROM _raw")
        con.unregister("_raw")
    con.execute("COMMIT")
    t2 = time.perf_counter()
    con.close()
    return {"total": t2 - t0, "to_arrow": t1 - t0, "insert": t2 - t1}


def cmd_throughput(args: argparse.Namespace) -> None:
    print(machine_header("Exporter write throughput (benchmarks/bench_store.py throughput)"))
    OUT.mkdir(exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="tp-", dir=OUT)
    try:
        progress(f"recording {args.base_sessions} base sessions of {args.min_turns}-{args.max_turns} turns")
        base = record_base_sessions(args.base_sessions, args.min_turns, args.max_turns, args.seed, tmp)
        per_copy = sum(len(b["spans"]) for b in base)
        copies = max(1, -(-args.spans // per_copy))
        progress(f"replicating x{copies} with new session ids, trace ids and content tags")
        spans = replicate(base, copies, args.seed + 1)
        del base
        n = len(spans)
        progress(f"{n:,} spans; building the final rows once for the raw baseline")
        full = Ingestor().build([from_readable(s) for s in spans])
        sess = session_rows(full)
        prebuilt = arrow_tables(full, sess)
        rows_per_table = {k: t.num_rows for k, t in prebuilt.items()}
        if not args.no_gc_freeze:
            # The prepared spans and rows are the benchmark's, not the exporter's: keep them out of
            # the cyclic GC, or every gen-2 collection during the timed runs walks ~100k spans.
            gc.collect()
            gc.freeze()

        results: dict[str, list[dict[str, float]]] = defaultdict(list)
        for r in range(args.rounds):
            order = ["exporter", "direct", "raw", "raw_insert"]
            if r % 2:
                order.reverse()  # interleaved, alternating order
            for what in order:
                path = os.path.join(tmp, f"{what}-{r}.duckdb")
                gc.collect()
                if what == "exporter":
                    res = run_exporter(spans, path)
                elif what == "direct":
                    res = run_direct(spans, path)
                elif what == "raw":
                    res = run_raw(full, sess, path)
                else:
                    res = run_raw(full, sess, path, prebuilt)
                results[what].append(res)
                for f in (path, path + ".wal"):
                    if os.path.exists(f):
                        os.remove(f)
                progress(f"round {r + 1}/{args.rounds} {what}: {n / res['total']:,.0f} spans/s")

        raw_rate = n / median([x["total"] for x in results["raw"]])
        print(table(["workload", "value"], span_mix(spans)))
        print()
        print("Rows written per run: " + ", ".join(f"{k} {v:,}" for k, v in rows_per_table.items()) + ".")
        print()
        print(f"The exporter is made with `max_queue={n + 1:,}` so that enqueueing all spans at once drops none "
              "(default 50,000); its throughput is the rate at which the worker drains that backlog. ")
        print()
        print("The prepared spans are " + ("left in" if args.no_gc_freeze else "frozen out of (`gc.freeze()`)")
              + " the cyclic GC during the timed runs; each run writes a fresh DuckDB file; the four paths run "
              "interleaved, alternating order, in every round.")
        print()
        labels = {
            "exporter": "exporter: `StoreSpanProcessor.on_end` x N, then `force_flush` (queue + worker thread)",
            "direct": "ingest + write without the queue: `from_readable` + `Ingestor.build` + `Store.write`, "
                      f"batches of {EXPORT_BATCH:,}",
            "raw": "raw bulk insert of the same final rows: Python rows -> Arrow -> INSERT, one transaction",
            "raw_insert": "raw bulk insert from prebuilt Arrow tables (INSERT only)",
        }
        rows = []
        for what in ("exporter", "direct", "raw", "raw_insert"):
            totals = [x["total"] for x in results[what]]
            rate = n / median(totals)
            rows.append((labels[what], f"{median(totals):.2f}", fmt_int(rate), f"{rate / raw_rate:.3f}",
                         ", ".join(fmt_int(n / t) for t in totals)))
        print(table(["path", "median s", "spans/s (median)", "fraction of raw", "spans/s per round"], rows))
        print()
        d = results["direct"]
        split = {k: median([x[k] for x in d]) for k in ("from_readable", "build", "write")}
        tot = sum(split.values())
        print(table(["direct path step", "median s", "share", "spans/s of this step alone"],
                    [(k, f"{v:.2f}", f"{v / tot:.0%}", fmt_int(n / v)) for k, v in split.items()]))
        print()
        enq = median([x["enqueue"] for x in results["exporter"]])
        print(f"Enqueueing (the agent-side `on_end` of {n:,} spans) took {enq:.2f} s median "
              f"({enq / n * 1e6:.1f} µs per span); the rest of the exporter time is the worker draining.")
        exp_rate = n / median([x["total"] for x in results["exporter"]])
        print()
        print(f"**Target ≥ 20,000 spans/s: {'met' if exp_rate >= 20_000 else 'MISSED'}** "
              f"({fmt_int(exp_rate)} spans/s, {exp_rate / raw_rate:.1%} of the raw bulk insert).")
        if args.profile:
            progress("profiling the direct path")
            path = os.path.join(tmp, "profile.duckdb")
            print()
            print("Where the time goes (direct path: from_readable + Ingestor.build + Store.write):")
            print()
            print(profile_table(lambda: run_direct(spans, path)))
        print(f"\nLoad average at end: {' / '.join(f'{x:.2f}' for x in os.getloadavg())}")
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


# -- 3. storage ---------------------------------------------------------------------------------


def store_tables(con: duckdb.DuckDBPyConnection) -> list[str]:
    return [t for (t,) in con.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_name <> 'schema_migrations' "
        "ORDER BY table_name").fetchall()]


def logical_bytes(path: str) -> dict[str, int]:
    """Bytes of the stored values, uncompressed: string bytes, 8 per BIGINT/DOUBLE, 4 per INTEGER, 1 per BOOLEAN."""
    con = duckdb.connect(path, read_only=True)
    out = {}
    for tname in store_tables(con):
        cols = con.execute(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = ? "
            "ORDER BY ordinal_position",
            [tname]).fetchall()
        parts = []
        for name, typ in cols:
            q = f'"{name}"'
            if typ.endswith("[]"):
                parts.append(f"coalesce(sum(list_sum(list_transform({q}, lambda x: strlen(x::VARCHAR)))), 0)")
            elif typ in ("VARCHAR", "JSON"):
                parts.append(f"coalesce(sum(strlen({q}::VARCHAR)), 0)")
            elif typ in ("BIGINT", "DOUBLE", "TIMESTAMP"):
                parts.append(f"count({q}) * 8")
            elif typ == "INTEGER":
                parts.append(f"count({q}) * 4")
            elif typ == "BOOLEAN":
                parts.append(f"count({q})")
            else:
                raise ValueError(typ)
        out[tname] = int(con.execute(f"SELECT {' + '.join(parts)} FROM {tname}").fetchone()[0])
    con.close()
    return out


def record_file(path: str, sessions: int, turns: int, seed: int) -> dict[str, Any]:
    for f in (path, path + ".wal"):
        if os.path.exists(f):
            os.remove(f)
    rec = tracer.Recorder(db=path)
    naive = RequestChars()
    rec.provider.add_span_processor(naive)
    agent = Agent(rec)
    for i in range(sessions):
        agent.run(turns, seed * 1_000_003 + i)
    rec.shutdown()
    stats = rec.stats
    assert stats.dropped == 0 and stats.capture_errors == 0, stats
    con = duckdb.connect(path)
    con.execute("CHECKPOINT")
    counts = {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in store_tables(con)}
    blocks = con.execute(
        "SELECT total_blocks, used_blocks, free_blocks, block_size FROM pragma_database_size()").fetchone()
    con.close()
    wal = os.path.getsize(path + ".wal") if os.path.exists(path + ".wal") else 0
    size = os.path.getsize(path) + wal
    by_table = {t: compacted_size(path, t) for t in counts}
    return {"by_table": by_table, "file": size, "used": blocks[1] * blocks[3], "compact": compacted_size(path),
            "naive": naive.chars,
            "calls": naive.calls, "counts": counts, "logical": logical_bytes(path), "blocks": blocks,
            "written": stats.written}


def compacted_size(path: str, table_name: str | None = None) -> int:
    """The size of a fresh copy of the store (COPY FROM DATABASE), i.e. without free blocks; or, with
    ``table_name``, of a fresh file holding only a copy of that table."""
    out = path + ".compact"
    for f in (out, out + ".wal"):
        if os.path.exists(f):
            os.remove(f)
    con = duckdb.connect(path)
    db = con.execute("SELECT current_database()").fetchone()[0]
    con.execute(f"ATTACH '{out}' AS compact")
    if table_name is None:
        con.execute(f'COPY FROM DATABASE "{db}" TO compact')
    else:
        con.execute(f'CREATE TABLE compact.{table_name} AS SELECT * FROM "{db}".main.{table_name}')
    con.execute("CHECKPOINT compact")
    con.execute("DETACH compact")
    con.close()
    size = os.path.getsize(out)
    os.remove(out)
    return size


def cmd_storage(args: argparse.Namespace) -> None:
    print(machine_header("Storage per session (benchmarks/bench_store.py storage)"))
    out_dir = OUT / "storage"
    out_dir.mkdir(parents=True, exist_ok=True)
    turn_lengths = [int(x) for x in args.turns.split(",")]
    res: dict[int, dict[str, Any]] = {}
    for turns in turn_lengths:
        n1 = max(args.min_sessions, args.turn_budget // turns)
        n2 = 2 * n1
        r = {"n1": n1, "n2": n2}
        for key, n in (("a", n1), ("b", n2)):
            progress(f"{turns} turns: recording {n} sessions through the real Recorder")
            t0 = time.perf_counter()
            r[key] = record_file(str(out_dir / f"s{turns}-{n}.duckdb"), n, turns, args.seed)
            progress(f"  done in {time.perf_counter() - t0:.1f} s: {fmt_bytes(r[key]['file'])}")
        res[turns] = r

    def marg(r: dict[str, Any], f: Any) -> float:
        return (f(r["b"]) - f(r["a"])) / (r["n2"] - r["n1"])

    def file_(x: dict[str, Any]) -> float:
        return x["file"]

    def logical(x: dict[str, Any]) -> float:
        return sum(x["logical"].values())

    def naive(x: dict[str, Any]) -> float:
        return x["naive"]

    def used(x: dict[str, Any]) -> float:
        return x["used"]

    def compact(x: dict[str, Any]) -> float:
        return x["compact"]

    rows = []
    for turns, r in res.items():
        a, b = r["a"], r["b"]
        rows.append((
            turns, f"{r['n1']} / {r['n2']}",
            f"{fmt_bytes(a['file'])} / {fmt_bytes(b['file'])}", fmt_bytes(marg(r, file_)),
            f"{fmt_bytes(a['used'])} / {fmt_bytes(b['used'])}", fmt_bytes(marg(r, used)),
            f"{fmt_bytes(a['compact'])} / {fmt_bytes(b['compact'])}", fmt_bytes(marg(r, compact)),
            fmt_bytes(marg(r, compact) / turns), fmt_bytes(marg(r, logical)), fmt_bytes(marg(r, naive)),
        ))
    print("File A holds nA sessions, file B nB (B's first nA sessions are A's). \"Marginal\" is (B - A) / (nB - nA): "
          "the bytes one more session costs, without DuckDB's fixed per-file overhead.")
    print()
    print(table(["turns/ session", "sessions A / B", "file size A / B, as recorded (after CHECKPOINT)",
                 "marginal, file size", "used blocks A / B (x 256 KiB)", "marginal, used blocks",
                 "compacted copy A / B", "marginal, compacted", "marginal compacted per turn",
                 "marginal logical bytes", "naive: full request body per call"], rows))
    print()
    lo, hi = min(res), max(res)
    ratio_rows = []
    for name, f in (("file size as recorded, marginal", file_), ("used blocks, marginal", used),
                    ("compacted copy, marginal", compact), ("file size as recorded, whole file B / nB", None),
                    ("logical bytes, marginal", logical), ("naive: full request bodies", naive)):
        if f is None:
            vals = {t: res[t]["b"]["file"] / res[t]["n2"] for t in res}
        else:
            vals = {t: marg(res[t], f) for t in res}
        ratio_rows.append((name, *(f"{vals[t] / vals[lo]:.2f}" for t in res if t != lo)))
    print(table(["bytes per session", *(f"{t} turns / {lo} turns" for t in res if t != lo)], ratio_rows))
    print()
    # Where the bytes go, table by table.
    def table_marg(t: int, name: str, key: str) -> float:
        r = res[t]
        if key == "logical":
            return (r["b"]["logical"][name] - r["a"]["logical"][name]) / (r["n2"] - r["n1"])
        return (r["b"]["by_table"][name] - r["a"]["by_table"][name]) / (r["n2"] - r["n1"])

    names = list(res[lo]["a"]["counts"])
    print(table(["table", *(f"marginal per {t}-turn session: logical / compacted alone" for t in res),
                 f"compacted {hi}/{lo}"],
                [(n, *(f"{fmt_bytes(table_marg(t, n, 'logical'))} / {fmt_bytes(table_marg(t, n, 'by_table'))}"
                       for t in res),
                  f"{table_marg(hi, n, 'by_table') / table_marg(lo, n, 'by_table'):.1f}"
                  if table_marg(lo, n, 'by_table') > 0 else "-")
                 for n in names]))
    print()
    print("(\"compacted alone\": a fresh file holding only a copy of that table, so each includes a small fixed "
          "part and 256 KiB quantisation.)")
    print()
    print(table(["file", *res[lo]["a"]["counts"], "DuckDB blocks total/used/free x size"],
                [(f"{t} turns x {res[t][k]['counts']['sessions']}", *res[t][k]["counts"].values(),
                  "{} / {} / {} x {}".format(*res[t][k]["blocks"]))
                 for t in res for k in ("a", "b")]))
    print()
    for label, f in (("compacted copy", compact), ("used blocks", used), ("file size as recorded", file_)):
        ratio = marg(res[hi], f) / marg(res[lo], f)
        fixed = res[lo]["a"][f.__name__.rstrip("_")] - res[lo]["n1"] * marg(res[lo], f)
        print(f"- **bytes({hi})/bytes({lo}) ≤ 12, marginal {label}: {'met' if ratio <= 12 else 'MISSED'}** "
              f"({ratio:.2f}); fixed per-file part implied by the {lo}-turn files: {fmt_bytes(fixed)}.")
    print("\nDuckDB allocates 256 KiB blocks, so differences of a few blocks are quantisation. Free blocks are "
          "space that earlier checkpoints released inside the file; later writes reuse it.")
    print(f"\nLoad average at end: {' / '.join(f'{x:.2f}' for x in os.getloadavg())}")


# -- 4. queries ----------------------------------------------------------------------------------


def generate_store(path: str, target_spans: int, args: argparse.Namespace) -> dict[str, Any]:
    """A store of >= target_spans spans: real recorded sessions replayed with new ids, tags and times,
    converted with from_readable + Ingestor.build and written with Store.write in large batches."""
    tmp = tempfile.mkdtemp(prefix="gen-", dir=OUT)
    try:
        progress(f"recording {args.base_sessions} base sessions of {args.min_turns}-{args.max_turns} turns")
        base = record_base_sessions(args.base_sessions, args.min_turns, args.max_turns, args.seed, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    per_copy = sum(len(b["spans"]) for b in base)
    copies = -(-target_spans // per_copy)
    for f in (path, path + ".wal"):
        if os.path.exists(f):
            os.remove(f)
    store = Store(path)
    ing = Ingestor()
    written = 0
    t0 = time.perf_counter()
    # Spread the sessions over ~30 days: copy c starts c * step later than copy c - 1.
    step = int(30 * 86400e9 / copies)
    rng = random.Random(args.seed + 7)
    pending: list[Any] = []
    for c in range(copies):
        pending += replicate(base, 1, rng.getrandbits(32), time_offset_ns=c * step)
        if len(pending) >= args.write_batch or c == copies - 1:
            for part in chunks(pending, args.write_batch):
                store.write(ing.build([from_readable(s) for s in part]))
            written += len(pending)
            pending = []
            el = time.perf_counter() - t0
            progress(f"copy {c + 1}/{copies}: {written:,} spans written, {written / el:,.0f} spans/s")
    store.close()
    con = duckdb.connect(path)
    con.execute("CHECKPOINT")
    con.close()
    return {"seconds": time.perf_counter() - t0}


def query_breakdown(path: str, session_id: str, runs: int) -> str:
    """The SQL statements of ``session_account`` and ``list_sessions`` on fresh connections, timed one by one."""
    times: dict[str, list[float]] = defaultdict(list)
    calls: Counter[str] = Counter()
    orig = Store._query

    def timed(self: Store, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        t = time.perf_counter()
        try:
            return orig(self, sql, params)
        finally:
            key = " ".join(sql.split())
            times[key].append(time.perf_counter() - t)
            calls[key] += 1

    Store._query = timed  # type: ignore[method-assign]
    try:
        totals = []
        for _ in range(runs):
            st = Store(path, read_only=True)
            t = time.perf_counter()
            st.session_account(session_id)
            totals.append(time.perf_counter() - t)
            st.close()
    finally:
        Store._query = orig  # type: ignore[method-assign]
    rows = []
    for key, ts in sorted(times.items(), key=lambda kv: -sum(kv[1])):
        short = key if len(key) <= 90 else key[:87] + "…"
        rows.append((f"`{short}`", f"{calls[key] / runs:.1f}", f"{median(ts) * 1000:.1f}",
                     f"{sum(ts) / runs * 1000:.1f}"))
    rows.append(("**session_account total**", "", "", f"{median(totals) * 1000:.1f}"))
    return ("`session_account` statement by statement (fresh read-only connection per run, "
            f"{runs} runs):\n\n" + table(["SQL", "calls per run", "median ms per call", "ms per run (mean)"], rows))


_FRESH_PROCESS = r"""
import json, sys, time
t0 = time.perf_counter()
import tracer
t1 = time.perf_counter()
s = tracer.Store(sys.argv[1], read_only=True)
t2 = time.perf_counter()
s.list_sessions(limit=50)
t3 = time.perf_counter()
s.session_account(sys.argv[2])
t4 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "open": t2 - t1, "list": t3 - t2, "show": t4 - t3}))
"""


def cmd_queries(args: argparse.Namespace) -> None:
    print(machine_header("Query latency on a >=1M-span store (benchmarks/bench_store.py queries)"))
    OUT.mkdir(exist_ok=True)
    path = str(Path(args.db) if args.db else OUT / "queries-1m.duckdb")
    gen = None
    if args.regenerate or not os.path.exists(path):
        progress(f"generating {path}")
        gen = generate_store(path, args.spans, args)
    con = duckdb.connect(path, read_only=True)
    counts = {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in store_tables(con)}
    target = con.execute(
        "SELECT session_id FROM sessions WHERE turns = 30 ORDER BY start_ns LIMIT 1 OFFSET "
        "(SELECT count(*) // 2 FROM sessions WHERE turns = 30)").fetchone()[0]
    consistent = con.execute("""
        SELECT (SELECT sum(llm_calls) FROM sessions) = (SELECT count(*) FROM llm_calls),
               (SELECT sum(tool_calls) FROM sessions) = (SELECT count(*) FROM tool_calls),
               (SELECT sum(turns) FROM sessions) = (SELECT count(*) FROM turns),
               (SELECT count(*) FROM llm_calls l ANTI JOIN message_chain m ON m.node = l.messages_ref
                  WHERE l.messages_ref IS NOT NULL) = 0,
               (SELECT count(*) FROM message_chain m ANTI JOIN content c ON c.hash = m.message) = 0
    """).fetchone()
    con.close()
    assert counts["spans"] >= 1_000_000 or args.spans < 1_000_000, counts
    size = os.path.getsize(path)

    print(table(["store", "value"], [
        ("file", f"`{os.path.relpath(path, HERE.parent)}`, {fmt_bytes(size)}"),
        *((f"rows in {k}", fmt_int(v)) for k, v in counts.items()),
        ("consistency: sessions sums = llm_calls / tool_calls / turns rows; every messages_ref in message_chain; "
         "every chain message in content",
         " / ".join(str(bool(x)) for x in consistent)),
        ("generated in", f"{gen['seconds']:.0f} s" if gen else "(reused an existing file; --regenerate to rebuild)"),
        ("session shown", f"`{target}` (30 turns)"),
    ]))
    print()

    progress("timing list_sessions / session_account on fresh read-only connections")
    fresh: dict[str, list[float]] = defaultdict(list)
    for i in range(args.runs):
        t0 = time.perf_counter()
        st = Store(path, read_only=True)
        t1 = time.perf_counter()
        if i % 2 == 0:
            rows = st.list_sessions(limit=50)
            t2 = time.perf_counter()
            acc = st.session_account(target)
            t3 = time.perf_counter()
            fresh["list"].append(t2 - t1)
            fresh["show"].append(t3 - t2)
        else:  # alternate which query runs first on the fresh connection
            acc = st.session_account(target)
            t2 = time.perf_counter()
            rows = st.list_sessions(limit=50)
            t3 = time.perf_counter()
            fresh["show"].append(t2 - t1)
            fresh["list"].append(t3 - t2)
        fresh["open"].append(t1 - t0)
        st.close()
    assert len(rows) == 50 and len(acc.turns) == 30 and sum(len(t.llm_calls) for t in acc.turns) == 30
    warm: dict[str, list[float]] = defaultdict(list)
    st = Store(path, read_only=True)
    for _ in range(args.runs):
        t0 = time.perf_counter()
        st.list_sessions(limit=50)
        t1 = time.perf_counter()
        st.session_account(target)
        t2 = time.perf_counter()
        warm["list"].append(t1 - t0)
        warm["show"].append(t2 - t1)
    st.close()

    if args.breakdown:
        print(query_breakdown(path, target, args.runs))
        print()

    progress("timing fresh processes and the CLI")
    py = sys.executable
    proc: dict[str, list[float]] = defaultdict(list)
    cli: dict[str, list[float]] = defaultdict(list)
    flightrec = str(Path(py).parent / "flightrec")
    commands = {
        "list": [flightrec, "traces", "list", "--db", path],
        "show": [flightrec, "traces", "show", target, "--db", path],
        "version": [flightrec, "--version"],
        "python": [py, "-c", "pass"],
    }
    for _ in range(args.cli_runs):
        out = subprocess.run([py, "-c", _FRESH_PROCESS, path, target], check=True, capture_output=True, text=True)
        for k, v in json.loads(out.stdout).items():
            proc[k].append(v)
        for k, cmd in commands.items():
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True)
            cli[k].append(time.perf_counter() - t0)

    def ms(xs: Sequence[float]) -> str:
        return f"{median(xs) * 1000:.1f}"

    def spread(xs: Sequence[float]) -> str:
        s = sorted(xs)
        return f"{s[0] * 1000:.1f} – {s[-1] * 1000:.1f}"

    rows = [
        ("`Store(path, read_only=True)` (open + schema check)", "fresh connection", args.runs, ms(fresh["open"]),
         spread(fresh["open"]), "-"),
        ("`list_sessions(limit=50)` (traces list, first page)", "fresh connection", args.runs, ms(fresh["list"]),
         spread(fresh["list"]), "≤ 200"),
        ("`session_account(id)`, 30-turn session (traces show)", "fresh connection", args.runs, ms(fresh["show"]),
         spread(fresh["show"]), "≤ 100"),
        ("`list_sessions(limit=50)`", "warm connection", args.runs, ms(warm["list"]), spread(warm["list"]), "-"),
        ("`session_account(id)`", "warm connection", args.runs, ms(warm["show"]), spread(warm["show"]), "-"),
        ("`import tracer`", "fresh process", args.cli_runs, ms(proc["import"]), spread(proc["import"]), "-"),
        ("open", "fresh process", args.cli_runs, ms(proc["open"]), spread(proc["open"]), "-"),
        ("`list_sessions(limit=50)`", "fresh process", args.cli_runs, ms(proc["list"]), spread(proc["list"]), "≤ 200"),
        ("`session_account(id)`", "fresh process", args.cli_runs, ms(proc["show"]), spread(proc["show"]), "≤ 100"),
        ("`flightrec traces list --db …`", "CLI end to end", args.cli_runs, ms(cli["list"]), spread(cli["list"]), "-"),
        ("`flightrec traces show ID --db …`", "CLI end to end", args.cli_runs, ms(cli["show"]), spread(cli["show"]),
         "-"),
        ("`flightrec --version` (start-up + imports only)", "CLI end to end", args.cli_runs, ms(cli["version"]),
         spread(cli["version"]), "-"),
        ("`python -c pass`", "interpreter start-up", args.cli_runs, ms(cli["python"]), spread(cli["python"]), "-"),
    ]
    print("\"fresh connection\": a new `Store(path, read_only=True)` per run in this process (DuckDB's buffer "
          "cache starts empty; the OS page cache is warm), the two queries in alternating order. \"warm "
          "connection\": repeated on one open store. \"fresh process\": a new Python process that imports tracer, "
          "opens the store and runs each query once. \"CLI end to end\": wall time of the installed `flightrec` "
          "command, Python start-up and imports included.")
    print()
    print(table(["operation", "how", "runs", "median ms", "min – max ms", "target ms"], rows))
    print()
    lm, sm = median(fresh["list"]) * 1000, median(fresh["show"]) * 1000
    print(f"**Target `traces list` first page ≤ 200 ms: {'met' if lm <= 200 else 'MISSED'}** ({lm:.1f} ms median, "
          "fresh read-only connection, query only).")
    print(f"**Target one 30-turn session's account ≤ 100 ms: {'met' if sm <= 100 else 'MISSED'}** ({sm:.1f} ms).")
    print(f"\nLoad average at end: {' / '.join(f'{x:.2f}' for x in os.getloadavg())}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)

    def workload(sp: argparse.ArgumentParser, base: int) -> None:
        sp.add_argument("--base-sessions", type=int, default=base, help="sessions recorded through the real pipeline")
        sp.add_argument("--min-turns", type=int, default=10)
        sp.add_argument("--max-turns", type=int, default=30)
        sp.add_argument("--seed", type=int, default=1)

    t = sub.add_parser("throughput", help="exporter spans/s vs raw bulk insert")
    workload(t, 150)
    t.add_argument("--spans", type=int, default=100_000, help="spans per run (base sessions are replayed to reach it)")
    t.add_argument("--rounds", type=int, default=5)
    t.add_argument("--keep", action="store_true", help="keep the temporary files")
    t.add_argument("--profile", action="store_true", help="also print a cProfile of the direct path")
    t.add_argument("--no-gc-freeze", action="store_true",
                   help="leave the prepared spans in the cyclic GC's view (slower, benchmark artefact)")
    t.set_defaults(fn=cmd_throughput)

    s = sub.add_parser("storage", help="bytes per session for 10/50/100-turn sessions")
    s.add_argument("--turns", default="10,50,100")
    s.add_argument("--min-sessions", type=int, default=20, help="sessions in file A at least (file B has twice)")
    s.add_argument("--turn-budget", type=int, default=4000,
                   help="file A holds max(min-sessions, budget/turns) sessions, so short sessions get enough data")
    s.add_argument("--seed", type=int, default=1)
    s.set_defaults(fn=cmd_storage)

    q = sub.add_parser("queries", help="traces list / show latency on a >=1M-span store")
    workload(q, 200)
    q.add_argument("--spans", type=int, default=1_000_000)
    q.add_argument("--db", default=None, help="store to use (default benchmarks/out/queries-1m.duckdb)")
    q.add_argument("--regenerate", action="store_true")
    q.add_argument("--write-batch", type=int, default=50_000)
    q.add_argument("--runs", type=int, default=25)
    q.add_argument("--cli-runs", type=int, default=7)
    q.add_argument("--breakdown", action="store_true", help="also time session_account's SQL statement by statement")
    q.set_defaults(fn=cmd_queries)

    args = p.parse_args()
    args.fn(args)


if __name__ == "__main__":
    main()
