"""The read API of ``flightrec serve``: while serve holds a store file, other processes on this
machine read it through serve (``tracer.connect``), with the same results as from the file.

``POST /flightrec/v1/store`` takes ``{"method", "kwargs", "path"}``, calls that ``Store`` method
(one of ``READS`` or ``WRITES``) on serve's own connection, or one of ``MAINTENANCE`` on its
writer's thread between two commits, and answers its result as JSON
(``_connect.py`` parses it back by the method's return annotation). ``path`` is the file as the
caller named it, so that messages name it as a direct read would. A method's own error (an
unknown session …) is answered 422 with its class and message, for the caller to raise.

It listens on 127.0.0.1 whatever interface the collector binds, so only this machine reaches
it, and each request must carry the token from the holder file, which only this user can read.
"""

from __future__ import annotations

import copy
import functools
import hmac
import json
import logging
import os
import secrets
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError

from ._connect import MAINTENANCE, PATH, READS, WRITES, hints, result_adapter, signature
from ._errors import FlightrecError, validation_problems
from ._holder import Holder, remove_holder, write_holder
from ._store import Store, default_db_path

log = logging.getLogger("flightrec.read_api")

_MAX_REQUEST = 64 * 1024
"""A request names a method and a few scalar arguments; anything larger is not one."""


class _Request(BaseModel):
    method: str
    """The ``Store`` method to call."""
    kwargs: dict[str, Any] = {}
    """Its arguments, by name."""
    path: str
    """The store file as the caller named it."""


class ReadApi:
    """Serves a store's read methods to this machine's other processes while this process holds
    the file, and says so in the holder file (``<db>.serve.json``) until ``close()``.

    Args:
        db: The store; this process should already hold it (the collector), so that opening it
            here joins the same database.
        collector_url: Where agents send OTLP, for the messages of processes that find the file
            locked.
        maintain: Runs a function of the store on the writer's thread (``Collector.maintain``),
            for the methods in ``MAINTENANCE``; without it, they are not served.

    Threading: requests run on their own threads, one ``Store`` call at a time on a connection
    of its own, so a long read does not hold up the collector's commits.
    """

    def __init__(self, db: str | os.PathLike[str] | None, *, collector_url: str,
                 maintain: Callable[[Callable[[Store], Any]], Any] | None = None) -> None:
        self.db_path = default_db_path(db)
        self.maintain = maintain
        self.store = Store(self.db_path)
        self.token = secrets.token_urlsafe(32)
        self.collector_url = collector_url
        api = self

        class Handler(_Handler):
            owner = api

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> ReadApi:
        """Serves on a background thread and writes the holder file; returns at once."""
        threading.Thread(target=self._server.serve_forever, name="flightrec-read-api", daemon=True).start()
        holder = Holder(pid=os.getpid(), url=self.collector_url, read_url=self.url, token=self.token)
        try:
            write_holder(self.db_path, holder)
        except OSError as exc:  # serve still collects; only other commands lose their way in
            log.warning("flightrec serve: cannot write the holder file beside %s (%s); other commands cannot read "
                        "it while serve runs", self.db_path, exc.strerror or exc)
        return self

    def close(self) -> None:
        """Removes the holder file, stops answering, and closes this connection to the store."""
        remove_holder(self.db_path)
        self._server.shutdown()
        self._server.server_close()
        self.store.close()

    def prepare(self, request: _Request) -> Callable[[], bytes]:
        """The call a request asks for, ready to run; it returns the result as JSON.

        Raises:
            TypeError: the method is not served, or its arguments are wrong.
        """
        method = request.method
        writer = method in MAINTENANCE and self.maintain is not None
        if method not in READS and method not in WRITES and not writer:
            raise TypeError(f"{method!r} is not a served Store method")
        view = copy.copy(self.store)  # the same connection and lock, under the caller's name for the file
        view.path = request.path
        signature(method).bind(view, **request.kwargs)
        adapters = _argument_adapters(method)
        kwargs = {}
        for name, value in request.kwargs.items():
            try:
                kwargs[name] = adapters[name].validate_python(value)
            except ValidationError as exc:
                raise TypeError(f"{method}() argument {name}: {validation_problems(exc, most=1)}") from None
        if writer:
            assert self.maintain is not None
            maintain, path = self.maintain, request.path

            def on_writer(store: Store) -> Any:
                named = copy.copy(store)  # the writer's connection, under the caller's name for the file
                named.path = path
                return getattr(named, method)(**kwargs)

            return lambda: result_adapter(method).dump_json(maintain(on_writer))
        return lambda: result_adapter(method).dump_json(getattr(view, method)(**kwargs))


@functools.cache
def _argument_adapters(method: str) -> dict[str, TypeAdapter[Any]]:
    return {name: TypeAdapter(t) for name, t in hints(method).items() if name != "return"}


class _Handler(BaseHTTPRequestHandler):
    owner: ReadApi
    protocol_version = "HTTP/1.1"  # keep-alive: a client makes many calls on one connection
    server_version = "flightrec-read-api"
    # A reply goes out as two writes (headers, body); with Nagle's algorithm the body waited for
    # the client's delayed ACK of the headers: 40 ms a call on a kept-alive connection.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the stdlib's name)
        log.debug("%s " + format, self.address_string(), *args)  # never content, never at INFO

    def _reply(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, error: str, message: str) -> None:
        self._reply(status, json.dumps({"error": error, "message": message}).encode(), "application/json")

    def do_POST(self) -> None:  # noqa: N802 (the stdlib's name)
        length = self.headers.get("Content-Length", "")
        if not length.isdigit() or int(length) > _MAX_REQUEST:
            self.close_connection = True
            self._json(413, "", f"a request needs a Content-Length of at most {_MAX_REQUEST} bytes")
            return
        body = self.rfile.read(int(length))
        if self.path != PATH:
            self._json(404, "", f"no read API at {self.path}: POST to {PATH}")
            return
        given = self.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {self.owner.token}".encode()):
            self._json(401, "", "missing or wrong token: send the one in the store's holder file "
                                "(<db>.serve.json) as Authorization: Bearer <token>")
            return
        try:
            call = self.owner.prepare(_Request.model_validate_json(body))
        except ValidationError as exc:
            self._json(400, "", f"bad request: {validation_problems(exc, most=1)}")
            return
        except TypeError as exc:
            self._json(400, "", f"bad request: {exc}")
            return
        try:
            result = call()
        except FlightrecError as exc:
            self._json(422, type(exc).__name__, str(exc))
        except Exception as exc:  # a bug must fail this request, not serve
            log.exception("flightrec read API: %s failed", body[:200])
            self._json(500, "", f"the read failed in serve ({type(exc).__name__}); its log has the details")
        else:
            self._reply(200, result, "application/json")
