"""What ``flightrec serve`` pays to import before it serves: CPU time, peak memory, and whether the
eval harness (anthropic, the judge, the statistics) comes along with the detectors.

    python benchmarks/bench_serve_imports.py [--tree PATH] [--runs 7]

Each run is a fresh interpreter that imports what serve imports on its way to serving: its
command (``dashboard._cli``), the collector, the gRPC receiver, the read API, and the module of
every ``flightrec.serve_hooks`` entry point named in the tree's ``pyproject.toml`` (the detectors).
``--tree`` measures another checkout (``git archive`` of a base commit, say) with this venv's
packages: the editable install's finder is set aside, so the tree's own sources are imported.
Reported: medians of the child's CPU time (user+sys) and peak RSS, over interleavable runs.
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

_CHILD = """
import json, resource, sys
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f)]
sys.path.insert(0, {tree!r})
import dashboard._cli, tracer._collector, tracer._grpc, tracer._read_api
{hooks}
mods = sorted(sys.modules)
print(json.dumps({{"anthropic": "anthropic" in sys.modules, "modules": len(mods),
                  "evals": [m for m in mods if m.startswith("evals")]}}))
"""


def hook_modules(tree: Path) -> list[str]:
    """The modules the tree's ``flightrec.serve_hooks`` entry points name."""
    text = (tree / "pyproject.toml").read_text()
    section = text.split('[project.entry-points."flightrec.serve_hooks"]', 1)[1].split("\n[", 1)[0]
    return re.findall(r'=\s*"([\w.]+):', section)


def one_run(tree: Path) -> dict[str, object]:
    code = _CHILD.format(tree=str(tree), hooks="\n".join(f"import {m}" for m in hook_modules(tree)))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    found = json.loads(out)
    found["cpu_s"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    found["max_rss_mb"] = after.ru_maxrss / 1024  # the largest child so far: runs are alike, so it is this one's
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", type=Path, default=HERE.parent, help="Checkout to measure (default: this one).")
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    runs = [one_run(args.tree.resolve()) for _ in range(args.runs)]
    last = runs[-1]
    print(json.dumps({"tree": str(args.tree), "hooks": hook_modules(args.tree), "runs": args.runs,
                      "cpu_s_median": round(statistics.median(r["cpu_s"] for r in runs), 3),
                      "max_rss_mb": round(max(r["max_rss_mb"] for r in runs), 1),
                      "anthropic": last["anthropic"], "modules": last["modules"], "evals_modules": last["evals"]}))


if __name__ == "__main__":
    main()
