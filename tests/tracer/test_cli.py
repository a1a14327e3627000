"""The ``flightrec traces`` commands, through click's runner, as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import EntryPoint, entry_points

import pytest
from click.testing import CliRunner

import tracer
from tests.tracer.fakes import FakeAPI, run_agent
from tests.tracer.test_store import locked_store  # noqa: F401  (fixture)
from tracer._cli import _declared, _Root, main


@pytest.fixture
def recorded():
    rec = tracer.Recorder()
    ids = []
    for i in range(3):
        with rec.session(agent=f"agent-{i}") as s:
            run_agent(rec.instrument(FakeAPI(errors=[529] if i == 0 else []).client()))
        ids.append(s.id)
    rec.shutdown()
    return ids


def run(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_list_shows_every_session_newest_first(recorded):
    result = run("traces", "list")
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert lines[0].split() == ["SESSION", "AGENT", "START", "UTC", "STATUS", "TURNS", "TOOLS", "TOKENS", "COST",
                                "TIME"]
    assert [line.split()[1] for line in lines[1:4]] == ["agent-2", "agent-1", "agent-0"]
    assert all(len(line) <= 100 for line in lines)


def test_list_json(recorded):
    rows = json.loads(run("traces", "list", "--json").output)
    assert [r["session_id"] for r in rows] == recorded[::-1]
    first = rows[-1]
    assert (first["turns"], first["llm_calls"], first["llm_errors"], first["tool_calls"]) == (2, 3, 1, 1)
    assert first["cost_usd"] > 0 and first["duration_ms"] > 0


def test_list_pages(recorded):
    out = run("traces", "list", "--limit", "2").output
    assert "2 of 3 sessions shown; more with --offset 2" in out


def test_show_tells_the_decisions_within_100_columns(recorded):
    result = run("traces", "show", recorded[0][:13])
    assert result.exit_code == 0
    out = result.output
    assert all(len(line) <= 100 for line in out.splitlines()), max(out.splitlines(), key=len)
    for expected in ("── Turn 1", "── Turn 2", "failed    attempt 0: overloaded_error (HTTP 529)",
                     "chose     tool_use: get_order", "why       Let me check the order.",
                     "could     *get_order*, search_kb, escalate_to_human", "tool      get_order ok",
                     "user: Where is A-1?", "said      Order A-1 shipped", "tokens = 0.2% of 200k"):
        assert expected in out


def test_show_json(recorded):
    data = json.loads(run("traces", "show", recorded[1], "--json").output)
    assert data["session"]["session_id"] == recorded[1]
    assert data["turns"][0]["llm_calls"][0]["tools_chosen"] == ["get_order"]


def test_empty_store_says_what_to_do(tmp_path):
    tracer.Store(tmp_path / "empty.duckdb").close()
    out = run("traces", "list", "--db", str(tmp_path / "empty.duckdb")).output
    assert "No sessions recorded yet" in out


@pytest.mark.parametrize("args, message", [
    (["traces", "show", "nope"], "no session 'nope'"),
    (["traces", "list", "--db", "missing.duckdb"], "no trace store at missing.duckdb"),
])
def test_errors_are_one_line_and_exit_2(recorded, args, message):
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output


def test_locked_store_message(locked_store):  # noqa: F811
    path, pid = locked_store
    result = CliRunner().invoke(main, ["traces", "list", "--db", str(path)])
    assert result.exit_code == 2 and f"process {pid}" in result.output


def test_db_from_environment(recorded, monkeypatch, tmp_path):
    monkeypatch.setenv("FLIGHTREC_DB", str(tmp_path / "other.duckdb"))
    assert "no trace store at" in CliRunner().invoke(main, ["traces", "list"]).output


def test_list_ids_are_long_enough_to_tell_sessions_of_the_same_millisecond_apart():
    from tracer._render import sessions_table

    row = dict(session_id="", agent="a", start_ns=0, duration_ms=1.0, status="ok", status_reason=None,
               content_mode="full", turns=1, llm_calls=1, llm_errors=0, tool_calls=0, tool_errors=0, input_tokens=1,
               output_tokens=1, cache_read_tokens=0, cache_write_tokens=0, cost_usd=0.0, cost_usd_known_part=0.0)
    rows = [tracer.SessionSummary(**{**row, "session_id": sid})
            for sid in ("01a1fe89-94b1-7937-a2cf-d8308bc0a869", "01a1fe89-94b1-71c2-9e4f-0d6c1f7a2b11",
                        "01a1fe89-9551-707b-9658-7337c3706999")]
    ids = [line.split()[0] for line in sessions_table(rows, 100).splitlines()[1:]]
    assert ids == ["01a1fe89-94b1-79", "01a1fe89-94b1-71", "01a1fe89-9551-70"]


# -- the root command's help ------------------------------------------------------------------------


def test_top_level_help_imports_no_command_module():
    # In a fresh interpreter: this process has imported everything already.
    code = ("import sys\nfrom tracer._cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('anthropic', 'streamlit', 'pandas', 'reference_agent', 'evals', 'replay',"
            " 'dashboard') if m in sys.modules), file=sys.stderr)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stderr.strip() == "[]"
    assert "Commands:" in out.stdout and "traces" in out.stdout


def test_help_read_from_source_is_the_help_of_the_loaded_command():
    for ep in entry_points(group="flightrec.commands"):
        declared = _declared(ep)
        assert declared is not None, f"{ep.value}: its help could not be read without importing it"
        loaded = ep.load()
        assert (declared.get_short_help_str(60), declared.hidden) == (loaded.get_short_help_str(60), loaded.hidden)


def test_a_command_whose_help_cannot_be_read_is_loaded(tmp_path, monkeypatch):
    (tmp_path / "plugin_pkg").mkdir()
    (tmp_path / "plugin_pkg" / "__init__.py").write_text("")
    (tmp_path / "plugin_pkg" / "_cli.py").write_text(
        "import click\nHELP = 'Built at run time.'\n\n@click.command(help=HELP)\ndef hello():\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    ep = EntryPoint("hello", "plugin_pkg._cli:hello", "flightrec.commands")
    assert _declared(ep) is None
    monkeypatch.setattr(_Root, "_plugins", staticmethod(lambda: {"hello": ep}))
    result = run("--help")
    assert result.exit_code == 0
    assert "hello  Built at run time." in result.output


def test_commands_still_load_on_demand():
    assert "Usage: main traces list [OPTIONS]" in run("traces", "list", "--help").output
    result = CliRunner().invoke(main, ["no-such-command"])
    assert result.exit_code == 2
    assert "No such command 'no-such-command'" in result.output


def test_hints_run_as_printed_with_the_store_the_user_named(tmp_path):
    from reference_agent import Agent, World, get_scenario
    from tracer._cli import main as root

    db = str(tmp_path / "my store.duckdb")
    recorder = tracer.Recorder(db)
    with World(str(tmp_path / "w.sqlite")) as world:
        sid = Agent(world, recorder).run(get_scenario("refund_over_threshold"), seed=0).session_id
    recorder.shutdown()
    listed = CliRunner().invoke(root, ["traces", "list", "--db", db]).output
    assert f"Details of one: flightrec traces show SESSION_ID --db '{db}'" in listed
    approve = CliRunner().invoke(root, ["agent", "approve", sid, "--db", db,
                                        "--world", str(tmp_path / "w.sqlite")]).output
    assert f"trace    flightrec traces show {sid} --db '{db}'" in approve, approve
    alerts = CliRunner().invoke(root, ["alerts", "list", "--db", db]).output
    assert alerts == f"No alerts. Run the detectors with `flightrec detect --db '{db}'`.\n"


def test_hints_leave_out_a_store_named_by_the_environment(tmp_path, monkeypatch):
    from tracer._cli import main as root

    monkeypatch.setenv("FLIGHTREC_DB", str(tmp_path / "env.duckdb"))
    tracer.Recorder(str(tmp_path / "env.duckdb")).shutdown()
    alerts = CliRunner().invoke(root, ["alerts", "list"]).output
    assert alerts == "No alerts. Run the detectors with `flightrec detect`.\n"
