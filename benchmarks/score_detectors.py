"""Scores the detectors on the labelled corpus: precision and recall per family, and what fired where.

    python benchmarks/score_detectors.py --db corpus.duckdb --labels corpus.labels.jsonl [--json OUT]

The corpus comes from ``build_detect_corpus.py``. This runs ``evals.detectors.detect`` over the whole store
with the default thresholds (it writes the alerts into the store; running it again changes
nothing), then reads which sessions were flagged: a session is flagged by a detector when one of
its alerts has an observation for the session (``alert_observations``) or lists the session among
its sessions (``alerts.session_ids``, as route-level alerts do).

Families: ``loops`` and ``cost`` are the alerts' own family; ``steps`` are the detectors named
``steps.*`` or ``*.steps*`` (when there is none, steps has no predictions). A session labelled
null for a family is left out of that family's score.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _workload import table  # noqa: E402
from corpus_agents import HARD_NEGATIVES, KINDS  # noqa: E402

import tracer  # noqa: E402
from evals.detectors import FAMILIES_OF, detect  # noqa: E402

FAMILIES = ("loops", "cost", "steps")


def is_steps(detector: str) -> bool:
    return detector.startswith("steps.") or ".steps" in detector


def flagged_by(store: tracer.Store) -> dict[str, set[tuple[str, str]]]:
    """Each flagged session's (detector, family) pairs."""
    out: dict[str, set[tuple[str, str]]] = collections.defaultdict(set)
    for session_id, detector, family in store.sql(
            "SELECT o.observation, a.detector, a.family FROM alert_observations o JOIN alerts a USING (fingerprint)"):
        out[session_id].add((detector, family))
    for detector, family, session_ids in store.sql("SELECT detector, family, session_ids FROM alerts"):
        for session_id in session_ids:
            out[session_id].add((detector, family))
    return out


def families_of(pairs: set[tuple[str, str]]) -> set[str]:
    return {f for _, f in pairs} | ({"steps"} if any(is_steps(d) for d, _ in pairs) else set())


def ratio(a: int, b: int) -> float | None:
    return a / b if b else None


def fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def counts(pairs: list[set[tuple[str, str]]]) -> dict[str, int]:
    """Sessions flagged by each detector."""
    c: collections.Counter[str] = collections.Counter(d for p in pairs for d, _ in p)
    return dict(c.most_common())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True)
    parser.add_argument("--labels", required=True)
    parser.add_argument("--json", help="also write the numbers to this file")
    args = parser.parse_args()
    rows = [json.loads(line) for line in open(args.labels)]

    with tracer.Store(args.db) as store:
        result = detect(store)
        flagged = flagged_by(store)
    steps_detectors = sorted(d for d in FAMILIES_OF if is_steps(d))
    print(f"**Detectors on the labelled corpus**: {len(rows)} sessions; detect took {result.seconds:.1f} s, "
          f"{result.findings} findings; steps detectors: {', '.join(steps_detectors) or 'none (no predictions)'}\n")

    report: dict[str, Any] = {"sessions": len(rows), "detect_seconds": result.seconds, "families": {}}
    score_rows = []
    for fam in FAMILIES:
        scored = [r for r in rows if r["labels"][fam] is not None]
        hit = [fam in families_of(flagged.get(r["session_id"], set())) for r in scored]
        tp = sum(1 for r, h in zip(scored, hit) if h and r["labels"][fam])
        fp = sum(1 for r, h in zip(scored, hit) if h and not r["labels"][fam])
        fn = sum(1 for r, h in zip(scored, hit) if not h and r["labels"][fam])
        positives = sum(1 for r in scored if r["labels"][fam])
        numbers = {"positives": positives, "negatives": len(scored) - positives, "left_out": len(rows) - len(scored),
                   "tp": tp, "fp": fp, "fn": fn, "precision": ratio(tp, tp + fp), "recall": ratio(tp, tp + fn)}
        report["families"][fam] = numbers
        score_rows.append((fam, positives, len(scored) - positives, len(rows) - len(scored), tp, fp, fn,
                           fmt(numbers["precision"]), fmt(numbers["recall"])))
    print(table(["family", "positives", "negatives", "left out", "TP", "FP", "FN", "precision", "recall"], score_rows))
    print()

    # Alerts of any family where none is due.
    for name, group in (("clean", [r for r in rows if r["kind"] == "clean"]),
                        ("hard_negatives", [r for r in rows if r["kind"] in HARD_NEGATIVES])):
        hits = [flagged[r["session_id"]] for r in group if r["session_id"] in flagged]
        report[name] = {"sessions": len(group), "flagged": len(hits), "by_detector": counts(hits)}
        by_detector = ", ".join(f"{d} {n}" for d, n in report[name]["by_detector"].items()) or "none"
        print(f"**Alerts on {name.replace('_', ' ')} sessions**: {len(hits)} of {len(group)} sessions flagged "
              f"(any family); sessions by detector: {by_detector}\n")

    # What fired on each kind of session.
    report["kinds"] = {}
    kind_rows = []
    for kind in KINDS:
        group = [r for r in rows if r["kind"] == kind]
        if not group:
            continue
        pairs = [flagged.get(r["session_id"], set()) for r in group]
        fams = {f: sum(1 for p in pairs if f in families_of(p)) for f in FAMILIES}
        report["kinds"][kind] = {"sessions": len(group), "flagged": sum(1 for p in pairs if p), "families": fams,
                                 "by_detector": counts(pairs)}
        label = ", ".join(f"{f} {'?' if v is None else 'yes' if v else 'no'}" for f, v in group[0]["labels"].items()) \
            if kind != "drift" else "cost: yes from 2x, else left out"
        kind_rows.append((kind, label, len(group), *(fams[f] for f in FAMILIES), sum(1 for p in pairs if p),
                          ", ".join(f"{d} {n}" for d, n in counts(pairs).items()) or "-"))
    print("**Sessions flagged, by kind** (labels: yes = should be flagged, no = should not, ? = left out)\n")
    print(table(["kind", "labels", "sessions", *FAMILIES, "any alert", "sessions by detector"], kind_rows))

    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
