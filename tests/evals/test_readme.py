"""The README's Evals section: its dataset example loads and runs."""

from __future__ import annotations

import re
from pathlib import Path

import evals

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_dataset_example_is_a_valid_dataset(tmp_path):
    section = README.read_text().split("## Evals", 1)[1]
    example = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert example is not None
    path = tmp_path / "example.yaml"
    path.write_text(example.group(1))
    dataset = evals.load_dataset(path)
    assert [c.id for c in dataset.cases] == ["refund-kettle"] and dataset.scorers
    run = evals.run_eval(dataset, trials=1, seed=3, db=str(tmp_path / "e.duckdb"))
    assert run.run.passed_trials == 1, run.results[0]


def test_the_readme_custom_agent_example_is_the_runnable_file():
    section = README.read_text().split("## Evals", 1)[1]
    example = re.search(r"```python\n(.*?)```", section, re.S)
    assert example is not None
    assert example.group(1) in (README.parent / "docs" / "custom_agent.py").read_text()


def test_the_readme_path_for_a_custom_agent_runs_as_printed(tmp_path):
    """Every command of "Your own agent", from the repository's root, on a store of the test's own."""
    import subprocess
    import sys

    section = README.read_text().split("## Your own agent", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```sh\n(.*?)```", section, re.S)[0]
    bindir = Path(sys.executable).parent
    script = "set -uo pipefail\n" + commands.replace(".venv/bin/", f"{bindir}/")
    env = {"PATH": f"{bindir}:/usr/bin:/bin", "FLIGHTREC_DB": str(tmp_path / "trips.duckdb"), "HOME": str(tmp_path)}
    out = subprocess.run(["bash", "-c", script + "\necho exit=$?"], cwd=README.parent, env=env, capture_output=True,
                         text=True, timeout=300)
    text = out.stdout
    assert "unchanged 3/3 trials decided as the recording did" in text, out.stderr + text
    assert "changed   1/1 trials decided differently from the recording" in text
    assert "the agent took the recorded path (3 decisions checked)" in text
    assert "tools     2 served from the recording, 0 run live" in text
    assert "verdict   REGRESSION" in text and text.rstrip().endswith("exit=1"), out.stderr + text
    assert "Traceback" not in out.stderr
