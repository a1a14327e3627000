"""A ``tracer.Clock`` for tests: time moves only when the test says so."""

from __future__ import annotations

import threading


class FakeClock:
    """A clock for tests: time moves only when told, or by ``tick`` at every reading.

    Safe to share between threads.

    Args:
        start: The first reading.
        tick: Seconds added after every ``now()``, to make each step look slow.
    """

    def __init__(self, start: float = 0.0, *, tick: float = 0.0) -> None:
        self._now = start
        self._tick = tick
        self._lock = threading.Lock()
        self.slept = 0.0

    def now(self) -> float:
        with self._lock:
            value = self._now
            self._now += self._tick
            return value

    def sleep(self, seconds: float) -> None:
        self.advance(seconds)
        self.slept += max(seconds, 0.0)

    def advance(self, seconds: float) -> None:
        """Moves time forward."""
        with self._lock:
            self._now += max(seconds, 0.0)
