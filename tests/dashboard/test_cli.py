"""``flightrec dashboard`` and ``flightrec serve`` fail in the terminal, with a next step, before any server starts."""

from __future__ import annotations

from click.testing import CliRunner

from tests.tracer.test_store import locked_store  # noqa: F401  (fixture)
from tracer._cli import main


def test_dashboard_on_a_missing_store_says_how_to_make_one(tmp_path):
    result = CliRunner().invoke(main, ["dashboard", "--db", str(tmp_path / "nope.duckdb")])
    assert result.exit_code == 2
    assert "no trace store at" in result.output and "make demo" in result.output
    assert "Traceback" not in result.output and "http://" not in result.output


def test_dashboard_on_a_store_another_process_writes_names_it_and_points_at_serve(locked_store):  # noqa: F811
    path, pid = locked_store
    result = CliRunner().invoke(main, ["dashboard", "--db", str(path)])
    assert result.exit_code == 2
    assert "Traceback" not in result.output and "http://" not in result.output
    assert f"process {pid}" in result.output and "flightrec serve" in result.output
