"""Opening a store for a command: the file itself, or, while ``flightrec serve`` holds it, that
serve's read API (``_read_api.py``), which runs the same ``Store`` methods on its own connection.

Results cross the wire as JSON, serialised and parsed by the method's return annotation on both
sides, so a caller gets the same records it would get from the file.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
from typing import Any, get_type_hints
from urllib.parse import urlsplit

from pydantic import TypeAdapter

from . import _errors
from ._errors import FlightrecError, StoreError, StoreLockedError
from ._holder import Holder
from ._store import Store, default_db_path

PATH = "/flightrec/v1/store"
"""Where the read API answers."""
READS = frozenset({
    "alerts", "audit_entries", "call_outlines", "call_parts", "count_sessions", "eval_results", "eval_runs",
    "find_eval_run", "get_alert", "get_session", "list_sessions", "outcomes", "rebuild_request", "reviews",
    "session_account", "session_runs", "session_scores", "session_tree", "verify_requests",
})
"""The ``Store`` methods the read commands call (traces, replay show/diff/verify/rerun/run, eval
list/show/compare/add-case, alerts list/show, audit list). Raw SQL (``sql``, ``frame``) is not served: no
command needs it."""
WRITES = frozenset({"audit", "label_eval_run", "queue_reviews", "record_outcome", "review_session",
                    "set_alert_status"})
"""Writes that are one small ``Store`` call each, so the holder makes them for the caller (the
audit log's entries among them: serve is the file's one writer)."""
MAINTENANCE = frozenset({"checkpoint", "delete_session", "prune_step"})
"""Writes that remove data (``_retention.py``): the holder's writer makes them between its commits,
so that they never remove content a batch being written refers to."""


@functools.cache
def hints(method: str) -> dict[str, Any]:
    """A served method's parameter and return types, which both ends of the wire go by."""
    return get_type_hints(getattr(Store, method))


@functools.cache
def signature(method: str) -> inspect.Signature:
    return inspect.signature(getattr(Store, method))


@functools.cache
def result_adapter(method: str) -> TypeAdapter[Any]:
    return TypeAdapter(hints(method)["return"])


def connect(db: str | os.PathLike[str] | None = None, *, read_only: bool = True) -> Store | ServedStore:
    """The store at ``db`` for a command that reads it (or makes one of ``WRITES``).

    Opens the file itself; while ``flightrec serve`` holds it, returns a ``ServedStore`` that
    asks that serve instead. Close it after use (or use it as a context manager), so that a
    writer can open the file.

    Raises:
        StoreLockedError: another process holds the file, and it is not a serve (or, with
            ``read_only``, one that only reads it): the message names it.
        StoreError: as ``Store``: no file there, or not a store.
    """
    path = default_db_path(db)
    try:
        return Store(path, read_only=read_only)
    except StoreLockedError as exc:
        if exc.holder is None:
            raise
        return ServedStore(path, exc.holder)


class ServedStore:
    """A store whose file a running ``flightrec serve`` holds, read through that serve.

    It has the ``Store`` methods in ``READS``, ``WRITES`` and ``MAINTENANCE``, with the same arguments and results;
    errors such as ``UnknownSessionError`` come back as themselves, naming ``path``. One
    keep-alive connection carries its calls, one at a time.
    """

    def __init__(self, path: str, holder: Holder) -> None:
        self.path = path
        self.holder = holder
        self._http: Any = None  # an http.client.HTTPConnection, made at the first call

    def __getattr__(self, name: str) -> Any:
        if name not in READS and name not in WRITES and name not in MAINTENANCE:
            raise AttributeError(f"Store.{name} is not served by flightrec serve's read API")
        bound_to = signature(name)

        def call(*args: Any, **kwargs: Any) -> Any:
            bound = bound_to.bind(self, *args, **kwargs)
            return self._call(name, {k: v for k, v in bound.arguments.items() if k != "self"})

        return call

    def _call(self, method: str, kwargs: dict[str, Any]) -> Any:
        import http.client  # only a command beside a serve needs it

        body = json.dumps({"method": method, "kwargs": kwargs, "path": self.path})
        try:
            if self._http is None:
                url = urlsplit(self.holder.read_url)
                self._http = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port)
            self._http.request("POST", PATH, body, {"Authorization": f"Bearer {self.holder.token}",
                                                    "Content-Type": "application/json"})
            response = self._http.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise StoreError(
                f"`flightrec serve` (PID {self.holder.pid}) holds {self.path}, but its read API at "
                f"{self.holder.read_url} did not answer ({exc or type(exc).__name__}). If that serve has just "
                "stopped, run the command again.") from None
        if response.status == 200:
            return result_adapter(method).validate_json(data)
        try:
            error = json.loads(data)
            kind, message = error["error"], error["message"]
        except (ValueError, KeyError, TypeError):
            kind, message = "", data.decode(errors="replace").strip()
        if response.status == 422:  # the method raised one of ours: raise it here, as the file would have
            cls = getattr(_errors, kind, None)
            raise (cls if isinstance(cls, type) and issubclass(cls, FlightrecError) else FlightrecError)(message)
        raise StoreError(f"`flightrec serve` (PID {self.holder.pid}) refused to read {self.path} for this command "
                         f"(HTTP {response.status}: {message}). Stop that serve to read the file directly.")

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None

    def __enter__(self) -> ServedStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

