"""The README's Replay walkthrough runs as written, offline, and shows the decision change."""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _section() -> str:
    readme = (ROOT / "README.md").read_text()
    return readme[readme.index("## Replay\n"):readme.index("## Commands\n")]


def test_replay_section_follows_the_reference_agent():
    readme = (ROOT / "README.md").read_text()
    assert readme.index("## The reference agent") < readme.index("## Replay\n") < readme.index("## Commands\n")


def test_walkthrough_commands_and_python_example_run(tmp_path):
    section = _section()
    shell = re.findall(r"```sh\n(.*?)```", section, re.S)[0]
    python = re.findall(r"```python\n(.*?)```", section, re.S)[0]
    bindir = pathlib.Path(sys.executable).parent
    script = "set -euo pipefail\n" + shell.replace(".venv/bin/", f"{bindir}/")
    env = {"PATH": f"{bindir}:/usr/bin:/bin"}
    out = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr + out.stdout
    assert "(matches the recorded hash)" in out.stdout
    assert "changed   3/3 trials decided differently from the recording" in out.stdout
    assert "first divergence at turn 3" in out.stdout
    assert re.search(r"^(\d+)/\1 calls rebuilt exactly$", out.stdout, re.M)
    py = subprocess.run([sys.executable, "-c", python], cwd=tmp_path, env=env, capture_output=True, text=True,
                        timeout=300)
    assert py.returncode == 0, py.stderr
    assert py.stdout.splitlines() == ["True 3 3", "the reference agent's simulator (in process)"]
