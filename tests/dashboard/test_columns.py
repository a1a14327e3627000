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


def test_why_the_candidate_failed_comes_first_in_the_comparison_of_two_runs(store):
    at = app("evals")
    no_exceptions(at)
    headers = link_tables(at)[1].headers
    assert headers.index("why the candidate failed") <= 4, headers
