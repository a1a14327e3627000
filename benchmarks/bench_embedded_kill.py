"""The embedded recorder under load: what a ``kill -9`` of the agent's process leaves in the store.

A child process records support sessions (``benchmarks/_workload.py``'s agent, ``--turns`` LLM
calls each, with their tool calls and the whole request in every ``chat`` span) into a fresh store
through ``tracer.Recorder(db)``, and prints each session's id once its ``invoke_agent`` span has
ended. Meanwhile ``--burners`` other processes spin on the CPU, so that the agent's process gets
less than a core, as on a busy machine. The parent sends SIGKILL ``T`` seconds after the child's recorder
was made (for each ``T`` in ``--kills``), then opens the store for writing, as the next run of the
agent would (which is when a spill is recovered), and counts the reported sessions stored whole:
ended, with every LLM call.

Each tree in ``--trees`` (a directory holding a ``tracer/`` package, such as a ``git archive`` of
an older commit) is run in turn for every kill time, in rounds, so that the machine's noise falls on
all of them alike. Per run it prints the sessions reported, those the process itself had stored
(read before the next open, read-only), those stored after the next open, the lag (how long before
the kill the oldest session the process had not stored was reported: how far behind its writer
was), the child's CPU per reported session (user + system, from ``wait4``, less what it had spent on
imports and set-up when its recorder was made), and how long the next
open took (a new process: imports, recovery and the query).

With ``--on-end``, it measures instead what the exporter costs the agent's thread per span
(``StoreSpanProcessor.on_end``: queueing, and with a spill the conversion and the append), with the
writer paused (its store cannot open, so it sleeps), for the spans of ``--turns``-call sessions
replayed ``--reps`` times, each tree in its own process, in rounds.

Run from the repository root::

    git archive <old commit> tracer | tar -x -C /tmp/before
    .venv/bin/python benchmarks/bench_embedded_kill.py --trees /tmp/before,. --kills 2,4,6,8 --rounds 3
    .venv/bin/python benchmarks/bench_embedded_kill.py --trees /tmp/before,. --on-end --rounds 5
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

BURN = "while True: pass"


def child(db: str, turns: int) -> None:
    """Records sessions until killed; prints each session's id once its span has ended."""
    sys.path.insert(1, str(HERE))
    from _workload import Agent

    import tracer

    rec = tracer.Recorder(db)
    agent = Agent(rec)
    print("ready", time.process_time(), flush=True)  # the CPU that imports and set-up took
    seed = random.Random(os.getpid()).randrange(1 << 30)
    while True:
        session_id, _ = agent.run(turns, seed)
        print(session_id, flush=True)
        seed += 1


def on_end_child(turns: int, reps: int) -> None:
    """Prints the agent thread's CPU µs per span in ``on_end`` (all spans, then chat spans alone), the
    span counts, and the CPU µs per span of ``from_readable`` alone (the writer's, before the spill)."""
    import inspect

    sys.path.insert(1, str(HERE))
    from _workload import Agent, collecting_recorder

    import tracer

    with tempfile.TemporaryDirectory() as tmp:
        rec, collect = collecting_recorder(os.path.join(tmp, "unused.duckdb"))
        agent = Agent(rec)
        for seed in range(reps):
            agent.run(turns, seed)
        rec.provider.shutdown()
        spans = collect.spans

        def paused() -> tracer.Store:
            raise tracer.StoreError("paused for the measurement")

        def cost(measured: list) -> float:
            """CPU µs of this thread per span in on_end (CPU, not wall time: the machine is shared)."""
            options: dict[str, object] = {"max_queue": len(measured) + 1}
            if "spill" in inspect.signature(tracer.StoreSpanProcessor).parameters:
                options["spill"] = os.path.join(tmp, "m.duckdb.spill")
            processor = tracer.StoreSpanProcessor(paused, **options)
            started = time.thread_time()
            for span in measured:
                processor.on_end(span)
            took = time.thread_time() - started
            processor.shutdown()
            return took * 1e6 / len(measured)

        from tracer._ingest import from_readable

        started = time.thread_time()
        for span in spans:
            from_readable(span)  # the writer's conversion, which a spill moves to the agent's thread
        convert = (time.thread_time() - started) * 1e6 / len(spans)
        chats = [s for s in spans if s.name.startswith("chat")]
        print(cost(spans), cost(chats), len(spans), len(chats), convert)


def run_once(tree: Path, kill_at_s: float, turns: int, burners: int) -> dict[str, float]:
    """One child on ``tree``, killed ``kill_at_s`` after its start; what the next open finds."""
    with tempfile.TemporaryDirectory() as tmp:
        db = os.path.join(tmp, "kill.duckdb")
        env = {**os.environ, "PYTHONPATH": str(tree.resolve())}
        burning = [subprocess.Popen([sys.executable, "-c", BURN]) for _ in range(burners)]
        try:
            proc = subprocess.Popen([sys.executable, __file__, "--child", db, "--turns", str(turns)],
                                    stdout=subprocess.PIPE, text=True, env=env)
            reported: list[tuple[float, str]] = []
            ready = threading.Event()
            setup_cpu_s = [0.0]

            def read() -> None:
                assert proc.stdout is not None
                for line in proc.stdout:
                    if line.startswith("ready"):
                        setup_cpu_s[0] = float(line.split()[1])
                        ready.set()
                    else:
                        reported.append((time.monotonic(), line.strip()))

            reader = threading.Thread(target=read)
            reader.start()
            if not ready.wait(120):
                raise RuntimeError("the child did not start recording within 120 s")
            time.sleep(kill_at_s)
            killed = time.monotonic()
            os.kill(proc.pid, signal.SIGKILL)
            _, _, usage = os.wait4(proc.pid, 0)
            proc.returncode = -9
            reader.join()
        finally:
            for b in burning:
                b.kill()
                b.wait()
        by_process = _whole_sessions(db, turns, env, read_only=True) if os.path.exists(db) else set()
        opened = time.monotonic()
        stored = _whole_sessions(db, turns, env, read_only=False)
        open_s = time.monotonic() - opened
        late = [t for t, sid in reported if sid not in by_process]
        return {
            "reported": len(reported),
            "by_process": sum(1 for _, sid in reported if sid in by_process),
            "stored": sum(1 for _, sid in reported if sid in stored),
            "lag_s": killed - min(late) if late else 0.0,
            "cpu_ms_per_session": (usage.ru_utime + usage.ru_stime - setup_cpu_s[0]) * 1000
            / max(len(reported), 1),
            "next_open_s": open_s,
        }


def _whole_sessions(db: str, turns: int, env: dict[str, str], *, read_only: bool) -> set[str]:
    """The sessions stored whole (ended ok, every LLM call), read by the tree under test. Opened for
    writing, the store first recovers what the killed process spilled (a tree that has a spill)."""
    script = ("import sys, tracer\n"
              "s = tracer.Store(sys.argv[1], read_only=sys.argv[3] == 'ro')\n"
              "rows = s.sql('SELECT session_id FROM sessions WHERE ended AND status = ? AND llm_calls = ?',"
              " ['ok', int(sys.argv[2])])\n"
              "print('\\n'.join(r[0] for r in rows))\n")
    # Run beside the store, not here: ``python -c`` puts its working directory first on the path.
    out = subprocess.run([sys.executable, "-c", script, db, str(turns), "ro" if read_only else "rw"],
                         capture_output=True, text=True, env=env, check=True, cwd=os.path.dirname(db))
    return set(out.stdout.split())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--child", metavar="DB", help=argparse.SUPPRESS)
    parser.add_argument("--trees", default=".", help="comma-separated trees to compare (default: this one)")
    parser.add_argument("--kills", default="2,4,6,8",
                        help="seconds after the child's recorder was made (default 2,4,6,8)")
    parser.add_argument("--rounds", type=int, default=1, help="rounds of every tree at every kill time")
    parser.add_argument("--turns", type=int, default=8, help="LLM calls per session (default 8)")
    parser.add_argument("--burners", type=int, default=2, help="processes spinning on the CPU (default 2)")
    parser.add_argument("--on-end", action="store_true", help="measure on_end's cost per span instead")
    parser.add_argument("--on-end-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--reps", type=int, default=100, help="sessions replayed for --on-end (default 100)")
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, args.turns)
        return 0
    if args.on_end_child:
        on_end_child(args.turns, args.reps)
        return 0
    trees = [Path(t) for t in args.trees.split(",")]
    if args.on_end:
        costs: dict[str, list[list[float]]] = {}
        for r in range(args.rounds):
            for tree in (trees if r % 2 == 0 else trees[::-1]):
                out = subprocess.run([sys.executable, __file__, "--on-end-child", "--turns", str(args.turns),
                                      "--reps", str(args.reps)], capture_output=True, text=True, check=True,
                                     env={**os.environ, "PYTHONPATH": str(tree.resolve())})
                costs.setdefault(str(tree), []).append([float(x) for x in out.stdout.split()])
                print(f"round {r + 1} tree {tree}: {out.stdout.strip()}", file=sys.stderr, flush=True)
        print("| tree | CPU µs a span in on_end (median) | CPU µs a chat span (median) | spans, of them chat "
              "| CPU µs a span in from_readable (median) |")
        print("|---|---:|---:|---:|---:|")
        for tree, runs in costs.items():
            span, chat = statistics.median(x[0] for x in runs), statistics.median(x[1] for x in runs)
            print(f"| {tree} | {span:.1f} | {chat:.1f} | {int(runs[0][2])}, {int(runs[0][3])} "
                  f"| {statistics.median(x[4] for x in runs):.1f} |")
        return 0
    kills = [float(k) for k in args.kills.split(",")]
    results: dict[tuple[str, float], list[dict[str, float]]] = {}
    for r in range(args.rounds):
        for kill in kills:
            for tree in (trees if r % 2 == 0 else trees[::-1]):
                res = run_once(tree, kill, args.turns, args.burners)
                results.setdefault((str(tree), kill), []).append(res)
                print(f"round {r + 1} tree {tree} kill {kill:g}s: {res['by_process']}/{res['reported']} stored by "
                      f"the process, {res['stored']}/{res['reported']} after the next open, "
                      f"lag {res['lag_s']:.1f}s, {res['cpu_ms_per_session']:.1f} ms CPU/session, "
                      f"next open {res['next_open_s']:.2f}s", file=sys.stderr, flush=True)
    print("| tree | kill at | stored by the process / reported (each run) | stored after the next open / reported "
          "| lag s (median) | CPU ms a session (median) | next open s (median) |")
    print("|---|---:|---|---|---:|---:|---:|")
    for (tree, kill), runs in results.items():
        by_process = ", ".join(f"{x['by_process']}/{x['reported']}" for x in runs)
        counts = ", ".join(f"{x['stored']}/{x['reported']}" for x in runs)
        print(f"| {tree} | {kill:g} s | {by_process} | {counts} | {statistics.median(x['lag_s'] for x in runs):.1f} "
              f"| {statistics.median(x['cpu_ms_per_session'] for x in runs):.1f} "
              f"| {statistics.median(x['next_open_s'] for x in runs):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
