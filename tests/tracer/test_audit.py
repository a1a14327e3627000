"""The audit log: who did what to which object, when and from where; append-only through the product;
``flightrec audit list`` shows it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

import tracer
from tests.tracer.test_read_api import _alert, _eval_run
from tracer._cli import main

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("tracer", "replay", "evals", "dashboard", "reference_agent")


@pytest.fixture
def db(tmp_path) -> str:
    """A store with two alerts and two eval runs."""
    path = str(tmp_path / "audit.duckdb")
    with tracer.Store(path) as store:
        store.record_alerts([(_alert(1), "k1"), (_alert(2), "k2")])
        store.save_eval_run(*_eval_run("run-aaaaaaaaaa"))
        store.save_eval_run(*_eval_run("run-bbbbbbbbbb"))
    return path


def flightrec(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), env=env)
    return result.exit_code, result.output


def test_an_entry_names_who_did_what_to_which_object_when_and_from_where(db):
    with tracer.Store(db) as store:
        entry = store.audit("ana", "fork", "session-1", {"turn": 3, "new_session": "session-2"}, via="cli")
        assert store.audit_entries() == [entry]
    assert (entry.actor, entry.action, entry.target, entry.via) == ("ana", "fork", "session-1", "cli")
    assert entry.detail == {"turn": 3, "new_session": "session-2"} and entry.at_ns > 0


def test_alert_status_and_labels_record_their_entry_with_the_change(db):
    with tracer.Store(db) as store:
        store.set_alert_status("al000001", "acknowledged", actor="ana")
        store.set_alert_status("al000001", "resolved", actor="bo", via="dashboard")
        store.set_alert_status("al000001", "open", actor="bo", via="dashboard")
        store.label_eval_run("run-aaaaaaaaaa", "baseline", actor="cy", via="cli")
        store.label_eval_run("run-bbbbbbbbbb", "baseline", actor="cy", via="cli")
        entries = store.audit_entries()
        assert [(e.actor, e.action, e.target, e.via, e.detail) for e in reversed(entries)] == [
            ("ana", "acknowledge", "al000001", "api", {"status": "acknowledged", "was": "open"}),
            ("bo", "resolve", "al000001", "dashboard", {"status": "resolved", "was": "acknowledged"}),
            ("bo", "reopen", "al000001", "dashboard", {"status": "open", "was": "resolved"}),
            ("cy", "label", "run-aaaaaaaaaa", "cli", {"label": "baseline", "moved_from": None}),
            ("cy", "label", "run-bbbbbbbbbb", "cli", {"label": "baseline", "moved_from": "run-aaaaaaaaaa"}),
        ]
        assert [e.target for e in store.audit_entries(action="label", limit=1)] == ["run-bbbbbbbbbb"]


def test_a_change_that_cannot_be_audited_is_not_made(db):
    with tracer.Store(db) as store:
        with pytest.raises(tracer.ConfigError, match="the actor name is empty: pass --actor NAME"):
            store.set_alert_status("al000001", "acknowledged", actor=" ")
        with pytest.raises(tracer.ConfigError, match="an alert's status is one of acknowledged, resolved, open"):
            store.set_alert_status("al000001", "snoozed")
        with pytest.raises(tracer.ConfigError, match="unknown audit action 'erase': use one of acknowledge, "):
            store.audit("ana", "erase", "session-1")  # type: ignore[arg-type]
        with pytest.raises(tracer.ConfigError, match="unknown audit interface 'email'"):
            store.audit("ana", "fork", "session-1", via="email")  # type: ignore[arg-type]
        with pytest.raises(tracer.ConfigError, match="needs the id of the object"):
            store.audit("ana", "fork", "")
        assert store.get_alert("al000001").status == "open"
        assert store.audit_entries() == []


def test_the_actor_is_the_flag_else_the_environment_else_the_os_user(monkeypatch):
    monkeypatch.setattr("getpass.getuser", lambda: "os-user")
    assert tracer.actor_name() == "os-user"
    monkeypatch.setenv("FLIGHTREC_ACTOR", "ops-bot")
    assert tracer.actor_name() == "ops-bot"
    assert tracer.actor_name(" ana ") == "ana"

    def no_user() -> str:
        raise OSError("no user name")

    monkeypatch.delenv("FLIGHTREC_ACTOR")
    monkeypatch.setattr("getpass.getuser", no_user)
    assert re.fullmatch(r"uid \d+", tracer.actor_name())


def test_nothing_in_flightrec_updates_or_deletes_an_audit_entry():
    """Append-only through the product: the one statement that writes the table inserts. Pruning
    and session deletion, wherever they are built, must not reach it either."""
    changes = re.compile(r"\b(UPDATE|DELETE\s+FROM|TRUNCATE|DROP\s+TABLE|ALTER\s+TABLE|INSERT\s+OR\s+REPLACE\s+INTO|"
                         r"COPY)\s+(TABLE\s+)?audit_log\b", re.I)
    writes = re.compile(r"\bINTO\s+audit_log\b", re.I)
    found, inserts = [], []
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            text = path.read_text()
            found += [f"{path.relative_to(ROOT)}: {m.group(0)}" for m in changes.finditer(text)]
            inserts += [str(path.relative_to(ROOT)) for _ in writes.finditer(text)]
    assert not found
    assert inserts == ["tracer/_store.py"]  # _AUDIT_INSERT, the one statement that writes it
    assert not [m for m in dir(tracer.Store) if re.search(r"audit", m) and re.search(r"delete|update|prune|clear", m)]


def test_audit_list_shows_the_log_newest_first(db):
    code, out = flightrec("audit", "list", "--db", db)
    assert code == 0
    assert out.startswith("No entries in the audit log yet. Acknowledging or resolving an alert")
    with tracer.Store(db) as store:
        store.set_alert_status("al000002", "acknowledged", actor="ana", via="cli")
        store.audit("bo", "replay", "session-1", {"kind": "run", "turn": 2, "new_session": "session-9"},
                    via="dashboard")
    code, out = flightrec("audit", "list", "--db", db)
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0].split() == ["WHEN", "UTC", "ACTOR", "ACTION", "TARGET", "VIA", "DETAIL"]
    assert lines[1].split()[2:] == ["bo", "replay", "session-1", "dashboard", "kind=run", "turn=2",
                                    "new_session=session-9"]
    assert lines[2].split()[2:] == ["ana", "acknowledge", "al000002", "cli", "status=acknowledged", "was=open"]
    code, out = flightrec("audit", "list", "--db", db, "--action", "acknowledge", "--json")
    assert code == 0
    assert [(e["actor"], e["target"]) for e in json.loads(out)] == [("ana", "al000002")]
    code, out = flightrec("audit", "list", "--db", db, "--action", "fork")
    assert out.startswith("No fork entries in the audit log yet.")
    code, out = flightrec("audit", "list", "--db", db, "--limit", "1")
    assert len(out.splitlines()) == 2


def test_audit_list_refuses_an_unknown_action(db):
    code, out = flightrec("audit", "list", "--db", db, "--action", "erase")
    assert code == 2
    assert "Invalid value for '--action': 'erase' is not one of 'acknowledge'" in out
