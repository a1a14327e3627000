"""After deploy on the dashboard: the resolution rate on Overview, the Review page (the queue, a verdict,
a case for a dataset, judge-vs-human agreement, score trends), and a session's scores, outcome and
review on the Session page."""

from __future__ import annotations

from pathlib import Path

import yaml
from click.testing import CliRunner

import evals
import tracer
from dashboard import _source
from tests.dashboard.conftest import app, click, no_exceptions
from tracer._cli import main


def _metrics(at) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def _production(store, n: int) -> list[str]:
    with tracer.Store(str(store), read_only=True) as s:
        return [r[0] for r in s.sql("SELECT session_id FROM sessions WHERE origin = 'production' "
                                    "ORDER BY start_ns, session_id LIMIT ?", [n])]


def _write():
    """The store opened for writing as the dashboard's own writes open it: its read-only handle closed
    (DuckDB opens a file one way per process), its cached queries outdated after."""
    return _source.current().writing()


def _scored(store) -> None:
    """Scores every production session with the default policy, as `flightrec eval score --all` does."""
    result = CliRunner().invoke(main, ["eval", "score", "--all", "--since", "3650d", "--db", str(store)])
    assert result.exit_code == 0, result.output


def test_overview_shows_the_resolution_rate_only_where_outcomes_exist(store):
    at = app("overview")
    no_exceptions(at)
    assert "Resolution rate" not in _metrics(at) and "Completion rate" in _metrics(at)
    ids = _production(store, 5)
    with _write() as s:
        s.record_outcome(ids[0], resolved=False)
        s.record_outcome(ids[0], resolved=True, note="fixed after a callback")  # the newest is the outcome
        s.record_outcome(ids[1], resolved=True)
        s.record_outcome(ids[2], resolved=False)
        s.record_outcome(ids[3], score=0.5)  # says nothing of resolution
        eval_session = s.sql("SELECT session_id FROM sessions WHERE origin = 'eval' LIMIT 1")[0][0]
        s.record_outcome(eval_session, resolved=False)  # not production: not counted
    at = app("overview")
    no_exceptions(at)
    metric = next(m for m in at.metric if m.label == "Resolution rate")
    assert metric.value == f"{2 / 3:.1%}"
    assert metric.proto.delta == "of 3 (4 with an outcome)"
    assert "Completion rate" in _metrics(at)
    at = app("overview", origin="evals")
    no_exceptions(at)
    metric = next(m for m in at.metric if m.label == "Resolution rate")
    assert (metric.value, metric.proto.delta) == ("0.0%", "of 1 with an outcome")
