"""No test depends on the clock: tests wait on events or drive a ``tracer.testing.FakeClock``, and
never sleep for a while or time themselves.

A sleep followed by a check passes on a fast machine and fails on a loaded one, and a timed assert
is a benchmark (``benchmarks/``), not a test. ``time.monotonic`` stays allowed: a deadline that
only stops a broken test from hanging asserts nothing about speed; so does ``time.time``, which
tests read for the date that spans carry. (The browser test's driver, ``dashboard.testing``, polls
chromium and a Streamlit server, other processes with nothing to wait on but their answers; no test
asserts the page-load seconds it measures for benchmarks/bench_dashboard.py.)
"""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).parent

FORBIDDEN = {"time.sleep", "time.perf_counter", "time.perf_counter_ns", "time.process_time"}
"""Calls that wait on real time or measure it."""


def _calls(tree: ast.AST) -> set[str]:
    """The forbidden calls in a module, as ``time.NAME`` whether written so or imported from time."""
    imported = {alias.asname or alias.name: alias.name for node in ast.walk(tree)
                if isinstance(node, ast.ImportFrom) and node.module == "time" for alias in node.names}
    found = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.value.id == "time":
            name = f"time.{f.attr}"
        elif isinstance(f, ast.Name) and f.id in imported:
            name = f"time.{imported[f.id]}"
        else:
            continue
        if name in FORBIDDEN:
            found.add(name)
    return found


def test_no_test_sleeps_or_times_itself():
    offences = []
    for path in sorted(TESTS.rglob("*.py")):
        rel = path.relative_to(TESTS).as_posix()
        for name in sorted(_calls(ast.parse(path.read_text(), filename=rel))):
            offences.append(f"tests/{rel} calls {name}")
    assert not offences, ("Tests must not wait on real time or measure it: wait on an event, drive a "
                          "tracer.testing.FakeClock, or move the timing to benchmarks/. Found:\n"
                          + "\n".join(offences))


def test_the_rule_sees_both_spellings():
    assert _calls(ast.parse("import time\ntime.sleep(1)\n")) == {"time.sleep"}
    assert _calls(ast.parse("from time import perf_counter as pc\npc()\n")) == {"time.perf_counter"}
    assert _calls(ast.parse("import time\ntime.monotonic()\n")) == set()
