"""A private PostgreSQL server, for tests and benchmarks of a lake (a catalog per database): a
cluster under a temp dir, on a random loopback port, stopped by ``stop()``. The binaries come from
the machine (Debian's ``postgresql``); ``initdb`` refuses to run as root, so as root the server runs
as the ``postgres`` user."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

USER = "flightrec"


def postgres_binaries() -> Path | None:
    """The directory holding ``initdb`` and ``pg_ctl``: on the PATH, else Debian's newest."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return Path(versions[-1]).parent if versions else None


class PrivatePostgres:
    """One running cluster; ``database()`` makes a fresh database and returns its libpq conninfo."""

    def __init__(self, bin_dir: Path) -> None:
        # Under /tmp itself, not pytest's temp dir: as root, the server's user must reach the directory.
        root = Path(tempfile.mkdtemp(prefix="flightrec-postgres-"))
        self.root, self.bin = root, bin_dir
        self.data = root / "data"
        with socket.socket() as s:  # a free port now; the server binds it a moment later
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self._count = 0
        self._as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self._as:
            shutil.chown(root, "postgres")
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", USER, "--no-sync")
        # fsync off: a test's server need not survive a power cut, and the tests run faster.
        self._run("pg_ctl", "-D", str(self.data), "-l", str(root / "log"), "-w", "start", "-o",
                  f"-p {self.port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200")

    def _run(self, tool: str, *args: str) -> None:
        done = subprocess.run([*self._as, str(self.bin / tool), *args], capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"{tool} failed ({done.returncode}): {done.stderr or done.stdout}")

    def database(self) -> str:
        self._count += 1
        name = f"lake{self._count}"
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", USER, name)
        return f"dbname={name} host=127.0.0.1 port={self.port} user={USER}"

    def stop(self) -> None:
        subprocess.run([*self._as, str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)
