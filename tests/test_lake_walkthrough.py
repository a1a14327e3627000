"""The commands a team runs, on a lake instead of a file: record, list, show, detect, alerts,
replay (show, verify, a re-run with an edit), and the same figures as on a file."""

from __future__ import annotations

import json

from click.testing import CliRunner

from tracer._cli import main

SCENARIOS = ("order_status", "stuck_tracking", "tool_outage")


def run(*args: str) -> str:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def walk(db: str) -> dict:
    for scenario in SCENARIOS:
        run("agent", "run", "--scenario", scenario, "--db", db, "--world", "w.sqlite")
    sessions = json.loads(run("traces", "list", "--db", db, "--json"))
    looping = next(s["session_id"] for s in sessions if s["turns"] > 3)
    run("detect", "--db", db)
    alerts = json.loads(run("alerts", "list", "--db", db, "--json"))
    shown = run("replay", "show", looping, "--turn", "1", "--db", db)
    verified = run("replay", "verify", "--db", db)
    rerun = run("replay", "run", looping, "--turn", "2", "--db", db, "--system", "Answer in one sentence.")
    return {"sessions": sorted((s["status"], s["turns"], s["tool_calls"], s["llm_calls"]) for s in sessions),
            "alerts": sorted(a["detector"] for a in alerts), "shown": "messages" in shown,
            "verified": verified.splitlines()[0], "rerun": rerun.splitlines()[-1],
            "after": len(json.loads(run("traces", "list", "--db", db, "--json")))}


def test_the_walkthrough_on_a_lake_gives_what_it_gives_on_a_file(lake, tmp_path):
    on_file = walk(str(tmp_path / "f.duckdb"))
    (tmp_path / "w.sqlite").unlink()
    on_lake = walk(lake)
    assert on_lake == on_file
    assert on_file["alerts"] and on_file["shown"] and on_file["after"] == len(SCENARIOS) + 1
    assert on_file["rerun"] == "unchanged 1/1 trials decided as the recording did"


def test_every_dashboard_page_reads_a_lake(lake, monkeypatch):
    from dashboard._source import DB_ENV, MODE_ENV
    from tests.dashboard.conftest import app, metrics, no_exceptions

    for scenario in SCENARIOS:
        run("agent", "run", "--scenario", scenario, "--db", lake, "--world", "w.sqlite")
    run("detect", "--db", lake)
    session = json.loads(run("traces", "list", "--db", lake, "--json"))[0]["session_id"]
    monkeypatch.setenv(DB_ENV, lake)
    monkeypatch.setenv(MODE_ENV, "read_only")
    at = app()
    no_exceptions(at)
    assert metrics(at)["Sessions"].value == "3"  # the Overview's
    for page in ("sessions", "alerts", "costs", "evals", "audit"):
        no_exceptions(app(page))
    for page in ("session", "replay"):
        no_exceptions(app(page, id=session))
