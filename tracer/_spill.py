"""The spill: what the embedded exporter has not committed yet, in append-only files beside the store.

The exporter's writer can fall seconds behind a busy agent, and a ``kill -9`` of the agent's process
would lose whatever it had not committed. So the agent's thread appends every ended span to a spill
file before it queues the span for the writer, with one ``os.write``: from then on the span is in
the operating system's page cache, which outlives the process (not the machine: a power cut or a
kernel crash can lose what was not yet on disk). The next process that opens the store for writing
(a ``Recorder``, ``flightrec serve``, a CLI command that writes) stores what a dead process spilled.

``flightrec serve`` uses it too, only while DuckDB checkpoints (``_collector.py``): it acknowledges
what it takes meanwhile once appended and synced (``Spill.sync``), and commits it after the checkpoint.

Layout: a directory ``<db>.spill/`` (mode 0700: spans carry prompts) with segment files
``<pid>-<token>-<n>.spill``. A segment starts with a header (the format's magic line, then the
``SpanRecord`` field names, pickled), then one record per span: its length (4 bytes, little endian)
and the span's fields, pickled. Pickle keeps every value's type (tuples, bytes, big ints), so that
a recovered span is the ``SpanRecord`` the writer would have built; it is read back with no class
allowed (only str, int, float, bool, None, bytes, tuple, list and dict can come back), so that a
tampered file cannot run code.

Who owns what: the process that writes a segment holds an exclusive ``flock`` on it until it
removes the segment, and the kernel releases the lock when the process dies, however it dies. A
segment is created under a ``.tmp`` name and renamed once locked, so that no one else can take an
unlocked segment for a dead process's. Recovery takes only segments it can lock, so it never reads
a live process's spill, and it runs in the process that holds the store's DuckDB lock (the single
writer), under the segment's lock, so that two processes never recover the same segment.

When a segment is removed: the writer releases the spans it commits, and a segment whose spans
are all committed is emptied (the segment being written) or removed (an older one). A new
segment starts past ``SEGMENT_BYTES``, so a busy agent's spill stays near what the writer has not
caught up with. Spans the writer could not store (the store locked by another process, a write
that failed) stay in the spill when the process ends, and the next open stores them. A span that
is in the store already (its process committed it, then died before it emptied the segment) is
stored once: the store drops spans it has (``Store.write``).

A record cut short by the kill is skipped, and so is any record that does not unpickle into a
span's fields (a tail garbled by a machine crash): recovery never fails the open that runs it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import logging
import os
import pickle
import struct
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from ._errors import FlightrecError
from ._ingest import Batch, Ingestor, SpanRecord
from ._lake import cache_dir, is_lake
from ._validate import check

if TYPE_CHECKING:
    from ._store import Store

try:
    import fcntl
except ImportError:  # Windows: no spill there (the exporter works as before, in memory only)
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger("flightrec")

SUFFIX = ".spill"
SEGMENT_BYTES = 16 * 1024 * 1024
"""Size past which the next span starts a new segment."""
_MAGIC = b"flightrec-spill 1\n"
_LENGTH = struct.Struct("<I")
_FIELDS = tuple(f.name for f in dataclasses.fields(SpanRecord))
_NAMES = pickle.dumps(_FIELDS, protocol=5)
_HEADER = _MAGIC + _LENGTH.pack(len(_NAMES)) + _NAMES
"""What a segment starts with: the format, then the names of the fields each record holds, in order."""
_RECOVER_SPANS = 2_000
"""Spans recovered per transaction."""


def spill_dir(db: str | os.PathLike[str]) -> Path:
    """Where the spill of the store ``db`` lives: ``<db>.spill/`` beside it; for a lake, which has no
    file to sit beside, in flightrec's cache on this machine, under a digest of the URL."""
    if is_lake(os.fspath(db)):
        digest = hashlib.sha256(os.fspath(db).encode()).hexdigest()[:16]
        spills = cache_dir() / "spill"
        # Made here, not by the spill: beside a file, a missing directory is a mistyped path that
        # must not be made (the store would then be made there too).
        spills.mkdir(parents=True, exist_ok=True)
        return spills / (digest + SUFFIX)
    return Path(os.path.abspath(os.fspath(db)) + SUFFIX)


class _Plain(pickle.Unpickler):
    """Unpickles plain values only: a spill record names no class."""

    def find_class(self, module: str, name: str) -> None:  # type: ignore[override]
        raise pickle.UnpicklingError(f"{module}.{name} is not a plain value")


@dataclasses.dataclass(eq=False)
class Segment:
    """One spill file of this process, and how many of its spans the writer has not committed."""

    path: Path
    fd: int
    size: int
    """Bytes in the file."""
    before: int = 0
    """Its size before the last span appended, for ``Spill.undo``."""
    pending: int = 0
    """Spans in it that the writer has not committed."""


class Spill:
    """This process's spill for one store. The exporter appends on the agent's thread and releases
    on the writer's; ``lock`` serialises them.

    Nothing here raises: a spill that cannot be written (a directory that cannot be made, a full
    disk) is turned off with one warning, and spans then wait in memory only, as without a spill.

    Args:
        directory: The spill directory (``spill_dir(db)``); made on the first span.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.lock = threading.Lock()
        self._pid = os.getpid()
        self._token = uuid.uuid4().hex[:8]
        self._segments: list[Segment] = []
        self._made = 0
        """Segments made so far: the next one's number in its name."""
        self._synced_made = 0
        """``_made`` at the last ``sync``."""
        self._off = fcntl is None

    def append(self, record: SpanRecord) -> Segment | None:
        """Writes one span; returns its segment, or ``None`` when the spill is off. Hold ``lock``."""
        # A forked child shares the parent's files and locks: it must not write into them.
        if self._off or os.getpid() != self._pid:
            return None
        data = pickle.dumps(tuple(getattr(record, f) for f in _FIELDS), protocol=5)
        try:
            segment = self._segments[-1] if self._segments else None
            if segment is None or segment.size > SEGMENT_BYTES:
                segment = self._new_segment()
            written = os.writev(segment.fd, (_LENGTH.pack(len(data)), data))
            if written != _LENGTH.size + len(data):  # a full disk: cut the partial record off
                os.ftruncate(segment.fd, segment.size)
                raise OSError(f"only {written} of {_LENGTH.size + len(data)} bytes were written")
        except (OSError, struct.error) as exc:
            self._turn_off(exc)
            return None
        segment.before = segment.size
        segment.size += written
        segment.pending += 1
        return segment

    def sync(self) -> bool:
        """Flushes what was appended to the disk (``fsync``), for an appender that answers for the spans
        once it returns (the collector); whether the spill holds them. Hold ``lock``."""
        if self._off:
            return False
        try:
            for segment in self._segments:
                os.fsync(segment.fd)
            if self._made != self._synced_made:  # a new segment's name too, which a machine crash could lose
                fd = os.open(self.directory, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
                self._synced_made = self._made
        except OSError as exc:
            self._turn_off(exc)
            return False
        return True

    def undo(self, segment: Segment) -> None:
        """Takes back the span ``append`` just wrote to ``segment``; hold ``lock`` from one to the other."""
        try:
            os.ftruncate(segment.fd, segment.before)
        except OSError as exc:  # the span stays: recovery stores it (once) at the next open
            log.debug("flightrec: taking a span back from the spill failed: %s", exc)
        else:
            segment.size = segment.before
        segment.pending -= 1

    def release(self, segments: dict[Segment, int]) -> None:
        """The writer committed this many spans of each segment: empties or removes the segments
        that hold nothing uncommitted any more."""
        with self.lock:
            for segment, n in segments.items():
                segment.pending -= n
                if segment.pending > 0 or segment not in self._segments:
                    continue
                try:
                    if segment is self._segments[-1]:
                        os.ftruncate(segment.fd, len(_HEADER))
                        segment.size = len(_HEADER)
                    else:
                        self._segments.remove(segment)
                        segment.path.unlink()
                        os.close(segment.fd)
                except OSError as exc:  # left for recovery, which stores the spans once
                    log.debug("flightrec: emptying a spill segment failed: %s", exc)

    def close(self) -> int:
        """Removes the segments whose spans are all committed, and leaves the others (and their
        spans) to the next open of the store. Returns how many spans it left."""
        with self.lock:
            left = 0
            for segment in self._segments:
                left += segment.pending
                try:
                    if not segment.pending:
                        segment.path.unlink()
                    os.close(segment.fd)
                except OSError as exc:
                    log.debug("flightrec: closing a spill segment failed: %s", exc)
            self._segments = []
            self._off = True
            try:
                self.directory.rmdir()
            except OSError:
                pass  # not empty, or never made
            return left

    # -- internals ---------------------------------------------------------------------------

    def _new_segment(self) -> Segment:
        path = self.directory / f"{self._pid}-{self._token}-{self._made:06d}{SUFFIX}"
        self._made += 1
        try:
            segment = self._create(path)
        except (FileNotFoundError, BlockingIOError):
            # Once more: another process may have removed the directory as it emptied it, or taken
            # the .tmp file for a dead process's in the moment before it was locked.
            segment = self._create(path)
        self._segments.append(segment)
        return segment

    def _create(self, path: Path) -> Segment:
        """A new segment at ``path``, locked, with its header; under a .tmp name until it is locked."""
        self.directory.mkdir(mode=0o700, exist_ok=True)
        partial = path.with_suffix(".tmp")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.write(fd, _HEADER)
            os.rename(partial, path)
        except BaseException:
            os.close(fd)
            partial.unlink(missing_ok=True)
            raise
        return Segment(path, fd, len(_HEADER))

    def _turn_off(self, exc: Exception) -> None:
        self._off = True
        log.warning("flightrec: cannot write the spill in %s (%s). Spans wait in memory only until they are "
                    "stored, and a kill of this process loses those not yet stored; check that the directory "
                    "is writable and the disk has room.", self.directory, exc)


def read_segment(data: bytes) -> Iterator[SpanRecord]:
    """The spans of a segment's bytes, in the order they ended. Stops at the first record that is
    cut short or does not unpickle into a span (the tail a kill or a crash may leave)."""
    fields = None
    at = len(_MAGIC)
    if data[:at] == _MAGIC:
        fields = _record(data, at)
    if not isinstance(fields, tuple) or not all(isinstance(f, str) for f in fields):
        return
    at += _LENGTH.size + _LENGTH.unpack_from(data, len(_MAGIC))[0]
    known = set(_FIELDS)
    while True:
        values = _record(data, at)
        if not isinstance(values, tuple) or len(values) != len(fields):
            return
        at += _LENGTH.size + _LENGTH.unpack_from(data, at)[0]
        try:
            yield SpanRecord(**{k: v for k, v in zip(fields, values) if k in known})
        except TypeError:  # a field this version needs is missing
            return


def _record(data: bytes, at: int) -> object:
    """The value pickled in the record at ``at``, or ``None`` when there is no whole, plain one."""
    if at + _LENGTH.size > len(data):
        return None
    (n,) = _LENGTH.unpack_from(data, at)
    start = at + _LENGTH.size
    if start + n > len(data):
        return None
    try:
        return _Plain(io.BytesIO(memoryview(data)[start:start + n])).load()
    except Exception:  # any garbage: the unpickler raises many kinds
        return None


def recover(store: Store) -> int:
    """Stores the spans that dead processes spilled beside ``store``, and removes their segments.

    Called when a store is opened for writing. Segments that a live process holds are left alone.
    Never raises: a segment that cannot be read or stored is left for the next open, and logged.

    Returns:
        The number of spans recovered.
    """
    directory = spill_dir(store.path)
    if fcntl is None or not directory.is_dir():
        return 0
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return 0
    recovered = 0
    ingestor = Ingestor()
    for name in names:
        path = directory / name
        if not name.endswith((SUFFIX, ".tmp")):
            continue
        try:
            fd = os.open(path, os.O_RDWR)
        except OSError:  # removed meanwhile by its owner
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # its process is alive and writes it
            if os.fstat(fd).st_nlink == 0:
                continue  # removed while this waited for it
            if name.endswith(".tmp"):  # a process died while it made the segment: nothing in it
                path.unlink()
                continue
            with open(fd, "rb", closefd=False) as f:
                data = f.read()
            # Checked as the exporter checks them: what it would have dropped is dropped here too.
            records, unstorable = [], Counter()
            for r in read_segment(data):
                reason = check(r, Counter(), from_sdk=True)
                if reason is None:
                    records.append(r)
                else:
                    unstorable[reason] += 1
            if unstorable:
                log.warning("flightrec: %d span(s) of the spill %s can never be stored (%s); they are skipped.",
                            unstorable.total(), name, ", ".join(unstorable))
            n = _store_all(store, ingestor, records, name)
            if n is None:
                continue
            recovered += n
            path.unlink()
        except Exception:  # never into the open that called it
            log.warning("flightrec: recovering the spill %s failed; it is kept for the next open", path,
                        exc_info=True)
        finally:
            os.close(fd)
    try:
        directory.rmdir()
    except OSError:
        pass  # a live process's segments are there
    if recovered:
        log.warning("flightrec: stored %d span(s) that a process which ended without writing them had kept in %s.",
                    recovered, directory)
    return recovered


def _store_all(store: Store, ingestor: Ingestor, records: list[SpanRecord], name: str) -> int | None:
    """Stores ``records`` in transactions of ``_RECOVER_SPANS``. Returns how many were stored, or
    ``None`` when the store itself failed (the segment is then kept for the next open)."""
    stored = 0
    for i in range(0, len(records), _RECOVER_SPANS):
        chunk = records[i:i + _RECOVER_SPANS]
        if _write(store, ingestor, chunk) is None:
            stored += len(chunk)
            continue
        # A span that can never be stored must not keep the others out: each is stored alone.
        failures = [failed for r in chunk if (failed := _write(store, ingestor, [r])) is not None]
        stored += len(chunk) - len(failures)
        if len(failures) == len(chunk) and all(isinstance(f, FlightrecError) for f in failures):
            log.warning("flightrec: the spill %s cannot be stored now (%s); it is kept for the next open.",
                        name, failures[0])
            return None
        if failures:
            log.warning("flightrec: %d span(s) of the spill %s cannot be stored (%s); they are skipped.",
                        len(failures), name, failures[0])
    return stored


def _write(store: Store, ingestor: Ingestor, records: list[SpanRecord]) -> Exception | None:
    """Commits ``records`` in one transaction; the error when it failed (nothing was stored)."""
    batch = Batch()
    try:
        store.write(ingestor.build(records, batch))
    except Exception as exc:
        ingestor.rollback(batch)
        return exc
    return None
