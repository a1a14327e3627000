"""The Sessions page against the demo store."""

from __future__ import annotations

import tracer
from tests.dashboard.conftest import app, no_exceptions


def test_sessions_lists_every_session_with_links(store):
    at = app("sessions")
    no_exceptions(at)
    table = at.dataframe[0].value
    with tracer.Store(str(store), read_only=True) as s:
        total = s.count_sessions()
    assert len(table) == min(total, 100)
    assert table["open"].iloc[0].startswith("/session?id=")
    assert f"{total:,} sessions match" in at.caption[0].value
