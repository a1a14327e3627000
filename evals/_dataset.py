"""Datasets: the cases an eval runs, read from YAML or JSONL.

YAML (one file, the dataset's name and cases)::

    name: support                       # optional; default: the file's stem
    description: the support agent's pre-deploy suite
    scorers:                            # optional; applied to every case, before its own
      - {type: max_turns, turns: 20}
    pass_threshold: 1.0                 # optional; without a baseline, the share of trials to pass
    cases:
      - id: refund-over-threshold       # unique; letters, digits, '-', '_', '.'
        tags: [refund, approval]
        input:
          scenario: refund_over_threshold       # the reference agent: its world and messages
          messages:                             # optional: the customer's messages, in order
            - "The standing desk from order A-1003 arrived dented. I want a refund."
            - {text: "Yes, please go ahead.", only_if_asked: true}
          world: {outages: {orders: flaky}}     # optional: the reference agent's world set-up
          misbehave: []                         # optional: simulated-model misbehaviours
          faults: []                            # optional: simulated-model API faults
          human: approve                        # optional: answer an approval wait (approve | reject | expire)
          extra: {}                             # optional: anything a custom agent reads
        expect:                                 # scorers (see evals/_scorers/)
          - {type: tools_required, tools: [get_order, issue_refund]}
          - {type: status, equals: waiting_human}
        pass_threshold: 0.8                     # optional: this case's own (default: the dataset's)

JSONL: one case object per line, in the same shape (``id``, ``tags``, ``input``, ``expect``).

Every problem is reported with the file, the case (index and id) and the field, and the load
stops there: a dataset that half-loads would make a pass rate mean something else.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ._errors import DatasetError, ScorerError
from ._scorers import build_scorer

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class Message(BaseModel):
    """One scripted customer message."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    text: str
    """What the customer writes."""
    only_if_asked: bool = False
    """Send it only when the agent's last reply asked something."""


class CaseInput(BaseModel):
    """What the agent is given."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    scenario: str | None = None
    """A reference-agent scenario: its world, messages and simulator defaults."""
    messages: tuple[Message, ...] = ()
    """The customer's messages: the first opens the session, the rest follow up."""
    world: dict[str, Any] | None = None
    """The reference agent's world set-up (``articles``, ``outages``, ``shipment_events``)."""
    misbehave: tuple[str, ...] | None = None
    """Simulated-model misbehaviours (``None``: the scenario's)."""
    faults: tuple[str, ...] | None = None
    """Simulated-model API faults (``None``: the scenario's)."""
    human: Literal["approve", "reject", "expire"] | None = None
    """How a human answers when the session waits for an approval (``expire``: nobody decides in time)."""
    extra: dict[str, Any] = {}
    """Anything a custom agent reads."""

    @field_validator("messages", mode="before")
    @classmethod
    def _plain_strings(cls, value: Any) -> Any:
        if isinstance(value, list | tuple):
            return [{"text": v} if isinstance(v, str) else v for v in value]
        return value


class Case(BaseModel):
    """One case: an input and the expectations a trial is scored against."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    """Unique in the dataset."""
    tags: tuple[str, ...] = ()
    """For ``--tag`` and for grouping in reports."""
    description: str | None = None
    """What the case checks, in a line."""
    input: CaseInput = CaseInput()
    """What the agent is given."""
    expect: tuple[dict[str, Any], ...] = Field(min_length=1)
    """Scorer specs (``{"type": …, …}``); every one must pass for the trial to pass."""
    pass_threshold: float | None = Field(default=None, gt=0.0, le=1.0)
    """Without a baseline, the share of trials that must pass for the case to pass in JUnit
    (``None``: the dataset's ``pass_threshold``, by default every trial). With a baseline the
    gate decides instead."""

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        if not _ID.match(value):
            raise ValueError("use letters, digits, '-', '_' and '.', starting with a letter or digit")
        return value


class Dataset(BaseModel):
    """A named list of cases."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    """The dataset's name (the file's stem unless the file names it)."""
    description: str | None = None
    """What the suite is for."""
    agent: str | None = None
    """The agent it runs against when ``--agent`` is not given: a registered NAME or MODULE:ATTR."""
    scorers: tuple[dict[str, Any], ...] = ()
    """Scorer specs applied to every case, before the case's own."""
    pass_threshold: float = Field(default=1.0, gt=0.0, le=1.0)
    """The share of a case's trials that must pass without a baseline, unless the case sets its own."""
    cases: tuple[Case, ...]
    """The cases, in file order."""
    path: str | None = None
    """Where it was read from."""

    def select(self, tags: list[str] | tuple[str, ...]) -> tuple[Case, ...]:
        """The cases with any of ``tags`` (all cases when ``tags`` is empty)."""
        return tuple(c for c in self.cases if not tags or set(tags) & set(c.tags))

    def sha256(self, cases: tuple[Case, ...] | None = None) -> str:
        """A hash of the cases (and shared scorers) as run: two runs compare like with like when it matches.

        Pass thresholds are left out: they change how a run is reported, not what it measures, so a
        run keeps comparing with its baseline when a threshold is added.
        """
        body = {"scorers": list(self.scorers),
                "cases": [c.model_dump(mode="json", exclude={"pass_threshold"}) for c in cases or self.cases]}
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()

    def thresholds(self) -> dict[str, float]:
        """Case id -> the share of its trials that must pass without a baseline."""
        return {c.id: c.pass_threshold if c.pass_threshold is not None else self.pass_threshold for c in self.cases}

    def expectations(self, case: Case) -> list[dict[str, Any]]:
        """The scorer specs a case's trials are scored with."""
        return [*self.scorers, *case.expect]


_EXPECT_HINT = "a case needs at least one scorer, for example `expect: [{type: status, equals: ok}]`"


def _model_at(model: type[BaseModel], loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The model that holds the field at ``loc`` (``input.messages.0.txt`` -> ``Message``)."""
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        if field is None:
            return None
        inner = [t for t in (field.annotation, *get_args(field.annotation))
                 if isinstance(t, type) and issubclass(t, BaseModel)]
        if not inner:
            return None
        model = inner[0]
    return model


def _where(exc: ValidationError, model: type[BaseModel]) -> str:
    """Pydantic's errors as ``field: what is wrong``, each saying what to write instead."""
    parts = []
    for e in exc.errors()[:3]:
        loc = ".".join(str(x) for x in e["loc"])
        if e["type"] == "extra_forbidden":
            holder = _model_at(model, e["loc"])
            msg = "unknown field" + (f"; the fields are: {', '.join(holder.model_fields)}" if holder else "")
        elif e["loc"] == ("expect",) and e["type"] in ("missing", "too_short"):
            msg = _EXPECT_HINT
        elif e["type"] == "missing":
            msg = "missing (add it)"
        elif e["type"] == "model_type" and not e["loc"]:
            msg = f"a case is a mapping with the fields {', '.join(model.model_fields)}"
        else:
            msg = e["msg"].removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts)


def load_dataset(path: str | os.PathLike[str]) -> Dataset:
    """Reads and validates a dataset file (``.yaml``/``.yml`` or ``.jsonl``), scorers included.

    A bare name (``support``) that is not a file names a bundled suite (``evals/suites/``).

    Raises:
        DatasetError: the file is missing, unreadable, or a case does not validate.
    """
    p = Path(path)
    bundled = Path(__file__).with_name("suites") / f"{p}.yaml"
    if not p.is_file() and not p.suffix and bundled.is_file():
        p = bundled
    if not p.is_file():
        names = ", ".join(sorted(f.stem for f in bundled.parent.glob("*.yaml")))
        raise DatasetError(f"no dataset file at {p}. Pass a .yaml or .jsonl file, or the name of a bundled suite "
                           f"({names}).")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"cannot read the dataset {p}: {exc}") from None
    raw: dict[str, Any]
    lines: list[int] = []  # a JSONL case's line in the file (blank lines are skipped)
    if p.suffix in (".yaml", ".yml"):
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            raise DatasetError(f"{p} is not valid YAML{where}: {getattr(exc, 'problem', exc)}.") from None
        if not isinstance(loaded, dict) or "cases" not in loaded:
            found = f" (its top-level keys: {', '.join(map(str, loaded))})" if isinstance(loaded, dict) else ""
            raise DatasetError(f"{p}: a YAML dataset is a mapping with a `cases:` list{found}; "
                               "see the format in the README.")
        raw = loaded
    elif p.suffix == ".jsonl":
        cases = []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    cases.append(json.loads(line))
                except ValueError as exc:
                    raise DatasetError(f"{p}, line {n}: not valid JSON ({exc}).") from None
                lines.append(n)
        raw = {"cases": cases}
    else:
        raise DatasetError(f"{p}: a dataset is a .yaml, .yml or .jsonl file.")
    raw_cases = raw.get("cases")
    if not isinstance(raw_cases, list) or not raw_cases:
        raise DatasetError(f"{p}: `cases` must be a non-empty list; add at least one case (id, input, expect).")
    cases = []
    seen: set[str] = set()
    for i, item in enumerate(raw_cases):
        label = f"case {i + 1}" + (f" ({item.get('id')!r})" if isinstance(item, dict) and item.get("id") else "")
        where = f"{p}, {label}" + (f" (line {lines[i]})" if lines else "")
        try:
            case = Case.model_validate(item)
        except ValidationError as exc:
            raise DatasetError(f"{where}: {_where(exc, Case)}.") from None
        if case.id in seen:
            raise DatasetError(f"{where}: the id {case.id!r} is used twice; case ids must be unique.")
        seen.add(case.id)
        for spec in case.expect:
            try:
                build_scorer(spec)
            except ScorerError as exc:
                raise DatasetError(f"{where}: {exc}") from None
        cases.append(case)
    try:
        dataset = Dataset(name=raw.get("name") or p.stem, description=raw.get("description"), agent=raw.get("agent"),
                          scorers=tuple(raw.get("scorers") or ()), cases=tuple(cases), path=str(p),
                          **({"pass_threshold": raw["pass_threshold"]} if "pass_threshold" in raw else {}))
    except ValidationError as exc:
        raise DatasetError(f"{p}: {_where(exc, Dataset)}.") from None
    unknown = set(raw) - {"name", "description", "agent", "scorers", "pass_threshold", "cases"}
    if unknown:
        raise DatasetError(f"{p}: unknown top-level field(s) {', '.join(sorted(unknown))}; "
                           "a dataset has name, description, agent, scorers, pass_threshold and cases.")
    for spec in dataset.scorers:
        try:
            build_scorer(spec)
        except ScorerError as exc:
            raise DatasetError(f"{p}, shared scorers: {exc}") from None
    return dataset
