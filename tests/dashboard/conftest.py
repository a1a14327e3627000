"""A real store for the dashboard's pages: a copy of the demo's (``demo_store``, tests/conftest.py), with
its sessions, its alerts and its two eval runs."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from streamlit.testing.v1 import AppTest

from dashboard import APP, _html
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


P = TypeVar("P", bound=HTMLParser)


def _parsed(at: AppTest, parser: P) -> P:
    """``parser`` fed every HTML element of the page, in order."""
    for element in at.get("html"):
        parser.feed(element.proto.body)
        parser.feed(" ")  # elements are blocks: one's last word is not the next one's first
    return parser


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
    chosen: list[int]
    """The rows marked as the one the page shows below the table (``_html.table``'s ``chosen``)."""

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
        self.marked: list[list[int]] = []
        self._cell: list[str] | None = None
        self._href: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table" and ("class", "fr-table") in attrs:
            self.tables.append([])
            self.marked.append([])
        elif tag == "tr" and self.tables:
            if ("class", "on") in attrs:
                self.marked[-1].append(len(self.tables[-1]) - 1)  # a row of the body: the header is row 0
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
    parser = _parsed(at, _TableParser())
    tables = []
    for (head, *body), marked in zip(parser.tables, parser.marked, strict=True):
        names = [text.rstrip(" ↑↓") for text, _ in head]
        tables.append(Table([text for text, _ in head], [href for _, href in head],
                            [dict(zip(names, (text for text, _ in row), strict=True)) for row in body],
                            [row[0][1] for row in body], marked))
    return tables


class _MetricParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.metrics: list[dict[str, str]] = []
        self._part: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        classes = (dict(attrs).get("class") or "").split()
        if "fr-metric" in classes:
            self.metrics.append({})
        for part in ("fr-ml", "fr-mv", "fr-mn"):
            if part in classes and self.metrics:
                self._part = part
                if part == "fr-ml" and dict(attrs).get("title"):
                    self.metrics[-1]["help"] = dict(attrs)["title"] or ""

    def handle_data(self, data: str) -> None:
        if self._part is not None:
            self.metrics[-1][self._part] = self.metrics[-1].get(self._part, "") + data

    def handle_endtag(self, tag: str) -> None:
        if tag == "div":
            self._part = None


def metrics(at: AppTest) -> dict[str, _html.Metric]:
    """Every ``_html.metrics`` number on the page, by label, as the browser gets it."""
    parser = _parsed(at, _MetricParser())
    return {m["fr-ml"]: _html.Metric(m["fr-ml"], m["fr-mv"], m.get("help"), m.get("fr-mn"))
            for m in parser.metrics}


class _LinkParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: dict[str, str] = {}
        self._href: str | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._href, self._text = dict(attrs).get("href"), []

    def handle_data(self, data: str) -> None:
        if self._href is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._href is not None:
            self.links["".join(self._text)] = self._href
            self._href = None


def html_links(at: AppTest) -> dict[str, str]:
    """The links drawn in the page's HTML elements, as their text to their target."""
    parser = _parsed(at, _LinkParser())
    return parser.links


class _FormParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.fields: list[dict[str, Any]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "form" and self.action is None:
            assert a.get("method") == "get", "the dashboard's forms answer with a page's URL"
            self.action = a["action"]
        elif tag == "input" and self.action is not None:
            self.fields.append(a)
        elif tag == "select" and self.action is not None:
            self.fields.append({"name": a["name"], "type": "select", "options": []})
        elif tag == "option" and self.fields and self.fields[-1].get("type") == "select":
            self.fields[-1]["options"].append(a["value"])
            if "selected" in a:
                self.fields[-1]["value"] = a["value"]


def submit(at: AppTest, **fields: str | list[str]) -> AppTest:
    """Submits the page's form as the browser does (a GET form: its fields become the URL's query) with
    ``fields`` set, a text input's to its text, a drop-down's to the value picked and a set of checkboxes
    to the values ticked (a list), and opens the page it leads to. A field or a value the form does not
    have fails the test."""
    parser = _parsed(at, _FormParser())
    assert parser.action is not None, "no form on the page"
    pairs: list[tuple[str, str]] = []
    for f in parser.fields:
        name, value = f["name"] or "", f.get("value") or ""
        if f.get("type") == "checkbox":
            if (value in fields[name]) if name in fields else "checked" in f:
                pairs.append((name, value))
        elif f.get("type") == "select":
            pairs.append((name, str(fields.get(name, value or f["options"][0]))))
        elif f.get("type") != "hidden" and name in fields:
            pairs.append((name, str(fields[name])))
        elif value:
            pairs.append((name, value))
    for name, wanted in fields.items():
        offered = [v for f in parser.fields if f["name"] == name for v in f.get("options", [f.get("value")])]
        assert offered, f"the form has no field {name}"
        if isinstance(wanted, list) or any(f.get("type") == "select" for f in parser.fields if f["name"] == name):
            assert set(wanted if isinstance(wanted, list) else [wanted]) <= set(offered), \
                f"the form offers {offered} for {name}"
    return follow(f"{parser.action}?{urlencode(pairs)}")


class _TextParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.text: list[str] = []
        self._skip = False

    # A block's text is apart from the next one's, as the browser lays them out; inline tags split words
    # the same way, which the tests' phrases do not cross.
    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._skip = tag in ("style", "script")
        self.text.append(" ")

    def handle_endtag(self, tag: str) -> None:
        self._skip = False
        self.text.append(" ")

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.text.append(data)


def drawn(at: AppTest) -> str:
    """The text the page's HTML elements show (``_ui.draw``'s), as one line."""
    parser = _parsed(at, _TextParser())
    return " ".join("".join(parser.text).split())


@dataclass
class Choice:
    """A choice of a row of ``_html.switches`` as the browser gets it."""

    text: str
    tip: str | None
    link: str | None
    """``None``: the current choice, which links nowhere."""
    mark: str | None
    """``bad`` or ``warn`` when it is marked so."""


class _SwitchParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[str, list[Choice]] = {}
        self._row: str | None = None
        self._in: str | None = None  # "label" or "choice"
        self._text: list[str] = []
        self._attrs: dict[str, str | None] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "div" and a.get("class") == "fr-switch":
            self._row = ""
        elif self._row is not None and tag == "span" and a.get("class") == "fr-sl":
            self._in, self._text = "label", []
        elif self._row is not None and tag in ("a", "b"):
            self._in, self._text, self._attrs = "choice", [], a

    def handle_data(self, data: str) -> None:
        if self._in is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if self._in == "label" and tag == "span":
            self._row = "".join(self._text)
            self.rows[self._row] = []
        elif self._in == "choice" and tag in ("a", "b") and self._row is not None:
            self.rows[self._row].append(Choice("".join(self._text), self._attrs.get("title"),
                                               self._attrs.get("href") if tag == "a" else None,
                                               self._attrs.get("class")))
        elif tag == "div":
            self._row = None
        if tag in ("span", "a", "b"):
            self._in = None


def switches(at: AppTest) -> dict[str, list[Choice]]:
    """Every row of ``_html.switches`` on the page, by its label, its choices in order."""
    parser = _parsed(at, _SwitchParser())
    return parser.rows


def choose(at: AppTest, row: str, text: str) -> AppTest:
    """Clicks the choice ``text`` of the switch ``row``, and opens the page it leads to."""
    choice = next((c for c in switches(at)[row] if c.text == text), None)
    assert choice is not None, f"{row} has no choice {text!r}: {[c.text for c in switches(at)[row]]}"
    assert choice.link is not None, f"{text!r} is {row}'s current choice already"
    return follow(choice.link)
