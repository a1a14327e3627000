"""The Audit page: the audit log newest first, filterable, each entry linked to what it names."""

from __future__ import annotations

import tracer
from tests.dashboard.conftest import app, drawn, follow, html_links, link_tables, no_exceptions, submit


def test_the_audit_page_lists_entries_newest_first_and_filters_them(store, monkeypatch):
    monkeypatch.setenv("FLIGHTREC_ACTOR", "dash-ops")
    with tracer.Store(str(store)) as s:
        alert = s.alerts(status="open")[0]
        sid = s.list_sessions(limit=1)[0].session_id
        s.set_alert_status(alert.alert_id, "acknowledged", actor="ana", via="cli")
        s.audit("bo", "fork", sid, {"turn": 3, "new_session": "019-fork"}, via="api")
        total = len(s.audit_entries(limit=1000))
    at = app("audit")
    no_exceptions(at)
    assert at.title[0].value == "Audit"
    assert "recorded as dash-ops" in drawn(at)  # the dashboard has no login, and says so
    assert f"{total:,} entries match" in drawn(at)  # the demo's label, and these two
    [table] = link_tables(at)
    assert table.headers == ["when", "actor", "action", "target", "from", "detail"]
    assert [table.rows[0][c] for c in ("actor", "action", "target", "from", "detail")] == [
        "bo", "fork", sid, "api", "turn 3 · new_session 019-fork"]
    assert table.links[0] == f"/session?id={sid}"
    assert [table.rows[1][c] for c in ("actor", "action", "target")] == ["ana", "acknowledge", alert.alert_id]
    assert table.links[1] == f"/alerts?alert={alert.alert_id}"

    at = submit(at, action=["acknowledge"])
    no_exceptions(at)
    assert link_tables(at)[0].column("target") == [alert.alert_id]
    at = submit(at, via=["dashboard"])  # the action ticked stays ticked
    assert at.query_params["action"] == "acknowledge"
    assert "No entry matches these filters. Clear them, or tick other values." in [i.value for i in at.info]
    at = follow(html_links(at)["Clear the filters"])
    assert f"{total:,} entries match" in drawn(at)


def test_a_store_with_no_entries_says_what_records_one(tmp_path, monkeypatch):
    from dashboard._source import DB_ENV

    db = tmp_path / "empty.duckdb"
    tracer.Store(db).close()
    monkeypatch.setenv(DB_ENV, str(db))
    at = app("audit")
    no_exceptions(at)
    assert at.info[0].value.startswith("No entries yet. Acknowledging or resolving an alert")
