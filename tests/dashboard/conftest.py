"""A real store for the dashboard's pages: a copy of the demo's (``demo_store``, tests/conftest.py), with
its sessions, its alerts and its two eval runs."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

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


def app(page: str | None = None, /, **query: str) -> AppTest:
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


def follow(link: str) -> AppTest:
    """The page a link of the dashboard's leads to (``_ui.url``, as parsed or as raw HTML with ``&amp;``),
    as the browser loads it; a parameter given twice (``status=ok&status=error``) is a list."""
    parts = urlsplit(link.replace("&amp;", "&"))
    query = {k: v[0] if len(v) == 1 else v for k, v in parse_qs(parts.query).items()}
    return app(parts.path.strip("/"), **query)


def no_exceptions(at: AppTest) -> None:
    """Asserts the page rendered without an exception or an error box."""
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def click(at: AppTest, key: str, row: int, column: str) -> AppTest:
    """Clicks a cell of the table ``key`` (``_ui.table``), as the browser reports it, and reruns."""
    at.session_state[key] = {"selection": {"rows": [], "columns": [], "cells": [(row, column)]}}
    return at.run()


@dataclass
class Table:
    """An HTML table of ``_ui.link_table`` as the browser gets it: the text of each cell, and the links."""

    headers: list[str]
    """As shown, with the sorted column's arrow."""
    header_links: list[str | None]
    rows: list[dict[str, str]]
    """Each row's cells by header (without the arrow)."""
    links: list[str | None]
    """Each row's first cell's link."""

    def column(self, name: str) -> list[str]:
        return [row[name] for row in self.rows]

    def sort_link(self, name: str) -> dict[str, list[str]]:
        """The query of the header ``name``'s link."""
        link = self.header_links[[h.rstrip(" ↑↓") for h in self.headers].index(name)]
        assert link is not None, f"{name} is not a sort link"
        return parse_qs(urlsplit(link).query)


class _TableParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[tuple[str, str | None]]]] = []
        self._cell: list[str] | None = None
        self._href: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table" and ("class", "fr-table") in attrs:
            self.tables.append([])
        elif tag == "tr" and self.tables:
            self.tables[-1].append([])
        elif tag in ("td", "th") and self.tables:
            self._cell, self._href = [], None
        elif tag == "a" and self._cell is not None:
            self._href = dict(attrs).get("href")

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append(("".join(self._cell), self._href))
            self._cell = None


def link_tables(at: AppTest) -> list[Table]:
    """Every ``_ui.link_table`` on the page, in order."""
    parser = _TableParser()
    for element in at.get("html"):
        parser.feed(element.proto.body)
    tables = []
    for head, *body in parser.tables:
        names = [text.rstrip(" ↑↓") for text, _ in head]
        tables.append(Table([text for text, _ in head], [href for _, href in head],
                            [dict(zip(names, (text for text, _ in row), strict=True)) for row in body],
                            [row[0][1] for row in body]))
    return tables
