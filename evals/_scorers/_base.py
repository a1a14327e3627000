"""What every scorer shares: the ``Score`` it returns, the keys every spec takes, and the entry
that registers a type (``ScorerType``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from .._trajectory import Trajectory


class Score(BaseModel):
    """What one scorer made of one trial."""

    scorer: str
    """The scorer's label: the spec's ``name``, else its type (``tools_required``), or for a custom
    scorer its function (``my_evals.scorers:polite``)."""
    value: float = Field(ge=0.0, le=1.0)
    """How well the trial did, 0..1."""
    passed: bool
    """Whether the trial passed this scorer."""
    weight: float = Field(default=1.0, gt=0.0)
    """The scorer's weight in the trial's weighted mean."""
    reason: str
    """Why it passed or failed, with the evidence ("issue_refund was called at turn 2 ...")."""
    cost_usd: float | None = None
    """What scoring cost, when it called a model (a judge); ``None`` otherwise or when the price is unknown."""
    turn: int | None = Field(default=None, ge=1)
    """The turn whose decision the verdict rests on (for a failure, the first offending one: the decision
    to open); ``None`` when it judged the session as a whole (its final answer, status or budgets)."""


Scorer = Callable[[Trajectory], Score]
"""A built scorer: ``trajectory -> Score``."""


def _listed(value: Any) -> Any:
    """Lets a spec give one string where a list of strings is expected."""
    return [value] if isinstance(value, str) else value


Texts = Annotated[list[str], BeforeValidator(_listed), Field(min_length=1)]


class Spec(BaseModel):
    """The keys every spec takes; each type adds its own."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    kind: ClassVar[str]
    weight: float = Field(default=1.0, gt=0.0)
    """The scorer's weight in the trial's weighted mean (> 0)."""
    name: str | None = None
    """The label its scores carry (default: the type)."""

    def label(self) -> str:
        return self.name or self.kind

    def score(self, value: float, passed: bool, reason: str, *, turn: int | None = None) -> Score:
        return Score(scorer=self.label(), value=max(0.0, min(1.0, value)), passed=passed, weight=self.weight,
                     reason=reason, turn=turn)


@dataclass(frozen=True)
class ScorerType:
    """One built-in scorer type: its parameters and what it checks."""

    params: type[Spec]
    """The pydantic model that validates its spec (``model_json_schema()`` documents it)."""
    build: Callable[..., Scorer]
    """Makes the scorer from validated params."""
    summary: str
    """What it checks, in one line."""

    def fields(self) -> list[str]:
        """The spec keys it takes besides ``type``: its own, then ``weight`` and ``name``."""
        names = [f.alias or n for n, f in self.params.model_fields.items()]
        common = list(Spec.model_fields)
        return [n for n in names if n not in common] + common


def quote(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)
