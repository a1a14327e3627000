"""The business world the support agent works in: one SQLite file, apart from the trace store.

Customers, orders, payments, shipments, refunds, an e-mail outbox, support tickets, a
knowledge base, human approvals, and the agent's checkpoints. Every row belongs to one
session: each session gets its own copy of the catalogue, seeded the same way every time for
its scenario, so that sessions never see each other's refunds and a (scenario, seed) pair
always meets the same world. The calendar is fixed too (``TODAY``), so nothing the tools
return depends on when the agent runs.

Side effects (refunds, e-mails, tickets) are stored under an idempotency key that is unique
in the file: doing the same one twice returns the first record instead of a second one.

A ``World`` may be shared by threads; one connection and a lock serialise them. Every
``sqlite3.Error`` is mapped here to a ``WorldError``.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator

import tracer

from ._errors import WorldError

TODAY = date(2026, 11, 20)
"""The world's calendar day: refund windows and delivery estimates are counted from it."""

DEFAULT_WORLD_SUFFIX = ".world.sqlite"
_BUSY_TIMEOUT_MS = 30_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS worlds (
    session_id TEXT PRIMARY KEY, scenario TEXT, setup TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS customers (
    session_id TEXT NOT NULL, customer_id TEXT NOT NULL, name TEXT NOT NULL, email TEXT NOT NULL,
    tier TEXT NOT NULL, PRIMARY KEY (session_id, customer_id));
CREATE TABLE IF NOT EXISTS orders (
    session_id TEXT NOT NULL, order_id TEXT NOT NULL, customer_id TEXT NOT NULL, item TEXT NOT NULL,
    subtotal_cents INTEGER NOT NULL, shipping_cents INTEGER NOT NULL, total_cents INTEGER NOT NULL,
    refunded_cents INTEGER NOT NULL DEFAULT 0, status TEXT NOT NULL, placed_on TEXT NOT NULL,
    delivered_on TEXT, PRIMARY KEY (session_id, order_id));
CREATE TABLE IF NOT EXISTS payments (
    session_id TEXT NOT NULL, payment_id TEXT NOT NULL, order_id TEXT NOT NULL, amount_cents INTEGER NOT NULL,
    status TEXT NOT NULL, captured_on TEXT, PRIMARY KEY (session_id, payment_id));
CREATE TABLE IF NOT EXISTS shipments (
    session_id TEXT NOT NULL, order_id TEXT NOT NULL, carrier TEXT NOT NULL, tracking TEXT NOT NULL,
    status TEXT NOT NULL, eta TEXT, last_event TEXT NOT NULL, PRIMARY KEY (session_id, order_id));
CREATE TABLE IF NOT EXISTS kb_articles (
    session_id TEXT NOT NULL, article_id TEXT NOT NULL, title TEXT NOT NULL, tags TEXT NOT NULL,
    body TEXT NOT NULL, PRIMARY KEY (session_id, article_id));
CREATE TABLE IF NOT EXISTS refunds (
    session_id TEXT NOT NULL, refund_id TEXT NOT NULL, order_id TEXT NOT NULL, amount_cents INTEGER NOT NULL,
    reason TEXT NOT NULL, note TEXT, approved_by TEXT, idempotency_key TEXT NOT NULL UNIQUE,
    PRIMARY KEY (session_id, refund_id));
CREATE TABLE IF NOT EXISTS emails (
    session_id TEXT NOT NULL, email_id TEXT NOT NULL, customer_id TEXT NOT NULL, to_address TEXT NOT NULL,
    template TEXT NOT NULL, subject TEXT NOT NULL, body TEXT NOT NULL, idempotency_key TEXT NOT NULL UNIQUE,
    PRIMARY KEY (session_id, email_id));
CREATE TABLE IF NOT EXISTS tickets (
    session_id TEXT NOT NULL, ticket_id TEXT NOT NULL, reason TEXT NOT NULL, priority TEXT NOT NULL,
    customer_id TEXT, order_id TEXT, idempotency_key TEXT NOT NULL UNIQUE, context TEXT,
    PRIMARY KEY (session_id, ticket_id));
CREATE TABLE IF NOT EXISTS approvals (
    session_id TEXT NOT NULL, approval_id TEXT NOT NULL, tool_use_id TEXT NOT NULL, tool TEXT NOT NULL,
    arguments TEXT NOT NULL, idempotency_key TEXT NOT NULL UNIQUE, summary TEXT NOT NULL, status TEXT NOT NULL,
    note TEXT, PRIMARY KEY (session_id, approval_id));
CREATE TABLE IF NOT EXISTS checkpoints (
    session_id TEXT PRIMARY KEY, scenario TEXT, status TEXT NOT NULL, step INTEGER NOT NULL,
    updated_at REAL NOT NULL, state TEXT NOT NULL);
"""

# The catalogue every session starts from. Amounts are in cents; dates are ISO days.
_CUSTOMERS = (
    ("C-100", "Ada Lovelace", "ada@example.com", "gold"),
    ("C-101", "Ben Okafor", "ben.okafor@example.com", "standard"),
    ("C-102", "Chloé Martin", "chloe.martin@example.com", "standard"),
    ("C-103", "Dev Patel", "dev.patel@example.com", "standard"),
    ("C-104", "Eva Novak", "eva.novak@example.com", "standard"),
    ("C-105", "Farid Haddad", "farid.haddad@example.com", "standard"),
)
# order_id, customer, item, subtotal, shipping, status, placed_on, delivered_on
_ORDERS = (
    ("A-1001", "C-100", "Ceramic pour-over set", 3999, 590, "delivered", "2026-11-10", "2026-11-15"),
    ("A-1002", "C-100", "Noise-cancelling headphones", 18900, 0, "shipped", "2026-11-16", None),
    ("A-1003", "C-101", "Standing desk", 54900, 0, "delivered", "2026-11-04", "2026-11-12"),
    ("A-1004", "C-102", "Blender", 8950, 590, "delivered", "2026-11-12", "2026-11-17"),
    ("A-1005", "C-102", "Espresso machine", 34900, 0, "delivered", "2026-11-09", "2026-11-16"),
    ("A-1006", "C-103", "Running shoes", 12000, 590, "delivered", "2026-11-08", "2026-11-14"),
    ("A-1007", "C-103", "Yoga mat", 2990, 590, "processing", "2026-11-19", None),
    ("A-1008", "C-104", "Winter jacket", 15900, 0, "delivered", "2026-09-25", "2026-10-01"),
    ("A-1009", "C-104", "Desk lamp", 4590, 590, "delivered", "2026-11-11", "2026-11-16"),
    ("A-1010", "C-105", "Gift card, $50", 5000, 0, "delivered", "2026-11-18", "2026-11-18"),
    ("A-1011", "C-101", "Monitor arm", 7900, 590, "shipped", "2026-11-02", None),
    ("A-1012", "C-100", "Electric kettle", 4900, 590, "delivered", "2026-10-28", "2026-11-01"),
)
_EXTRA_PAYMENTS = {"A-1009": 1}  # a duplicate capture: the billing scenario's double charge
# order_id: carrier, status, eta, last event
_SHIPMENTS = {
    "A-1001": ("UPS", "delivered", None, "Delivered to the front door on 2026-11-15."),
    "A-1002": ("DHL", "in_transit", "2026-11-23", "Departed the Leipzig hub on 2026-11-19."),
    "A-1003": ("DHL Freight", "delivered", None, "Delivered and signed for on 2026-11-12."),
    "A-1004": ("UPS", "delivered", None, "Delivered to a neighbour on 2026-11-17."),
    "A-1005": ("UPS", "delivered", None, "Delivered to the front door on 2026-11-16."),
    "A-1006": ("PostNL", "delivered", None, "Delivered to the mailbox on 2026-11-14."),
    "A-1008": ("DHL", "delivered", None, "Delivered on 2026-10-01."),
    "A-1009": ("PostNL", "delivered", None, "Delivered to the mailbox on 2026-11-16."),
    "A-1010": ("e-mail", "delivered", None, "Gift card code e-mailed on 2026-11-18."),
    "A-1011": ("PostNL", "exception", None, "Carrier exception on 2026-11-06: parcel damaged in sorting, held."),
    "A-1012": ("UPS", "delivered", None, "Delivered to the front door on 2026-11-01."),
}
_WORD = re.compile(r"[a-z0-9]+(?:[-'][a-z0-9]+)*")
STOPWORDS = frozenset((
    "a about an and any are be can could do does for has have hello hi how i if in is it me my of on or our please "
    "tell that the there this to was we what when where which why with would you your"
).split())
"""Words that carry no topic: the knowledge-base search, and the simulated model's queries, skip them."""


@dataclass(frozen=True)
class Article:
    """One knowledge-base article, as bundled."""

    article_id: str
    title: str
    tags: str
    body: str
    scenario: str | None
    """Only seeded in worlds whose setup asks for it (an article planted for one scenario)."""


def bundled_articles() -> tuple[Article, ...]:
    """The knowledge base that ships in ``reference_agent/kb``, in id order."""
    out = []
    for entry in sorted(resources.files("reference_agent").joinpath("kb").iterdir(), key=lambda p: p.name):
        if not entry.name.endswith(".md"):
            continue
        head, _, body = entry.read_text(encoding="utf-8").partition("\n\n")
        meta = dict(line.split(": ", 1) for line in head.splitlines() if ": " in line)
        out.append(Article(meta["id"], meta["title"], meta.get("tags", ""), " ".join(body.split()),
                           meta.get("scenario")))
    return tuple(out)


class WorldSetup(BaseModel):
    """How a scenario's world differs from the standard catalogue."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    articles: tuple[str, ...] = ()
    """Planted knowledge-base articles to add (for example the one carrying a prompt injection)."""
    outages: dict[str, str] = {}
    """Backend services that fail, by service name (orders, crm, kb, payments, email, tickets):
    ``down`` fails every attempt, ``flaky`` fails the first attempt of each call, ``slow`` answers
    after 30 s (``slow:SECONDS`` after that many), which is past every tool's timeout."""
    shipment_events: dict[str, str] = {}
    """The carrier's latest event for some orders (by order id), in place of the catalogue's: text
    from another system that ``get_shipment`` returns as it is, for example a planted instruction."""

    @field_validator("shipment_events")
    @classmethod
    def _shipped(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(value) - set(_SHIPMENTS))
        if unknown:
            raise ValueError(f"no shipment for {', '.join(unknown)}; orders with one: {', '.join(_SHIPMENTS)}")
        return value


def default_world_path(trace_db: str | os.PathLike[str]) -> str:
    """The world file that goes with a trace store: ``x.duckdb`` → ``x.world.sqlite``, or ``$FLIGHTREC_WORLD``."""
    env = os.environ.get("FLIGHTREC_WORLD")
    if env:
        return env
    path = Path(os.fspath(trace_db))
    if path.name == ":memory:":
        return ":memory:"
    if tracer.is_lake(os.fspath(trace_db)):  # a lake is no file to sit beside: the working directory's
        return "flightrec" + DEFAULT_WORLD_SUFFIX
    return str(path.with_name(path.stem + DEFAULT_WORLD_SUFFIX))


def _words(text: str) -> list[str]:
    return [w for w in _WORD.findall(text.lower()) if w not in STOPWORDS]


class World:
    """The business data of every session, in one SQLite file.

    Args:
        path: The SQLite file; created with its schema if it does not exist.

    Raises:
        WorldError: the file cannot be opened or is not a world file.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._lock = threading.RLock()
        try:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self._con = sqlite3.connect(self.path, check_same_thread=False, timeout=_BUSY_TIMEOUT_MS / 1000,
                                        isolation_level=None)
            self._con.row_factory = sqlite3.Row
            self._con.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
            if self.path != ":memory:":
                self._con.execute("PRAGMA journal_mode = WAL")
                # WAL with NORMAL survives a killed process, which is the crash the agent must survive.
                self._con.execute("PRAGMA synchronous = NORMAL")
            self._con.executescript(_SCHEMA)
            # World files from before tickets carried their hand-over get the column added.
            if "context" not in {r[1] for r in self._con.execute("PRAGMA table_info(tickets)")}:
                self._con.execute("ALTER TABLE tickets ADD COLUMN context TEXT")
        except sqlite3.Error as exc:
            raise WorldError(f"cannot open the world file {self.path}: {exc}. Pass another path with --world "
                             "or FLIGHTREC_WORLD.") from None

    def close(self) -> None:
        with self._lock:
            self._con.close()

    def __enter__(self) -> World:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing ----------------------------------------------------------------------------

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: all of it is committed, or none of it."""
        with self._lock:
            try:
                self._con.execute("BEGIN IMMEDIATE")
                try:
                    yield self._con
                except BaseException:
                    self._con.execute("ROLLBACK")
                    raise
                self._con.execute("COMMIT")
            except sqlite3.Error as exc:
                raise WorldError(f"writing the world file {self.path} failed: {exc}") from None

    def _rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        with self._lock:
            try:
                return [dict(r) for r in self._con.execute(sql, params).fetchall()]
            except sqlite3.Error as exc:
                raise WorldError(f"reading the world file {self.path} failed: {exc}") from None

    def _one(self, sql: str, params: tuple[Any, ...] = ()) -> dict[str, Any] | None:
        rows = self._rows(sql, params)
        return rows[0] if rows else None

    # -- seeding -----------------------------------------------------------------------------

    def seed(self, session_id: str, setup: WorldSetup, *, scenario: str | None = None) -> None:
        """Gives a session its own copy of the catalogue; does nothing if it already has one."""
        articles = [a for a in bundled_articles() if a.scenario is None or a.article_id in setup.articles]
        with self._tx() as con:
            if con.execute("SELECT 1 FROM worlds WHERE session_id = ?", (session_id,)).fetchone():
                return
            con.execute("INSERT INTO worlds VALUES (?, ?, ?)", (session_id, scenario, setup.model_dump_json()))
            con.executemany("INSERT INTO customers VALUES (?, ?, ?, ?, ?)",
                            [(session_id, *c) for c in _CUSTOMERS])
            con.executemany(
                "INSERT INTO orders VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?)",
                [(session_id, oid, cid, item, sub, ship, sub + ship, status, placed, delivered)
                 for oid, cid, item, sub, ship, status, placed, delivered in _ORDERS],
            )
            payments = []
            for oid, _cid, _item, sub, ship, status, placed, _delivered in _ORDERS:
                captured = status != "processing"
                for n in range(1 + _EXTRA_PAYMENTS.get(oid, 0)):
                    payments.append((session_id, f"P-{oid[2:]}-{n + 1}", oid, sub + ship,
                                     "captured" if captured else "authorised", placed if captured else None))
            con.executemany("INSERT INTO payments VALUES (?, ?, ?, ?, ?, ?)", payments)
            con.executemany(
                "INSERT INTO shipments VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(session_id, oid, carrier, f"{carrier[:3].upper()}{int(oid[2:]) * 7919:09d}", status, eta, event)
                 for oid, (carrier, status, eta, event) in
                 ((oid, (*row[:3], setup.shipment_events.get(oid, row[3]))) for oid, row in _SHIPMENTS.items())],
            )
            con.executemany("INSERT INTO kb_articles VALUES (?, ?, ?, ?, ?)",
                            [(session_id, a.article_id, a.title, a.tags, a.body) for a in articles])

    def setup(self, session_id: str) -> WorldSetup:
        """The setup a session's world was seeded with."""
        row = self._one("SELECT setup FROM worlds WHERE session_id = ?", (session_id,))
        return WorldSetup.model_validate_json(row["setup"]) if row else WorldSetup()

    # -- reads -------------------------------------------------------------------------------

    def customer(self, session_id: str, *, customer_id: str | None = None,
                 email: str | None = None) -> dict[str, Any] | None:
        if customer_id:
            return self._one("SELECT customer_id, name, email, tier FROM customers WHERE session_id = ? "
                             "AND customer_id = ?", (session_id, customer_id))
        return self._one("SELECT customer_id, name, email, tier FROM customers WHERE session_id = ? "
                         "AND lower(email) = lower(?)", (session_id, email or ""))

    def order(self, session_id: str, order_id: str) -> dict[str, Any] | None:
        """An order with its payments and refunds; ``None`` if there is none."""
        row = self._one("SELECT * FROM orders WHERE session_id = ? AND order_id = ?", (session_id, order_id))
        if row is None:
            return None
        row.pop("session_id")
        row["payments"] = self._rows(
            "SELECT payment_id, amount_cents, status, captured_on FROM payments WHERE session_id = ? "
            "AND order_id = ? ORDER BY payment_id", (session_id, order_id))
        row["refunds"] = self._rows(
            "SELECT refund_id, amount_cents, reason FROM refunds WHERE session_id = ? AND order_id = ? "
            "ORDER BY refund_id", (session_id, order_id))
        return row

    def orders(self, session_id: str, customer_id: str, *, status: str | None = None,
               limit: int = 10) -> list[dict[str, Any]]:
        sql = ("SELECT order_id, item, total_cents, status, placed_on, delivered_on FROM orders "
               "WHERE session_id = ? AND customer_id = ?")
        params: tuple[Any, ...] = (session_id, customer_id)
        if status:
            sql += " AND status = ?"
            params += (status,)
        return self._rows(sql + " ORDER BY placed_on DESC LIMIT ?", (*params, limit))

    def shipment(self, session_id: str, order_id: str) -> dict[str, Any] | None:
        return self._one("SELECT order_id, carrier, tracking, status, eta, last_event FROM shipments "
                         "WHERE session_id = ? AND order_id = ?", (session_id, order_id))

    def search_kb(self, session_id: str, query: str, *, limit: int = 3) -> list[dict[str, Any]]:
        """Articles ranked by how many of the query's words they carry (title and tags count more)."""
        terms = _words(query)
        scored = []
        for a in self._rows("SELECT article_id, title, tags, body FROM kb_articles WHERE session_id = ? "
                            "ORDER BY article_id", (session_id,)):
            title, tags, body = set(_words(a["title"])), set(_words(a["tags"])), _words(a["body"])
            score = sum(3 * (t in title) + 2 * (t in tags) + min(body.count(t), 3) for t in terms)
            if score:
                scored.append((-score, a["article_id"], {"article_id": a["article_id"], "title": a["title"],
                                                          "body": a["body"]}))
        return [s[2] for s in sorted(scored)[:limit]]

    # -- side effects ------------------------------------------------------------------------

    def _by_key(self, table: str, key: str) -> dict[str, Any] | None:
        return self._one(f"SELECT * FROM {table} WHERE idempotency_key = ?", (key,))

    def done(self, kind: str, key: str) -> dict[str, Any] | None:
        """The refund, e-mail, ticket or approval request (``kind``) already made under an idempotency key."""
        tables = {"refund": "refunds", "email": "emails", "ticket": "tickets", "approval": "approvals"}
        return self._by_key(tables[kind], key)

    def refund(self, session_id: str, *, key: str, order_id: str, amount_cents: int, reason: str,
               note: str | None = None, approved_by: str | None = None) -> tuple[dict[str, Any], bool]:
        """Pays a refund once per idempotency key; returns the refund and whether it is new.

        The refund row and the order's refunded total change in one transaction.
        """
        with self._tx() as con:
            found = con.execute("SELECT * FROM refunds WHERE idempotency_key = ?", (key,)).fetchone()
            if found:
                return dict(found), False
            n = con.execute("SELECT count(*) FROM refunds WHERE session_id = ?", (session_id,)).fetchone()[0]
            refund_id = f"R-{n + 1:04d}"
            con.execute("INSERT INTO refunds VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (session_id, refund_id, order_id, amount_cents, reason, note, approved_by, key))
            con.execute(
                "UPDATE orders SET refunded_cents = refunded_cents + ?, status = CASE WHEN refunded_cents + ? "
                ">= total_cents THEN 'refunded' ELSE 'partially_refunded' END WHERE session_id = ? AND order_id = ?",
                (amount_cents, amount_cents, session_id, order_id))
            row = con.execute("SELECT * FROM refunds WHERE idempotency_key = ?", (key,)).fetchone()
            return dict(row), True

    def send_email(self, session_id: str, *, key: str, customer_id: str, to_address: str, template: str,
                   subject: str, body: str) -> tuple[dict[str, Any], bool]:
        """Puts an e-mail in the outbox once per idempotency key."""
        with self._tx() as con:
            found = con.execute("SELECT * FROM emails WHERE idempotency_key = ?", (key,)).fetchone()
            if found:
                return dict(found), False
            n = con.execute("SELECT count(*) FROM emails WHERE session_id = ?", (session_id,)).fetchone()[0]
            con.execute("INSERT INTO emails VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (session_id, f"E-{n + 1:04d}", customer_id, to_address, template, subject, body, key))
            return dict(con.execute("SELECT * FROM emails WHERE idempotency_key = ?", (key,)).fetchone()), True

    def open_ticket(self, session_id: str, *, key: str, reason: str, priority: str, customer_id: str | None,
                    order_id: str | None, context: dict[str, Any] | None = None) -> tuple[dict[str, Any], bool]:
        """Opens a ticket for a human once per idempotency key, with the hand-over ``context`` (as JSON)."""
        with self._tx() as con:
            found = con.execute("SELECT * FROM tickets WHERE idempotency_key = ?", (key,)).fetchone()
            if found:
                return dict(found), False
            n = con.execute("SELECT count(*) FROM tickets WHERE session_id = ?", (session_id,)).fetchone()[0]
            con.execute("INSERT INTO tickets (session_id, ticket_id, reason, priority, customer_id, order_id, "
                        "idempotency_key, context) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (session_id, f"T-{n + 1:04d}", reason, priority, customer_id, order_id, key,
                         json.dumps(context) if context else None))
            return dict(con.execute("SELECT * FROM tickets WHERE idempotency_key = ?", (key,)).fetchone()), True

    def refunds(self, session_id: str) -> list[dict[str, Any]]:
        return self._rows("SELECT * FROM refunds WHERE session_id = ? ORDER BY refund_id", (session_id,))

    def emails(self, session_id: str) -> list[dict[str, Any]]:
        return self._rows("SELECT * FROM emails WHERE session_id = ? ORDER BY email_id", (session_id,))

    def tickets(self, session_id: str) -> list[dict[str, Any]]:
        return self._rows("SELECT * FROM tickets WHERE session_id = ? ORDER BY ticket_id", (session_id,))

    # -- approvals ---------------------------------------------------------------------------

    def request_approval(self, session_id: str, *, key: str, tool_use_id: str, tool: str,
                         arguments: dict[str, Any], summary: str) -> dict[str, Any]:
        """Files a request for a human's decision, once per idempotency key."""
        with self._tx() as con:
            found = con.execute("SELECT * FROM approvals WHERE idempotency_key = ?", (key,)).fetchone()
            if found:
                return dict(found)
            n = con.execute("SELECT count(*) FROM approvals WHERE session_id = ?", (session_id,)).fetchone()[0]
            con.execute("INSERT INTO approvals VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', NULL)",
                        (session_id, f"AP-{n + 1:04d}", tool_use_id, tool, json.dumps(arguments), key, summary))
            return dict(con.execute("SELECT * FROM approvals WHERE idempotency_key = ?", (key,)).fetchone())

    def approval(self, session_id: str, approval_id: str) -> dict[str, Any] | None:
        return self._one("SELECT * FROM approvals WHERE session_id = ? AND approval_id = ?", (session_id, approval_id))

    def decide(self, session_id: str, approval_id: str, decision: str, note: str | None) -> dict[str, Any]:
        """Records a human's decision (``approved`` or ``rejected``) on a pending approval."""
        with self._tx() as con:
            con.execute("UPDATE approvals SET status = ?, note = ? WHERE session_id = ? AND approval_id = ? "
                        "AND status = 'pending'", (decision, note, session_id, approval_id))
            row = con.execute("SELECT * FROM approvals WHERE session_id = ? AND approval_id = ?",
                              (session_id, approval_id)).fetchone()
        if row is None:
            raise WorldError(f"no approval {approval_id} for session {session_id} in {self.path}.")
        return dict(row)

    # -- checkpoints -------------------------------------------------------------------------

    def save_checkpoint(self, session_id: str, *, scenario: str | None, status: str, step: int,
                        state: str, at: float) -> None:
        """Replaces the session's checkpoint (its whole execution state, as JSON text)."""
        with self._tx() as con:
            con.execute("INSERT INTO checkpoints VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (session_id) DO UPDATE SET "
                        "scenario = excluded.scenario, status = excluded.status, step = excluded.step, "
                        "updated_at = excluded.updated_at, state = excluded.state",
                        (session_id, scenario, status, step, at, state))

    def load_checkpoint(self, session_id: str) -> str | None:
        row = self._one("SELECT state FROM checkpoints WHERE session_id = ?", (session_id,))
        return row["state"] if row else None

    def checkpoints(self, *, status: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Sessions by their last checkpoint, newest first: id, scenario, status, step."""
        sql = "SELECT session_id, scenario, status, step, updated_at FROM checkpoints"
        params: tuple[Any, ...] = ()
        if status:
            sql += " WHERE status = ?"
            params = (status,)
        return self._rows(sql + " ORDER BY updated_at DESC LIMIT ?", (*params, limit))

    def resolve_session(self, session_id: str) -> str | None:
        """The full id of a checkpointed session, given the id or a unique prefix of 8+ characters."""
        if self._one("SELECT 1 FROM checkpoints WHERE session_id = ?", (session_id,)):
            return session_id
        if len(session_id) < 8:
            return None
        rows = self._rows("SELECT session_id FROM checkpoints WHERE session_id LIKE ? || '%' LIMIT 2", (session_id,))
        return rows[0]["session_id"] if len(rows) == 1 else None


def money(amount_cents: int) -> str:
    """``12345`` → ``$123.45``: an amount of the shop's money (the model's cost is ``tracer.format_usd``)."""
    return f"${amount_cents / 100:,.2f}"
