"""Online detection: the detectors run on sessions as they end, on their own thread, in the
process that writes the store (an embedded recorder, or ``flightrec serve`` through ``serve_hook``)."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable

import tracer

from ._alerts import Alert
from ._config import DetectConfig
from ._detect import detect
from ._scope import Scope
from ._sinks import ConsoleSink, Dispatcher

log = logging.getLogger("flightrec")
RUN_SESSIONS = 2_000
"""At most this many sessions a run: ended sessions come in bursts (a sweep that closes the inactive
ones, a fleet that ends many short sessions at once), and the detectors' queries over 50,000 sessions
at once took ``flightrec serve --no-dashboard`` from about 360 to 470–570 MB. A run also costs ~0.6 s
of CPU however few sessions it covers, so runs of 1,000 cost twice the CPU of one run, and of 2,000
1.4 times, for the same memory (benchmarks/RESULTS.md §69)."""
RUN_MEMORY_MB = 96
"""DuckDB memory a run may use (``Store.lend_memory``) in a process that holds DuckDB to less, as
``flightrec serve --no-dashboard`` does (48 MB): the detectors' queries over 2,000 sessions needed up to
64 MB on the 1M-span store, and beside a sustained load every run failed at 48 MB and 64 MB. At 96 MB
1 run in about 30 failed (``SessionWorker`` tries those once more); at 128 MB none did, but the
process's peak memory was 416–440 MB against 394–413, at its 440 MB bound (benchmarks/RESULTS.md §75)."""


class SessionWorker:
    """Work on sessions as they end, on a thread of its own, beside the store's writer: the
    detectors (``OnlineDetector``) and online scoring (``evals.OnlineScorer``) share it.

    It never blocks the writer: ids wait in a bounded queue; past it, they are dropped and counted
    (``dropped``). Ended sessions gather for ``interval_s`` so that one run covers many (up to
    ``RUN_SESSIONS``; more are run in parts, one after the other). A run that
    raises is logged and counted (``errors``), never passed on: the worker must not take the agent
    down with it. ``cpu_share`` below 1 makes it rest after each run in proportion to the CPU the run
    took, since its Python holds the GIL the writer needs.
    """

    what = "work"
    """What a run does, for the log ("online detection")."""

    def __init__(self, db: str | os.PathLike[str] | None, *, interval_s: float, max_pending: int,
                 cpu_share: float = 1.0) -> None:
        import queue
        import threading

        self.db_path = tracer.default_db_path(db)
        self._interval_s = interval_s
        self._cpu_share = cpu_share
        self._pending: queue.Queue[str] = queue.Queue(max_pending)
        self._idle = threading.Condition()
        self._busy = 0
        self._closed = threading.Event()
        self.dropped = self.errors = 0
        self._thread = threading.Thread(target=self._loop, name=f"flightrec-{type(self).__name__}", daemon=True)
        self._thread.start()

    def run(self, store: tracer.Store, session_ids: list[str]) -> None:
        """One run over the sessions gathered (in the worker's thread)."""
        raise NotImplementedError

    def __call__(self, session_ids: list[str]) -> None:
        import queue

        for sid in session_ids:
            try:
                self._pending.put_nowait(sid)
            except queue.Full:
                self.dropped += 1
            else:
                with self._idle:
                    self._busy += 1

    def _loop(self) -> None:
        import queue

        store: tracer.Store | None = None
        try:
            while not self._closed.is_set() or not self._pending.empty():
                try:
                    ids = [self._pending.get(timeout=0.1)]
                except queue.Empty:
                    continue
                deadline = time.monotonic() + self._interval_s
                while time.monotonic() < deadline and not self._closed.is_set():
                    try:  # a short wait, so that close() is heard within 0.1 s
                        ids.append(self._pending.get(timeout=min(max(deadline - time.monotonic(), 0.01), 0.1)))
                    except queue.Empty:
                        pass
                while True:
                    try:
                        ids.append(self._pending.get_nowait())
                    except queue.Empty:
                        break
                unique = list(dict.fromkeys(ids))
                for first in range(0, len(unique), RUN_SESSIONS):
                    store = self._run_part(store, unique[first:first + RUN_SESSIONS])
                with self._idle:
                    self._busy -= len(ids)
                    self._idle.notify_all()
        finally:
            if store is not None:
                store.close()

    def _run_part(self, store: tracer.Store | None, session_ids: list[str]) -> tracer.Store | None:
        """``run`` over some of the sessions gathered, then the rest ``cpu_share`` asks for; returns the
        store, opened on the first call. A run that runs out of DuckDB's memory is tried once more: beside
        a sustained load, 1 run in about 30 failed so at ``RUN_MEMORY_MB``, the writer's rows filling what
        was lent (benchmarks/RESULTS.md §75)."""
        started = time.thread_time()
        for tries_left in (1, 0):
            try:
                store = store or tracer.Store(self.db_path)
                with store.lend_memory(RUN_MEMORY_MB):
                    self.run(store, session_ids)
            except tracer.StoreMemoryError:
                if tries_left:
                    log.info("flightrec: %s ran out of memory for %d sessions; trying once more", self.what,
                             len(session_ids))
                    continue
                self._failed(session_ids)
            except Exception:
                self._failed(session_ids)
            break
        if self._cpu_share < 1.0:
            self._closed.wait((time.thread_time() - started) * (1 / self._cpu_share - 1))
        return store

    def _failed(self, session_ids: list[str]) -> None:
        self.errors += 1
        log.warning("flightrec: %s failed for %d sessions", self.what, len(session_ids), exc_info=True)

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Waits until every session handed over so far has been looked at; false on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: self._busy <= 0, timeout=timeout_s)

    def close(self, timeout_s: float = 30.0) -> None:
        """Works on what is pending at once (without waiting out the interval), then stops the thread."""
        self._closed.set()
        self._thread.join(timeout_s)


class OnlineDetector(SessionWorker):
    """Runs the detectors on sessions as they end, on its own thread, and publishes what is new.

    Pass it to the recorder (``tracer.Recorder(db, on_sessions_ended=OnlineDetector(db))``) or to
    ``flightrec serve``: the exporter hands it the ids of sessions it has just committed, and it
    never blocks the exporter (``SessionWorker``: if it falls behind, the oldest are dropped and
    counted, and ``flightrec detect`` finds them later).

    Args:
        db: The store the sessions are written to (this process must be its writer).
        config: Thresholds.
        publish: Called with each run's new or repeated alerts (``Dispatcher.publish``).
        interval_s: How long ended sessions gather before a run, so that one run covers many.
        origins: The origins of the sessions it judges (``Scope.origins``; default production).
    """

    what = "online detection"

    def __init__(self, db: str | os.PathLike[str] | None = None, *, config: DetectConfig | None = None,
                 publish: Callable[[list[Alert]], None] | None = None, interval_s: float = 1.0,
                 max_pending: int = 10_000, origins: tuple[str, ...] | None = Scope.origins) -> None:
        self.config = config or DetectConfig()
        self._publish = publish
        self._origins = Scope(origins=origins).origins  # checked here, not on the thread
        self.runs = self.alerts = 0
        super().__init__(db, interval_s=interval_s, max_pending=max_pending)

    def run(self, store: tracer.Store, session_ids: list[str]) -> None:
        result = detect(store, scope=Scope(session_ids=tuple(session_ids), origins=self._origins), config=self.config)
        self.runs += 1
        self.alerts += len(result.alerts)
        if result.alerts and self._publish is not None:
            self._publish(result.alerts)


SERVE_INTERVAL_S = 10.0
"""How long ``flightrec serve`` gathers ended sessions before one detection run. A run costs about
0.3 s of CPU on a 63,000-span store however few sessions it covers (its queries scan the tables):
run every second, detection took about a fifth of the collector's CPU under load
(benchmarks/RESULTS.md §22). Every 10 s, an alert comes up to about 10 s after its session ended."""


def serve_hook(db: str) -> OnlineDetector:
    """``flightrec serve``'s online detection: the default thresholds, new alerts to the console,
    one run every ``SERVE_INTERVAL_S`` while sessions end."""
    dispatcher = Dispatcher([ConsoleSink()])
    return OnlineDetector(db, publish=dispatcher.publish, interval_s=SERVE_INTERVAL_S)
