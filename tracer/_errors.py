"""Errors raised by the tracer and the store.

Every error a user can meet derives from one root, says what went wrong and what to do next,
and is printed by the CLI without a traceback::

    FlightrecError
    ├── ConfigError              bad configuration (content mode, flightrec.toml, price file, redactor)
    ├── StoreError               the DuckDB file cannot be used
    │   ├── StoreLockedError     another process holds the file's lock
    │   ├── SchemaTooNewError    the file was written by a newer flightrec
    │   └── UnstorableError      a write holds a value the schema cannot take (the data's fault, not the file's)
    ├── UnknownSessionError      no session with that id in the store
    ├── UnknownEvalRunError      no eval run with that id or label in the store
    ├── UnknownAlertError        no alert with that id in the store
    ├── NotRebuildableError      a stored call cannot be rebuilt (content not captured, other instrumentation)
    └── OtlpError                an OTLP request the collector cannot take (its .status: 400, 413, 415)

DuckDB errors are mapped to these at the store boundary (``_store.py``); nothing above it sees
a ``duckdb.Error``. pydantic's errors are written for a person by ``validation_problems``, for
every package that validates user input.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic import ValidationError

    from ._holder import Holder


class FlightrecError(Exception):
    """Root of every flightrec error. The message is meant for the user, as is."""


class ConfigError(FlightrecError):
    """A configuration value is invalid."""


class StoreError(FlightrecError):
    """The trace store cannot be opened, read or written."""


class StoreLockedError(StoreError):
    """Another process holds the lock on the store file."""

    def __init__(self, message: str, *, holder: Holder | None = None) -> None:
        super().__init__(message)
        self.holder = holder
        """The ``flightrec serve`` that holds it, when one does (``tracer.connect`` reads through it)."""


class StoreInvalidatedError(StoreError):
    """DuckDB invalidated the store after a fatal error (a checkpoint or a commit that ran out of the
    memory it is let, a failing disk): the process can write nothing more to it until it opens the file
    again, which replays the log. What was committed is in that log."""


class StoreMemoryError(StoreError):
    """A read ran out of the memory DuckDB is let (``Store.limit_memory``): beside a writer, whose rows
    share that memory, the same read may pass when tried again."""


class SchemaTooNewError(StoreError):
    """The store was written by a newer flightrec than this one."""


class UnstorableError(StoreError):
    """A write failed on its data (a value out of a column's range, a NULL where none may be): writing
    the same data again fails the same way, whereas another ``StoreError`` may pass on a retry."""


class UnknownSessionError(FlightrecError):
    """No session with the given id exists in the store."""


class NotRebuildableError(FlightrecError):
    """A stored LLM call cannot be rebuilt exactly, for example because content was not captured."""


class UnknownEvalRunError(FlightrecError):
    """No stored eval run matches the id, prefix or label."""


class UnknownAlertError(FlightrecError):
    """No stored alert matches the id or prefix."""


def validation_problems(exc: ValidationError, *, most: int | None = None) -> str:
    """pydantic's errors as one line a person can act on: ``where: what`` for each of the first
    ``most`` (all by default), joined by ``; ``.

    ``where`` is the dotted path of the value (left out for the value as a whole); an unknown key is
    an ``unknown setting``, and a validator's message is its own, without pydantic's ``Value error, ``.
    """
    parts = []
    for e in exc.errors()[:most]:
        where = ".".join(map(str, e["loc"]))
        what = "unknown setting" if e["type"] == "extra_forbidden" else str(e["msg"]).removeprefix("Value error, ")
        parts.append(f"{where}: {what}" if where else what)
    return "; ".join(parts)
