"""The README's example is the quickstart file, and it runs offline on a fresh store."""

from __future__ import annotations

import json
import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_readme_example_is_the_quickstart_file():
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, re.S)
    assert (ROOT / "docs" / "quickstart.py").read_text() in blocks


def test_readme_starts_with_the_two_commands():
    lines = [line for line in (ROOT / "README.md").read_text().splitlines() if line.strip()]
    assert lines[1:4] == ["```sh",
                          "make demo   # set up .venv, record 200 support-agent sessions offline, "
                          "gate a regression, open the dashboard",
                          "make test   # set up .venv and run the tests"]


def test_quickstart_runs_and_is_listed(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "FLIGHTREC_DB": str(tmp_path / "q.duckdb")}
    out = subprocess.run([sys.executable, str(ROOT / "docs" / "quickstart.py")], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "recorded session" in out.stdout
    flightrec = pathlib.Path(sys.executable).parent / "flightrec"  # the installed console script
    listing = subprocess.run([str(flightrec), "traces", "list", "--json"], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=120)
    # Under its own name: "support" is the reference agent's, and the two would share a baseline.
    assert [(s["agent"], s["status"]) for s in json.loads(listing.stdout)] == [("quickstart", "ok")]


def test_quickstart_comments_promise_no_flag():
    # The script reads no command line, so a comment naming a --flag sends the reader after nothing.
    comments = re.findall(r"#.*", (ROOT / "docs" / "quickstart.py").read_text())
    assert comments and not [c for c in comments if re.search(r"(^|\s)--?[a-z]", c)]


def test_the_offline_testing_example_runs_as_printed(tmp_path):
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("### Test your agent offline\n"):readme.index("### Options\n")]
    assert readme.index("## Instrument an agent\n") < readme.index("### Test your agent offline\n")
    code = re.findall(r"```python\n(.*?)```", section, re.S)[0]
    printed = re.findall(r"```text\n(.*?)```", section, re.S)[0]
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout == printed
