"""Online detection: the detectors run on sessions as they end, on their own thread, in the
process that writes the store (an embedded recorder, or ``flightrec serve`` through ``serve_hook``)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import tracer

from ._alerts import Alert
from ._config import DetectConfig
from ._detect import detect
from ._scope import Scope
from ._sinks import ConsoleSink, Dispatcher


class OnlineDetector:
    """Runs the detectors on sessions as they end, on its own thread, and publishes what is new.

    Pass it to the recorder (``tracer.Recorder(db, on_sessions_ended=OnlineDetector(db))``) or to
    ``flightrec serve``: the exporter hands it the ids of sessions it has just committed, and it
    never blocks the exporter (ids wait in a bounded queue; if it falls behind, the oldest are
    dropped and counted, and ``flightrec detect`` finds them later).

    Args:
        db: The store the sessions are written to (this process must be its writer).
        config: Thresholds.
        publish: Called with each run's new or repeated alerts (``Dispatcher.publish``).
        interval_s: How long ended sessions gather before a run, so that one run covers many.
        origins: The origins of the sessions it judges (``Scope.origins``; default production).
    """

    def __init__(self, db: str | os.PathLike[str] | None = None, *, config: DetectConfig | None = None,
                 publish: Callable[[list[Alert]], None] | None = None, interval_s: float = 1.0,
                 max_pending: int = 10_000, origins: tuple[str, ...] | None = Scope.origins) -> None:
        import queue
        import threading

        self.db_path = tracer.default_db_path(db)
        self.config = config or DetectConfig()
        self._publish = publish
        self._interval_s = interval_s
        self._origins = Scope(origins=origins).origins  # checked here, not on the thread
        self._pending: queue.Queue[str] = queue.Queue(max_pending)
        self._idle = threading.Condition()
        self._busy = 0
        self._closed = threading.Event()
        self.runs = self.alerts = self.dropped = self.errors = 0
        self._thread = threading.Thread(target=self._loop, name="flightrec-detect", daemon=True)
        self._thread.start()

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
        import logging
        import queue

        log = logging.getLogger("flightrec.detect")
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
                try:
                    store = store or tracer.Store(self.db_path)
                    result = detect(store, scope=Scope(session_ids=tuple(dict.fromkeys(ids)), origins=self._origins),
                                    config=self.config)
                    self.runs += 1
                    self.alerts += len(result.alerts)
                    if result.alerts and self._publish is not None:
                        self._publish(result.alerts)
                except Exception:  # detection must never take the agent down with it
                    self.errors += 1
                    log.warning("flightrec: online detection failed for %d sessions", len(ids), exc_info=True)
                finally:
                    with self._idle:
                        self._busy -= len(ids)
                        self._idle.notify_all()
        finally:
            if store is not None:
                store.close()

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Waits until every session handed over so far has been looked at; false on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: self._busy <= 0, timeout=timeout_s)

    def close(self, timeout_s: float = 30.0) -> None:
        """Looks at what is pending at once (without waiting out the interval), then stops the thread."""
        self._closed.set()
        self._thread.join(timeout_s)


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
