"""Forks of guarded sessions: does the fork stop where production stopped, and what does it spend?

    python benchmarks/bench_fork_guard.py [--scenario stuck_tracking] [--turn 1]

Records one reference-agent session of ``--scenario`` (by default ``stuck_tracking``: the
simulated model repeats a tool call, and the agent's loop guard stops the session) into a temp
store, then forks it live at ``--turn`` with a one-line system-prompt edit, and prints one JSON
line: the origin's status and tool calls, the fork's status, turns, tool calls (served from the
recording and live), tokens and cost, and the process CPU time (user + sys) of the ``replay.fork``
call. One fork per process: to compare trees, run it alternately with ``PYTHONPATH`` set to each
(``benchmarks/RESULTS.md`` says how), since the machine is shared.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default="stuck_tracking")
    parser.add_argument("--turn", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = str(Path(tmp) / "bench.duckdb")
        import replay
        import tracer
        from reference_agent import Agent, World, default_world_path, get_scenario

        recorder = tracer.Recorder(db)
        try:
            with World(default_world_path(db)) as world:
                sid = Agent(world, recorder).run(get_scenario(args.scenario)).session_id
        finally:
            recorder.shutdown()
        edits = replay.Edits(system_replace=[("Be brief, warm and concrete.", "Be brief and concrete.")])
        replay.reconstruct(sid, args.turn, db=db)  # imports and the first store open, out of the timing
        before = _cpu()
        result = replay.fork(sid, args.turn, edits, db=db)
        cpu_s = _cpu() - before
        with tracer.Store(db, read_only=True) as store:
            origin = store.session_account(sid).session
            fork = store.session_account(result.session_id).session
        print(json.dumps({
            "origin_status": origin.status, "origin_tool_calls": origin.tool_calls, "fork_status": result.status,
            "fork_turns": len(result.decisions), "served": result.recorded_tool_calls, "live": result.live_tool_calls,
            "fork_tokens": fork.input_tokens + fork.output_tokens + fork.cache_read_tokens + fork.cache_write_tokens,
            "fork_cost_usd": fork.cost_usd, "cpu_s": round(cpu_s, 3)}))


if __name__ == "__main__":
    main()
