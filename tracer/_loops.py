"""Spotting a tool-call loop while it happens, so that an agent can stop it before its budget runs out.

``flightrec detect`` finds the same loops afterwards, in SQL (``evals``); this is the in-process
twin, with the same default thresholds, for an agent to consult before each tool call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ._canonical import canonical_json

LOOP_REPEAT = 4
LOOP_WINDOW = 10
LOOP_WINDOW_REPEATS = 5
LOOP_CYCLE_REPEATS = 3


@dataclass(frozen=True)
class LoopGuard:
    """The loop rules, applied to a session's tool calls so far plus the one about to run.

    Attributes:
        repeat: The same tool with the same arguments this many times in a row is a loop.
        window: Of the last ``window`` calls ...
        window_repeats: ... this many being the same call is a loop.
        cycle_repeats: A cycle of 2 to 4 calls repeated this many times is a loop.
    """

    repeat: int = LOOP_REPEAT
    window: int = LOOP_WINDOW
    window_repeats: int = LOOP_WINDOW_REPEATS
    cycle_repeats: int = LOOP_CYCLE_REPEATS

    def check(self, calls: Sequence[tuple[str, Any]], name: str, arguments: Any) -> str | None:
        """Why running ``name(arguments)`` after ``calls`` (``(name, arguments)`` pairs, oldest first)
        would be a loop, or ``None``. Pure: the caller keeps the history."""
        seq = [(n, canonical_json(a)) for n, a in calls] + [(name, canonical_json(arguments))]
        last = seq[-1]
        run = next((i for i, call in enumerate(reversed(seq)) if call != last), len(seq))
        if run >= self.repeat:
            return f"{name} called {run} times in a row with the same arguments"
        recent = seq[-self.window:]
        if recent.count(last) >= self.window_repeats:
            return f"{name} called {recent.count(last)} times with the same arguments within {len(recent)} calls"
        k = self.cycle_repeats
        for p in (2, 3, 4):
            span = p * k
            if len(seq) >= span and seq[-1] != seq[-2] and all(seq[-1 - i] == seq[-1 - i - p]
                                                               for i in range(span - p)):
                cycle = " → ".join(n for n, _ in seq[-p:])
                return f"a cycle of {p} calls ({cycle}) repeated {k} times"
        return None
