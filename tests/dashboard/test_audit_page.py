"""The Audit page: the audit log newest first, filterable, each entry linked to what it names."""

from __future__ import annotations

import tracer
from tests.dashboard.conftest import app, no_exceptions


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
    assert "recorded as **dash-ops**" in at.caption[0].value  # the dashboard has no login, and says so
    assert f"{total:,} entries match" in [c.value for c in at.caption]  # the demo's label, and these two
    table = at.dataframe[0].value
    assert list(table.columns) == ["when", "actor", "action", "target", "open", "from", "detail"]
    assert table.iloc[0][["actor", "action", "target", "from", "detail"]].tolist() == [
        "bo", "fork", sid, "api", "turn 3 · new_session 019-fork"]
    assert table.iloc[0]["open"] == f"/session?id={sid}"
    assert table.iloc[1][["actor", "action", "target"]].tolist() == ["ana", "acknowledge", alert.alert_id]
    assert table.iloc[1]["open"] == f"/alerts?alert={alert.alert_id}"

    at.multiselect(key="audit_action").set_value(["acknowledge"]).run()
    no_exceptions(at)
    assert at.dataframe[0].value["target"].tolist() == [alert.alert_id]
    at.multiselect(key="audit_via").set_value(["dashboard"]).run()
    assert "No entry matches these filters." in [i.value for i in at.info]


def test_a_store_with_no_entries_says_what_records_one(tmp_path, monkeypatch):
    from dashboard._source import DB_ENV

    db = tmp_path / "empty.duckdb"
    tracer.Store(db).close()
    monkeypatch.setenv(DB_ENV, str(db))
    at = app("audit")
    no_exceptions(at)
    assert at.info[0].value.startswith("No entries yet. Acknowledging or resolving an alert")
