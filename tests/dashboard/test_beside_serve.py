"""The CLI beside a running ``flightrec serve``: read commands print what they print from the file,
alert and label changes go through serve, and commands that must write the file themselves say
who holds it and what to do."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from click.testing import CliRunner

import tracer
from tracer._cli import main
from tracer._holder import holder_path

FLIGHTREC = str(Path(sys.executable).with_name("flightrec"))


@contextmanager
def serving(db: str) -> Iterator[tuple[subprocess.Popen, str]]:
    """``flightrec serve --no-dashboard`` holding ``db``: its process and its URL."""
    proc = subprocess.Popen([FLIGHTREC, "serve", "--db", db, "--port", "0", "--no-grpc", "--no-dashboard"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        line = proc.stdout.readline()  # printed once the collector and the read API listen
        assert "flightrec collector on" in line, proc.stderr.read()
        yield proc, line.split(" on ")[1].split("/v1/traces")[0]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


@pytest.fixture
def served(store):
    """A copy of the demo store, held by serve: (db, serve's process, its URL)."""
    with serving(str(store)) as (proc, url):
        yield str(store), proc, url


def cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


def _read_commands(db: str) -> list[list[str]]:
    """Every read command, on sessions, alerts and eval runs the store has, plus some that fail."""
    with tracer.Store(db, read_only=True) as store:
        sessions = [s for s in store.list_sessions(limit=100) if s.llm_calls >= 3 and s.content_mode == "full"]
        alert = store.alerts(limit=1)[0].alert_id
        runs = [r.run_id for r in store.eval_runs()]
    a, b = sessions[0].session_id, sessions[1].session_id
    commands = [
        ["traces", "list"], ["traces", "list", "--json", "--agent", "support", "--limit", "5", "--offset", "3"],
        # A prefix with random bits: the first 13 characters are the millisecond, which sessions share.
        ["traces", "show", a], ["traces", "show", b[:23], "--json"], ["traces", "show", "no-such-session"],
        ["replay", "show", a, "--turn", "2"], ["replay", "show", b, "--turn", "1", "--json"],
        ["replay", "show", a, "--turn", "99"],
        ["replay", "diff", a, b], ["replay", "diff", f"{a}:1", f"{b}:1"], ["replay", "diff", f"{a}:1", f"{a}:2",
                                                                          "--context", "--json"],
        ["replay", "verify"], ["replay", "verify", "--session", a, "--json"], ["replay", "rerun", b, "--recorded"],
        ["alerts", "list"], ["alerts", "list", "--status", "open", "--json"], ["alerts", "show", alert],
        ["alerts", "show", "zzzz"],
        ["eval", "list"], ["eval", "list", "--json"], ["eval", "show", "baseline"], ["eval", "show", runs[0], "--json"],
        ["eval", "compare", "baseline", runs[0]], ["eval", "show", "no-such-run"],
        ["eval", "add-case", b, "--dataset", "cases.yaml"],  # reads the store, writes a dataset
    ]
    return [[*c, "--db", db] for c in commands]


def test_read_commands_beside_serve_print_what_they_print_from_the_file(store, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")  # the same width in this process and in the commands it starts
    db = os.path.relpath(store)  # serve has it as an absolute path: messages must name it as given here
    commands = _read_commands(db)
    direct = [cli(*c) for c in commands]
    assert [code for code, _ in direct].count(2) == 4  # the unknown session, turn, alert and run
    case = Path("cases.yaml").read_text()
    Path("cases.yaml").unlink()
    shell = subprocess.run([FLIGHTREC, "traces", "show", commands[2][2], "--db", db], capture_output=True, text=True)
    with serving(str(store)):
        with tracer.connect(db) as through:
            assert isinstance(through, tracer.ServedStore)
        for command, (code, output) in zip(commands, direct):
            assert cli(*command) == (code, output), command
        assert Path("cases.yaml").read_text() == case
        again = subprocess.run([FLIGHTREC, "traces", "show", commands[2][2], "--db", db], capture_output=True,
                               text=True)
        assert (again.returncode, again.stdout) == (shell.returncode, shell.stdout) and shell.returncode == 0


def test_alert_and_label_changes_go_through_serve(served):
    db, _, _ = served
    alert = json.loads(cli("alerts", "list", "--json", "--db", db)[1])[0]
    code, output = cli("alerts", "ack", alert["alert_id"], "--db", db)
    assert (code, output) == (0, f"{alert['alert_id']} acknowledged: {alert['title']}\n")
    assert json.loads(cli("alerts", "show", alert["alert_id"], "--json", "--db", db)[1])["status"] == "acknowledged"
    run = json.loads(cli("eval", "list", "--json", "--db", db)[1])[0]["run_id"]
    assert cli("eval", "label", run[:8], "nightly", "--db", db) == (0, f"nightly → {run}\n")
    assert json.loads(cli("eval", "show", "nightly", "--json", "--db", db)[1])["run"]["run_id"] == run


def test_commands_that_write_the_file_name_the_serve_and_what_to_do(served):
    db, proc, url = served
    expected = (f"error: the trace store {db} is held by `flightrec serve` (PID {proc.pid}, {url}). Commands that "
                f"read it, and alert and label changes, go through that serve (`flightrec traces list --db {db}` "
                "works now); this one needs the file itself: stop that serve (Ctrl-C where it runs), or use another "
                "file with --db / FLIGHTREC_DB.\n")
    assert cli("detect", "--db", db) == (2, expected)
    assert cli("agent", "run", "--scenario", "order_status", "--db", db) == (2, expected)
    with pytest.raises(tracer.StoreLockedError) as err:
        tracer.Store(db, read_only=True)
    assert err.value.holder is not None and err.value.holder.pid == proc.pid
    proc.send_signal(signal.SIGTERM)
    proc.wait(30)
    assert not holder_path(db).exists()  # a clean exit takes it away
    with tracer.connect(db) as store:
        assert isinstance(store, tracer.Store)
