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
