"""The columns a reader scans a table for come before the long tail of numbers, so that at 1440 px
they are in view without scrolling sideways (the browser screenshots show the widths)."""

from __future__ import annotations

import pytest

from tests.dashboard.conftest import app, no_exceptions


@pytest.mark.parametrize(("page", "table", "key_columns"), [
    ("sessions", 0, ["status_reason"]),  # why it ended
    ("alerts", 0, ["title", "last_seen"]),  # what happened, last seen
    ("evals", -1, ["why"]),  # why the candidate failed, in the comparison of two runs
])
def test_key_columns_come_first(store, page, table, key_columns):
    at = app(page)
    no_exceptions(at)
    columns = list(at.dataframe[table].value.columns)
    for column in key_columns:
        assert columns.index(column) <= 4, columns
