"""The agent's clock: a seam, so that guards and backoff can be tested without real time."""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    """Monotonic time in seconds, and a way to wait."""

    def now(self) -> float:
        """Seconds on a monotonic scale."""
        ...

    def sleep(self, seconds: float) -> None:
        """Waits ``seconds``."""
        ...


class SystemClock:
    """The real clock."""

    def now(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


class FakeClock:
    """A clock for tests: time moves only when told, or by ``tick`` at every reading.

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
