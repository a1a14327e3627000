"""``flightrec dashboard`` and ``flightrec serve`` fail in the terminal, with a next step, before any server starts."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

import tracer
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


def test_serve_on_a_taken_port_names_the_option_to_change(tmp_path, taken_port):
    result = CliRunner().invoke(main, ["serve", "--db", str(tmp_path / "s.duckdb"), "--port", str(taken_port)])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"error: cannot listen on 127.0.0.1:{taken_port} (address already in use): pass --port with a free port."]


@pytest.mark.parametrize("command", [["serve", "--port", "0", "--no-grpc", "--dashboard-port"],
                                     ["dashboard", "--port"]])
def test_the_dashboard_on_a_taken_port_names_the_option_to_change(tmp_path, taken_port, monkeypatch, command):
    import dashboard._cli

    def streamlit(*args, **kwargs):
        raise AssertionError("the dashboard started on a taken port")

    monkeypatch.setattr(dashboard._cli, "run", streamlit)
    db = tmp_path / "s.duckdb"
    tracer.Store(db).close()
    result = CliRunner().invoke(main, [command[0], "--db", str(db), *command[1:], str(taken_port)])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [f"error: cannot listen on 127.0.0.1:{taken_port} (address already "
                                                  f"in use): pass {command[-1]} with a free port."]
