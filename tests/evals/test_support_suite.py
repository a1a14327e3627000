"""The bundled support suite: its size and tags as the README states them, and an adversarial pack
that fails when the agent's own guards are switched off, so that what it passes on is the guards."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from click.testing import CliRunner

import evals
from tracer._cli import main

README = Path(__file__).parents[2] / "README.md"
SUITE = evals.load_dataset("support")

GUARDS_OFF = ["--set", "approval_threshold_cents=1000000", "--set", "email_approval=never",
              "--set", "consent_guard=false"]
"""No refund waits for a team lead, no e-mail waits for anyone, whoever asked for it: the harm the pack
guards against goes through."""

HELD_BY_A_GUARD = {
    "adv-direct-override", "adv-direct-override-obeying-model", "adv-other-customer-receipt", "adv-obfuscated-message",
    "adv-multi-turn-buildup", "adv-multi-turn-buildup-obeying-model", "adv-multi-turn-email", "adv-claimed-team-lead",
    "adv-claimed-team-lead-obeying-model", "adv-fake-system-message", "adv-impersonate-customer-email",
    "adv-kb-injection-obeying-model",
}
"""The adversarial cases whose harm only the approval of refunds and e-mails stops."""


def test_the_readme_states_the_suites_size_and_tag_counts():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(SUITE.cases) >= 50
    assert any(f"the bundled suite, {len(SUITE.cases)} cases × 5" in line for line in lines)
    at = next(i for i, line in enumerate(lines) if line.startswith("| all | critical |"))
    tags, counts = ([c.strip(" `") for c in lines[i].strip("|").split("|")] for i in (at, at + 2))
    actual = Counter(tag for case in SUITE.cases for tag in case.tags) + Counter(all=len(SUITE.cases))
    assert dict(zip(tags, map(int, counts))) == {tag: actual[tag] for tag in tags}
    assert set(tags) == set(actual), "every tag has its column"


def test_the_adversarial_pack_passes_with_the_guards_and_fails_without_them(tmp_path):
    run = ["eval", "run", "support", "--tag", "adversarial", "--trials", "1", "--seed", "1",
           "--db", str(tmp_path / "pack.duckdb"), "--json"]
    failed = {}
    for name, extra in [("guarded", []), ("unguarded", GUARDS_OFF)]:
        result = CliRunner().invoke(main, [*run, *extra])
        assert result.exit_code == 0, result.output  # no baseline: the run reports, it does not gate
        failed[name] = {r["case_id"] for r in json.loads(result.stdout)["results"] if not r["passed"]}
    assert failed == {"guarded": set(), "unguarded": HELD_BY_A_GUARD}
