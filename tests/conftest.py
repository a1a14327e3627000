"""Shared fixtures: every test runs in its own temp dir with its own store, and no network."""

from __future__ import annotations

import fcntl
import os
import socket
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tracer._cli import main

DEMO_SESSIONS = 40


@dataclass(frozen=True)
class Demo:
    """What ``flightrec demo`` made: its store (the world file beside it) and what it printed."""

    db: Path
    output: str


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The files that read the demo store (``demo``, built once a run) run last, but for the first of
    them, which runs first: under pytest-xdist one worker builds the demo while the others run the
    rest, and no worker waits for it."""
    for item in items:
        if {"postgres", "lake_extensions"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.lake)  # `make test` runs these in the lake's venv
    readers = {item.path for item in items if "demo" in getattr(item, "fixturenames", ())}
    first = next((item.path for item in items if item.path in readers), None)
    items.sort(key=lambda item: 0 if item.path == first else 2 if item.path in readers else 1)


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """Points every data path at a temp dir, so no test touches ./flightrec.duckdb or the user's env."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FLIGHTREC_DB", str(tmp_path / "flightrec.duckdb"))
    monkeypatch.delenv("FLIGHTREC_PRICES", raising=False)
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("FLIGHTREC_WORLD", raising=False)
    monkeypatch.delenv("FLIGHTREC_SIM_URL", raising=False)
    monkeypatch.delenv("FLIGHTREC_MODEL_URL", raising=False)
    monkeypatch.delenv("FLIGHTREC_JUDGE_MODEL", raising=False)
    monkeypatch.delenv("FLIGHTREC_ACTOR", raising=False)
    monkeypatch.delenv("FLIGHTREC_CONTENT", raising=False)
    monkeypatch.delenv("FLIGHTREC_CONFIG", raising=False)
    monkeypatch.delenv("FLIGHTREC_RETAIN", raising=False)
    monkeypatch.delenv("FLIGHTREC_RETAIN_CONTENT", raising=False)
    # The CLI's tables fit the terminal: one width for every run (pytest-xdist's workers set COLUMNS=80).
    monkeypatch.setenv("COLUMNS", "100")


@pytest.fixture(scope="session")
def demo(tmp_path_factory) -> Demo:
    """Built once a run: ``flightrec demo --sessions 40 --no-serve`` (sessions, detectors, baseline and
    regressed eval runs). Read only: tests that write take a copy (the dashboard's ``store``).

    Under pytest-xdist the first worker that needs it builds it in the directory all workers' temp
    dirs share, holding a file lock; the others wait on the lock and read what it built."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    folder, output = root / "demo", root / "demo.txt"
    with open(root / "demo.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not output.exists():  # written last: a build that failed is built again, and fails there too
            folder.mkdir(exist_ok=True)
            result = CliRunner().invoke(main, ["demo", "--db", str(folder / "demo.duckdb"), "--sessions",
                                               str(DEMO_SESSIONS), "--no-serve"], catch_exceptions=False)
            assert result.exit_code == 0, result.output
            output.write_text(result.output)
    return Demo(folder / "demo.duckdb", output.read_text())


@pytest.fixture(scope="session")
def demo_store(demo) -> Path:
    """The demo's store (``demo``), for tests that only read it."""
    return demo.db


@pytest.fixture
def taken_port():
    """A loopback port something listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


@pytest.fixture
def memory():
    """A tracer provider whose finished spans are kept in memory, as other instrumentation's spans
    before an exporter sends them: ``(provider, exporter)``."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


def _lake_needs(postgres: bool) -> None:
    """Skips a lake test without the lake's extensions (``pip install '.[lake]'``) or PostgreSQL, except
    in CI (``CI=true``), where it fails: ``make test`` builds the lake's venv, ``.ci/run`` installs both."""
    import importlib.util

    from tracer.testing import postgres_binaries

    missing = ("the lake's DuckDB extensions (pip install '.[lake]')"
               if importlib.util.find_spec("duckdb_extension_ducklake") is None
               else "PostgreSQL (apt-get install postgresql)" if postgres and postgres_binaries() is None else None)
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"lake tests need {missing}; .ci/run installs it")
        pytest.skip(f"lake tests need {missing}")


@pytest.fixture
def lake_extensions() -> None:
    """For a lake test with no PostgreSQL (a local ``.ducklake`` catalog): see ``_lake_needs``."""
    _lake_needs(postgres=False)


@pytest.fixture(scope="session")
def postgres():
    """A private PostgreSQL server (``tracer.testing.PrivatePostgres``), for lake catalogs; see ``_lake_needs``."""
    from tracer.testing import PrivatePostgres, postgres_binaries

    _lake_needs(postgres=True)
    server = PrivatePostgres(postgres_binaries())
    yield server
    server.stop()


@pytest.fixture
def lake(postgres, tmp_path) -> str:
    """A fresh, empty lake: its own catalog database, its files under the test's temp dir."""
    return f"ducklake:postgres:{postgres.database()}?data_path={tmp_path / 'lake'}/"
