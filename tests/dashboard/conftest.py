"""A real store for the dashboard's pages: a copy of the demo's (``demo_store``, tests/conftest.py), with
its sessions, its alerts and its two eval runs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from dashboard import APP
from dashboard._source import DB_ENV, MODE_ENV


@pytest.fixture
def store(demo_store, tmp_path, monkeypatch) -> Path:
    """A copy of the demo store (and its world) that this test's dashboard reads and may write."""
    db = tmp_path / "dash.duckdb"
    for src in demo_store.parent.iterdir():
        shutil.copy(src, tmp_path / src.name.replace(demo_store.stem, db.stem, 1))
    monkeypatch.setenv(DB_ENV, str(db))
    monkeypatch.setenv(MODE_ENV, "read_only")
    return db


def app(page: str | None = None, **query: str) -> AppTest:
    """The dashboard as a browser opens it: ``app("session", id=…)`` is ``/session?id=…``."""
    at = AppTest.from_file(APP, default_timeout=60)
    for k, v in query.items():
        at.query_params[k] = v
    at.run()
    if page is not None:
        at.switch_page(f"views/{page}.py")
        for k, v in query.items():
            at.query_params[k] = v
        at.run()
    return at


def no_exceptions(at: AppTest) -> None:
    """Asserts the page rendered without an exception or an error box."""
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def click(at: AppTest, key: str, row: int, column: str) -> AppTest:
    """Clicks a cell of the table ``key`` (``_ui.table``), as the browser reports it, and reruns."""
    at.session_state[key] = {"selection": {"rows": [], "columns": [], "cells": [(row, column)]}}
    return at.run()
