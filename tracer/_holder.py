"""The holder file: how ``flightrec serve`` tells other processes that it holds a store file.

While it runs, serve writes ``<db>.serve.json`` beside the store (mode 0600: it carries the
token of its read API, ``_read_api.py``) and removes it on a clean exit. A process that finds
the file locked reads it to name the holder in its message, and to read through the holder
(``tracer.connect``). A file left by a serve that was killed is ignored: its process is gone, or
DuckDB names another process as the lock's holder.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel

SUFFIX = ".serve.json"


class Holder(BaseModel):
    """What a running ``flightrec serve`` says about itself in its holder file."""

    pid: int
    """The serve's process id (DuckDB names the same one as the lock's holder)."""
    url: str
    """The collector's URL, where agents send OTLP."""
    read_url: str
    """The read API's URL, on loopback."""
    token: str
    """The bearer token the read API requires."""


def holder_path(db: str) -> Path:
    return Path(db + SUFFIX)


def write_holder(db: str, holder: Holder) -> None:
    """Writes the holder file, readable by this user only, in one step (no reader sees half of it).

    Raises:
        OSError: the directory is not writable.
    """
    path = holder_path(db)
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(holder.model_dump_json())
    os.replace(partial, path)


def remove_holder(db: str) -> None:
    holder_path(db).unlink(missing_ok=True)


def find_holder(db: str, lock_pid: int | None) -> Holder | None:
    """The serve that holds ``db``, from its holder file; None when there is no such file, or it
    is unreadable, or it was left by a process that is gone or does not hold the lock."""
    try:
        holder = Holder.model_validate_json(holder_path(db).read_bytes())
    except (OSError, ValueError):  # pydantic's ValidationError is a ValueError
        return None
    if lock_pid is not None and holder.pid != lock_pid:
        return None
    try:
        os.kill(holder.pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:  # alive, and another user's
        pass
    return holder
