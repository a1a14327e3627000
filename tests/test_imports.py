"""The map in docs/architecture.md, checked: the arrows are read from that page, every import in
the repository from the code (``ast``, so the imports inside functions count too), and each
import is held against the arrows::

    tracer  <-  reference_agent, replay  <-  evals  <-  dashboard
                                  evals.detectors (tracer only)  <-  evals, dashboard

A package imports only the packages to its left, and only their public surface: a cross-package
``from tracer._x import ...`` fails, as does ``replay`` importing ``reference_agent``. The one
exception is ``reference_agent.plugin``, the reference agent's registration with replay and evals:
it imports them as a team's own registration module would, and nothing imports it (the
``flightrec.agents`` entry point names it).

``tests/`` and ``benchmarks/`` may import any package, and its private modules too: they test and
measure the units behind the public surface (the store's writer, the OTLP decoder). Nothing
imports them, except that tests import each other's fixtures; a benchmark that needs a helper of
a test imports a public one instead (``tracer.reference_problems``, ``dashboard.testing``).
``docs/`` holds examples users copy, so they import public names only.
"""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("tracer", "reference_agent", "replay", "evals", "dashboard")


def _layout() -> dict[str, set[str]]:
    """The arrows drawn in docs/architecture.md: a line ``A, B  <-  C`` lets C import A and B."""
    block = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8").split("## The arrows", 1)[1]
    allowed: dict[str, set[str]] = {"tracer": set(), "docs": {*PACKAGES, "evals.detectors"}}
    for line in block.split("```")[1].strip().splitlines():
        left, _, right = line.partition("<-")
        allowed.setdefault(right.strip(), set()).update(name.strip() for name in left.split(","))
    return allowed


ALLOWED = _layout()
"""What each part may import, besides itself. Parts not named (tests, benchmarks) may import any package."""

_HOME_OF = {"reference_agent.plugin": "reference_agent"}
"""A part that is a module of a package: it may import that package's private modules."""

_PARTS = ("reference_agent.plugin", "evals.detectors", *PACKAGES, "tests", "benchmarks", "docs")
"""The parts of the repository, longest name first where one holds another."""


def _part(module: str) -> str | None:
    """The part a dotted module name belongs to; None for the standard library and third parties."""
    return next((p for p in _PARTS if module == p or module.startswith(p + ".")), None)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[int, str]]:
    """Every module ``path`` imports, as (line, dotted name); ``from m import _x`` names ``m._x``, so
    that a private name imported from a public module counts as private."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                private = alias.name.startswith("_") and not alias.name.startswith("__")
                out.append((node.lineno, f"{target}.{alias.name}" if private or not node.module else target))
    return out


def _private(module: str, part: str) -> bool:
    """Whether ``module`` is reached through a private name below ``part`` (``tracer._cli``)."""
    rest = module[len(part):].split(".")
    return any(name.startswith("_") and not name.startswith("__") for name in rest)


def _sources() -> list[Path]:
    return sorted(p for top in (*PACKAGES, "tests", "benchmarks", "docs") for p in (ROOT / top).rglob("*.py")
                  if "__pycache__" not in p.parts)


def test_the_map_is_read():
    assert set(ALLOWED) == {*PACKAGES, "evals.detectors", "reference_agent.plugin", "docs"}, ALLOWED
    assert ALLOWED["evals.detectors"] == {"tracer"} and "reference_agent" not in ALLOWED["evals"]


def test_the_sources_are_found():
    # A test that reads nothing passes whatever the imports are.
    names = {_module_name(p) for p in _sources()}
    assert {"tracer._store", "evals.detectors._detect", "dashboard._cli", "reference_agent.plugin",
            "benchmarks.bench_dashboard", "tests.test_imports"} <= names


def test_imports_follow_the_layout():
    problems = []
    for path in _sources():
        here = _part(_module_name(path))
        for line, module in sorted(set(_imports(path))):
            there = _part(module)
            if there is None or there in (here, _HOME_OF.get(here)):
                continue
            where = f"{path.relative_to(ROOT)}:{line}: imports {module}"
            if there in ("tests", "benchmarks") and here != "tests":
                problems.append(f"{where}, but nothing imports {there}/ (make what is needed public in a package)")
            elif here in ALLOWED and there not in ALLOWED[here]:
                problems.append(f"{where}, against the layout: {here} may import "
                                f"{', '.join(sorted(ALLOWED[here])) or 'nothing of ours'} (docs/architecture.md)")
            elif here in ALLOWED and _private(module, there):
                problems.append(f"{where}, a private module of {there}: import its public surface, or make the "
                                f"name public there")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("package", [*PACKAGES, "evals.detectors", "tracer.cli", "tracer.collector", "tracer.testing",
                                     "dashboard.testing"])
def test_every_public_name_exists(package):
    # evals loads its harness's names on first use: a name listed but not mapped fails only here.
    module = importlib.import_module(package)
    missing = [name for name in module.__all__ if not hasattr(module, name)]
    assert not missing, f"{package}.__all__ lists names it does not have: {missing}"


def test_serve_and_the_detectors_load_no_eval_harness():
    # `flightrec serve` runs the collector and, through its hook, the detectors: neither needs the
    # harness (anthropic, the judge, the statistics), which would cost every serve process its memory.
    code = ("import sys; from importlib.metadata import entry_points; import tracer.collector; "
            "[ep.load() for ep in entry_points(group='flightrec.serve_hooks')]; "
            "import click; from tracer._cli import main; ctx = click.Context(main); "
            "main.get_command(ctx, 'serve'); main.get_command(ctx, 'detect'); "
            "print(' '.join(sorted(sys.modules)))")
    loaded = set(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                                cwd=ROOT).stdout.split())
    assert "evals.detectors" in loaded
    # evals._online is the scoring hook: it loads the scorers (and anthropic, for the judge) only when a
    # scoring policy turns it on.
    harness = sorted(m for m in loaded if m == "anthropic" or m.startswith(("anthropic.", "replay", "reference_agent"))
                     or (m.startswith("evals.") and not m.startswith(("evals.detectors", "evals._online"))))
    assert not harness, f"serve's path imports {harness[:10]}"
