"""Where the dashboard's data comes from: one store per process, shared by every browser session.

Two modes, set by the process that starts the dashboard:

- ``read_only`` (``flightrec dashboard``): the file is opened read-only, so the dashboard can sit
  beside a store that no agent is writing. A page that writes (acknowledging an alert, recording
  a replay) closes the read-only handle, does its write through the normal APIs, and reopens it:
  DuckDB allows one configuration per file per process, so the two cannot be open at once.
- ``shared`` (``flightrec serve``): the collector in this process is the file's writer; the
  dashboard opens a connection to the same database (DuckDB shares the instance within a process),
  sees every commit as it lands, and writes beside the collector. An agent a page runs (an
  approval's decision carries its session on) sends its spans to that collector, as any agent does.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Literal

import tracer

if TYPE_CHECKING:  # `flightrec serve --no-dashboard` imports this package, and pandas would cost it 43 MB
    import pandas as pd

Mode = Literal["read_only", "shared"]

DB_ENV = "FLIGHTREC_DASHBOARD_DB"
"""The store the dashboard shows; set by ``flightrec dashboard`` and ``flightrec serve``."""
MODE_ENV = "FLIGHTREC_DASHBOARD_MODE"
"""``read_only`` or ``shared``."""
COLLECTOR_ENV = "FLIGHTREC_DASHBOARD_COLLECTOR"
"""In ``shared`` mode, the URL of serve's collector, which an agent run from a page sends its spans to."""


class Source:
    """The dashboard's store. Reads are thread-safe (``Store`` serialises them); writes hold an
    exclusive lock so that no read runs while the read-only handle is swapped out."""

    def __init__(self, db: str, mode: Mode, collector: str | None = None) -> None:
        self.db_path = tracer.default_db_path(db)
        self.mode: Mode = mode
        self.collector = collector
        """Serve's collector (``shared`` mode)."""
        self._lock = threading.RLock()
        self._store: tracer.Store | None = None
        self.generation = 0
        """Bumped after every write, so that cached query results are keyed past it."""

    @property
    def live(self) -> bool:
        """Whether agents may be writing while the dashboard is open (serve mode)."""
        return self.mode == "shared"

    def store(self) -> tracer.Store:
        with self._lock:
            if self._store is None:
                self._store = tracer.Store(self.db_path, read_only=self.mode == "read_only")
            return self._store

    def frame(self, query: str, params: list[Any] | None = None) -> pd.DataFrame:
        """A read query's rows as a DataFrame."""
        with self._lock:
            return self.store().frame(query, params)

    @contextmanager
    def writing(self) -> Iterator[tracer.Store]:
        """A writable store, for ``Store.set_alert_status`` or ``replay.run(db=store)``: the shared
        one in serve mode, or, in read-only mode, the file opened for writing with the read-only
        handle closed until the write is done.

        Raises:
            tracer.StoreLockedError: in read-only mode, another process is writing the file.
        """
        with self._lock:
            try:
                if self.mode == "shared":
                    yield self.store()
                else:
                    self.close()
                    with tracer.Store(self.db_path) as store:
                        yield store
            finally:
                self.generation += 1

    @contextmanager
    def recording(self) -> Iterator[tracer.Recorder]:
        """A recorder for an agent that a page runs (an approval's decision carries its session on),
        flushed when the block ends. In serve mode it sends to serve's collector, the file's one
        writer; in read-only mode it writes the file, with the read-only handle closed meanwhile.

        Raises:
            tracer.StoreLockedError: in read-only mode, another process is writing the file.
            tracer.ConfigError: in serve mode, the collector's URL was not handed to the dashboard.
        """
        with self._lock:
            try:
                if self.mode == "shared":
                    if not self.collector:
                        raise tracer.ConfigError(f"the dashboard shares the store with a collector but was not told "
                                                 f"its URL (${COLLECTOR_ENV}); start it with `flightrec serve`.")
                    recorder = tracer.Recorder(endpoint=self.collector)
                else:
                    self.close()
                    # The recorder would drop the spans of a file another process holds (tracing never
                    # breaks an agent): a holder is named here, before the agent acts.
                    tracer.Store(self.db_path).close()
                    recorder = tracer.Recorder(self.db_path)
                try:
                    yield recorder
                finally:
                    recorder.shutdown()
            finally:
                self.generation += 1

    def close(self) -> None:
        with self._lock:
            if self._store is not None:
                self._store.close()
                self._store = None


_sources: dict[tuple[str, str], Source] = {}
_sources_lock = threading.Lock()


def current() -> Source:
    """The source this process was started with (``$FLIGHTREC_DASHBOARD_DB`` or ``$FLIGHTREC_DB``)."""
    db = tracer.default_db_path(os.environ.get(DB_ENV) or None)
    mode = os.environ.get(MODE_ENV, "read_only")
    if mode not in ("read_only", "shared"):
        raise tracer.ConfigError(f"${MODE_ENV} is {mode!r}; use read_only or shared.")
    with _sources_lock:
        key = (db, mode)
        if key not in _sources:
            _sources[key] = Source(db, mode, os.environ.get(COLLECTOR_ENV) or None)  # type: ignore[arg-type]
        return _sources[key]
