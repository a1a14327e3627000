"""``flightrec dashboard`` and ``flightrec serve`` fail in the terminal, with a next step, before any server starts."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

import tracer
from dashboard.testing import free_port
from tests.tracer.test_store import locked_store  # noqa: F401  (fixture)
from tracer._cli import main


def test_dashboard_on_a_missing_store_says_how_to_make_one(tmp_path):
    # A free port, not the default: a dashboard already on 8501 (`make demo`) must not decide this test.
    result = CliRunner().invoke(main, ["dashboard", "--db", str(tmp_path / "nope.duckdb"), "--port", str(free_port())])
    assert result.exit_code == 2
    assert "no trace store at" in result.output and "make demo" in result.output
    assert "Traceback" not in result.output and "http://" not in result.output


def test_dashboard_on_a_store_another_process_writes_names_it_and_points_at_serve(locked_store):  # noqa: F811
    path, pid = locked_store
    result = CliRunner().invoke(main, ["dashboard", "--db", str(path), "--port", str(free_port())])
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


@pytest.mark.parametrize(("command", "option"), [("dashboard", "host"), ("serve", "dashboard_host"), ("serve", "host")])
def test_the_dashboard_and_the_collector_bind_loopback_unless_told_otherwise(command, option):
    import dashboard._cli

    (param,) = [p for p in getattr(dashboard._cli, command).params if p.name == option]
    assert param.default == "127.0.0.1"


@pytest.mark.parametrize(("host", "warned"), [("0.0.0.0", True), ("", True), ("::", True),
                                              ("127.0.0.1", False), ("localhost", False), ("::1", False)])
def test_a_dashboard_bound_beyond_loopback_warns_that_it_has_no_login(tmp_path, monkeypatch, host, warned):
    from streamlit.web import bootstrap

    from dashboard._source import DB_ENV, MODE_ENV

    started = []
    monkeypatch.setattr(bootstrap, "load_config_options", lambda options: started.append(options["server_address"]))
    monkeypatch.setattr(bootstrap, "run", lambda *args: None)
    monkeypatch.setenv(DB_ENV, "")  # run() sets both for Streamlit's pages; restored after the test
    monkeypatch.setenv(MODE_ENV, "")
    db = tmp_path / "s.duckdb"
    tracer.Store(db).close()
    result = CliRunner().invoke(main, ["dashboard", "--db", str(db), "--host", host, "--port", "8599"])
    assert result.exit_code == 0, result.output
    assert started == [host]
    assert result.stdout.startswith(f"flightrec dashboard on http://{host}:8599, reading {db}")
    if warned:
        assert result.stderr.startswith(f"WARNING: the dashboard on {host}:8599 is reachable from other machines, "
                                        "and it has no login: anyone who reaches it can read every recorded "
                                        "conversation")
        assert "ssh -L 8599:127.0.0.1:8599 HOST" in result.stderr and "reverse proxy with a login" in result.stderr
    else:
        assert result.stderr == ""


def test_loopback_is_localhost_127_8_and_ipv6_one_only():
    from tracer._collector import check_exposure, is_loopback

    assert all(is_loopback(h) for h in ("localhost", "127.0.0.1", "127.1.2.3", "::1", "[::1]"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "", "::", "192.0.2.7", "example.com", "localhost.evil"))
    check_exposure("127.0.0.2", None)  # the collector's rule uses the same test
    with pytest.raises(tracer.ConfigError, match="binding to 0.0.0.0 exposes the collector"):
        check_exposure("0.0.0.0", None)


# A TEST-NET and a private address: no interface of a test machine has them, and no name is looked up.
@pytest.mark.parametrize("host", ["192.0.2.7", "10.255.255.1"])
def test_a_host_that_is_not_this_machines_is_a_clear_error(tmp_path, host):
    db = tmp_path / "s.duckdb"
    tracer.Store(db).close()
    result = CliRunner().invoke(main, ["dashboard", "--db", str(db), "--host", host, "--port", "8599"])
    assert result.exit_code == 2
    (line,) = result.output.strip().splitlines()
    assert line.startswith(f"error: cannot listen on {host}:8599 (") and line.endswith(
        f"{host} is not an address of this machine; bind to one of its own, 127.0.0.1 (this machine only) or "
        "0.0.0.0 (all).")


def test_serve_with_a_bad_content_mode_names_the_modes(tmp_path):
    result = CliRunner().invoke(main, ["serve", "--db", str(tmp_path / "s.duckdb"), "--content", "redact"])
    assert result.exit_code == 2
    assert "Invalid value for '--content': 'redact' is not one of 'full', 'redacted', 'none'." in result.output
    assert "Traceback" not in result.output and not (tmp_path / "s.duckdb").exists()


def test_serve_with_a_bad_content_mode_in_the_environment_says_where_it_came_from(tmp_path, monkeypatch):
    monkeypatch.setenv("FLIGHTREC_CONTENT", "partial")
    result = CliRunner().invoke(main, ["serve", "--db", str(tmp_path / "s.duckdb"), "--port", "0", "--no-grpc",
                                       "--no-dashboard"])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "content mode 'partial' (from $FLIGHTREC_CONTENT) is not one of full, redacted, none" in result.output
    assert not (tmp_path / "s.duckdb").exists()


def test_serve_whose_store_duckdb_invalidated_exits_with_an_error_for_its_supervisor(tmp_path, monkeypatch):
    # Serving on would answer 503 for ever (RESULTS §80); exiting lets a supervisor start it again, and
    # the next start replays the log, which holds every acknowledged span.
    import signal
    from types import SimpleNamespace

    import tracer.collector
    from tracer._errors import StoreInvalidatedError

    class Invalidated:  # a collector whose store DuckDB invalidates as soon as it serves
        def __init__(self, db: str, **_: object) -> None:
            self.store = SimpleNamespace(lake=True, shown=db)  # a lake: no read API to start beside it
            self.url, self.policy, self.fatal = "http://127.0.0.1:1", SimpleNamespace(mode="full"), None

        def serve_forever(self) -> None:
            self.fatal = StoreInvalidatedError("writing to the trace store s.duckdb failed, and DuckDB has "
                                               "invalidated the store until it is opened again: FATAL Error")

        def close(self) -> None:
            pass

    monkeypatch.setattr(tracer.collector, "Collector", Invalidated)
    monkeypatch.setattr(signal, "signal", lambda *_: None)  # serve's SIGTERM handler is not this test's
    result = CliRunner().invoke(main, ["serve", "--db", str(tmp_path / "s.duckdb"), "--port", "0", "--no-grpc",
                                       "--no-dashboard"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "DuckDB has invalidated the store" in result.output
    assert "Start flightrec serve again: every acknowledged span is in the store's log" in result.output
