"""Read API benchmark: ``traces list`` and ``traces show`` through ``flightrec serve``'s read API
against reading the file directly, medians of N runs, in the same run.

    python benchmarks/bench_read_api.py [--sessions 200] [--turns 30] [--runs 30] [--rounds 3] [--cli-runs 6]

The store is recorded through the real pipeline (``_workload.Agent``: a ``tracer.Recorder`` with an
instrumented anthropic client over an ``httpx2.MockTransport``): ``--sessions`` sessions of 2-10
turns and one of ``--turns`` turns, the one ``traces show`` shows. Then ``--rounds`` rounds, each
with the file free (direct) and then held by ``flightrec serve --no-dashboard`` (a subprocess,
idle; served), so that drift in the machine's load hits both ways alike. Timed, as the CLI does
it: ``tracer.connect(db)`` (read-only open, or on the lock the holder file and a ``ServedStore``),
the calls, and the close:

- ``traces list``: ``list_sessions(limit=50)`` and ``count_sessions()``;
- ``traces show``: ``session_account(id)`` of the ``--turns``-turn session;
- the same calls on a store kept open (one ``Store``, or one ``ServedStore`` on one keep-alive
  connection): what the read API adds to each call, without the open.

Then the CLI end to end (``flightrec traces list/show --db``, a fresh process each, start-up
included), ``--cli-runs`` per way and round.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _workload import Agent, machine_header, progress, table  # noqa: E402

import tracer  # noqa: E402
from tracer._connect import result_adapter  # noqa: E402

FLIGHTREC = str(Path(sys.executable).with_name("flightrec"))


@contextmanager
def serving(db: str) -> Iterator[None]:
    proc = subprocess.Popen([FLIGHTREC, "serve", "--db", db, "--port", "0", "--no-grpc", "--no-dashboard"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        assert "flightrec collector on" in proc.stdout.readline()  # type: ignore[union-attr]
        yield
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def timed(fn: Callable[[], object], runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--turns", type=int, default=30)
    parser.add_argument("--runs", type=int, default=30, help="Timed calls per operation, way and round.")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cli-runs", type=int, default=6, help="CLI processes per command, way and round.")
    args = parser.parse_args()
    header = machine_header("traces list / show through serve's read API vs the file (bench_read_api.py)")
    with tempfile.TemporaryDirectory() as tmp:
        db = str(Path(tmp) / "bench.duckdb")
        progress(f"recording {args.sessions} sessions and one of {args.turns} turns")
        recorder = tracer.Recorder(db)
        agent = Agent(recorder)
        for i in range(args.sessions):
            agent.run(2 + i % 9, seed=i)
        shown, _ = agent.run(args.turns, seed=-1)
        recorder.shutdown()

        def list_() -> None:
            with tracer.connect(db) as store:
                assert len(store.list_sessions(limit=50)) == min(50, args.sessions + 1)
                assert store.count_sessions() == args.sessions + 1

        def show() -> None:
            with tracer.connect(db) as store:
                assert len(store.session_account(shown).turns) == args.turns

        with tracer.connect(db) as store:
            account = store.session_account(shown)
        account_bytes = len(result_adapter("session_account").dump_json(account))
        ms: dict[tuple[str, str], list[float]] = defaultdict(list)
        cli = {"traces list": ["traces", "list", "--db", db], "traces show": ["traces", "show", shown, "--db", db]}
        for r in range(args.rounds):
            for way in ("direct", "served"):
                progress(f"round {r + 1}/{args.rounds}: {way}")
                with serving(db) if way == "served" else nullcontext():
                    with tracer.connect(db) as store:
                        assert isinstance(store, tracer.ServedStore) == (way == "served")
                    timed(list_, 3)  # warm-up
                    ms[("traces list", way)] += timed(list_, args.runs)
                    ms[("traces show", way)] += timed(show, args.runs)
                    with tracer.connect(db) as store:  # the calls alone: what the read API adds to each
                        ms[("list_sessions + count_sessions, store kept open", way)] += timed(
                            lambda: (store.list_sessions(limit=50), store.count_sessions()), args.runs)
                        ms[("session_account, store kept open", way)] += timed(
                            lambda: store.session_account(shown), args.runs)
                    for name, argv in cli.items():
                        ms[(f"`flightrec {name}` (process)", way)] += timed(
                            lambda argv=argv: subprocess.run([FLIGHTREC, *argv], check=True, capture_output=True),
                            args.cli_runs)
    rows = []
    for what in dict.fromkeys(what for what, _ in ms):
        direct, served = ms[(what, "direct")], ms[(what, "served")]
        d, s = statistics.median(direct), statistics.median(served)
        rows.append((what, len(direct), f"{d:.1f}", f"{s:.1f}", f"{s - d:+.1f}", f"{s / d:.2f}×"))
    print(header)
    print(f"store: {args.sessions + 1} sessions; `traces show` of a {args.turns}-turn session, "
          f"{account_bytes:,} bytes of JSON over the wire\n")
    print(table(("what", "runs per way", "direct ms", "served ms", "difference ms", "ratio"), rows))


if __name__ == "__main__":
    main()
