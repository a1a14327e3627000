"""Turning a recorded session into a draft case: its messages become the input, and what it did
becomes expectations for a person to review (a production session is not a known-good one)."""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

import tracer

from ._dataset import load_dataset
from ._errors import DatasetError
from ._trajectory import trajectory_of


def draft_case(store: tracer.Store, session_id: str, *, case_id: str | None = None) -> dict[str, Any]:
    """A case dict drawn from a recorded session.

    Raises:
        tracer.UnknownSessionError: no such session.
        DatasetError: the session was recorded without content, so its messages are unknown.
    """
    t = trajectory_of(store, session_id)
    runs = store.session_runs(t.session_id)
    attrs = runs[0].attributes if runs else {}
    if not t.user_messages:
        raise DatasetError(f"session {t.session_id} has no customer messages on record (content mode `none`?); "
                           "a case needs its input. Record with content='full' or 'redacted'.")
    scenario = attrs.get("flightrec.scenario")
    tools = list(dict.fromkeys(t.tool_names))
    expect: list[dict[str, Any]] = [{"type": "status", "equals": t.status}]
    if tools:
        # A session that retried (an outage, a loop stopped by a guard) gets its own repeat count as
        # the bar: a draft that fails on the very session it describes would only be noise.
        repeats = Counter(c.name + tracer.canonical_json(c.arguments) for c in t.tool_calls).most_common(1)[0][1]
        expect += [{"type": "tools_required", "tools": tools},
                   {"type": "tool_order", "tools": tools, "mode": "subsequence"},
                   {"type": "no_redundant_calls", **({"max_repeats": repeats} if repeats > 1 else {})}]
    expect.append({"type": "guards", "fired": sorted(set(t.guards))} if t.guards else {"type": "guards", "none": True})
    expect.append({"type": "max_turns", "turns": t.turns + 2})
    # Each follow-up was sent after one of the agent's final replies. One that answered a question
    # is sent again only if asked (a "yes, go ahead" must not confirm what was never proposed); the
    # others were sent regardless, and a case that made them conditional would end the talk early.
    finals = [d.text or "" for d in t.decisions if d.action == "final"]
    follow_ups: list[Any] = [{"text": m, "only_if_asked": True} if k < len(finals) and finals[k].rstrip().endswith("?")
                             else m for k, m in enumerate(t.user_messages[1:])]
    case_input: dict[str, Any] = {"messages": [t.user_messages[0], *follow_ups]}
    if scenario:
        case_input = {"scenario": scenario, **case_input}
    # The simulator's misbehaviours and faults the session ran with (recorded only when there were
    # some): without them the case would not reproduce a session run with `--misbehave`.
    for key in ("misbehave", "faults"):
        if attrs.get(f"flightrec.{key}"):
            case_input[key] = list(attrs[f"flightrec.{key}"])
    return {
        # The id's tail, not its head: a session id starts with its time, so sessions of one
        # scenario recorded within a minute share their first 8 characters.
        "id": case_id or f"{scenario or 'session'}-{t.session_id.replace('-', '')[-8:]}",
        "tags": ["from-production", "draft"],
        "description": f"DRAFT from session {t.session_id} ({t.status}, {t.turns} turns): review the expectations, "
                       "they describe what happened, not what should have",
        "input": case_input,
        "expect": expect,
    }


def add_case(path: str | os.PathLike[str], case: dict[str, Any]) -> None:
    """Appends ``case`` to a dataset file (created if missing), keeping the file's comments.

    Raises:
        DatasetError: the file is not a dataset, the id is taken, or the result does not load.
    """
    p = Path(path)
    before = p.read_text(encoding="utf-8") if p.exists() else None
    if before is not None:
        existing = load_dataset(p)
        if any(c.id == case["id"] for c in existing.cases):
            raise DatasetError(f"{p} already has a case {case['id']!r}; pass --id to name the new one.")
    if p.suffix == ".jsonl":
        text = (before or "") + ("" if not before or before.endswith("\n") else "\n") + json.dumps(case) + "\n"
    elif p.suffix in (".yaml", ".yml"):
        text = _yaml_with(before, p, case)
    else:
        raise DatasetError(f"{p}: a dataset is a .yaml, .yml or .jsonl file.")
    p.write_text(text, encoding="utf-8")
    try:
        load_dataset(p)
    except DatasetError:
        if before is None:
            p.unlink()
        else:
            p.write_text(before, encoding="utf-8")
        raise


class _PlainDumper(yaml.SafeDumper):
    """Writes a value used twice (a case's tool list) twice, not as ``&id001``/``*id001``: every dump
    numbers its anchors from 1, so the second case appended would repeat the first one's anchor."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _yaml_with(before: str | None, p: Path, case: dict[str, Any]) -> str:
    block = yaml.dump([case], Dumper=_PlainDumper, sort_keys=False, allow_unicode=True, width=100)
    if before is None:
        return f"name: {p.stem}\ncases:\n" + _indent(block, "  ")
    top = [line for line in before.splitlines() if line and not line[0].isspace() and not line.startswith("#")]
    if not top or not top[-1].startswith("cases:"):
        raise DatasetError(f"{p}: add-case appends to the `cases:` list, so it must be the file's last top-level "
                           "key; move it to the end of the file.")
    if top[-1].split("#", 1)[0].strip() != "cases:":
        raise DatasetError(f"{p}: add-case appends `- id: …` items under `cases:`, so the list must be written one "
                           "item per line (block style), not as `cases: [...]`.")
    items = re.search(r"^cases:\s*\n(?:\s*#.*\n|\s*\n)*(\s*)- ", before, re.M)
    return before + ("" if before.endswith("\n") else "\n") + _indent(block, items.group(1) if items else "  ")


def _indent(block: str, prefix: str) -> str:
    return "".join(prefix + line if line.strip() else line for line in block.splitlines(keepends=True))
