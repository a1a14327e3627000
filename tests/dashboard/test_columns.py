"""The columns a reader scans a table for come before the long tail of numbers, so that at 1440 px
they are in view without scrolling sideways (the browser screenshots show the widths)."""

from __future__ import annotations

import pytest

from tests.dashboard.conftest import app, link_tables, no_exceptions


@pytest.mark.parametrize("origin", ["production", "all"])  # "all" adds an origin column
def test_why_a_session_ended_comes_first_on_sessions(store, origin):
    at = app("sessions", origin=origin)
    no_exceptions(at)
    headers = link_tables(at)[0].headers
    assert headers.index("why it ended") <= 4, headers


def test_what_happened_and_when_come_first_on_alerts(store):
    at = app("alerts")
    no_exceptions(at)
    headers = link_tables(at)[0].headers
    assert headers.index("what happened") <= 4 and headers.index("last seen") <= 4, headers


@pytest.mark.parametrize(("page", "table", "key_columns"), [
    ("evals", -1, ["why"]),  # why the candidate failed, in the comparison of two runs
])
def test_key_columns_come_first(store, page, table, key_columns):
    at = app(page)
    no_exceptions(at)
    columns = list(at.dataframe[table].value.columns)
    for column in key_columns:
        assert columns.index(column) <= 4, columns
