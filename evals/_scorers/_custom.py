"""The judge scorer (an LLM reads the session) and custom scorers (a ``python`` function)."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from typing import Any

from pydantic import Field, field_validator

import tracer

from .._errors import ScorerError
from .._judge import JudgeClientFactory, default_judge_client, judge
from .._trajectory import Trajectory
from ._base import Score, Scorer, ScorerType, Spec, Texts

_FUNCTION = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


class _Judge(Spec):
    kind = "judge"
    rubric: Texts
    """Criteria, each a claim about the whole session; quote the words that are evidence."""
    threshold: float = Field(default=0.7, ge=0.0, le=1.0)
    """Passes when this share of the criteria is met."""
    model: str | None = None
    """The judge model (default ``$FLIGHTREC_JUDGE_MODEL``, else ``claude-haiku-4-5``)."""


class _Python(Spec):
    kind = "python"
    function: str
    """The custom scorer, as ``module:function``."""
    params: dict[str, Any] = {}
    """Keyword arguments for the function."""
    threshold: float = Field(default=1.0, ge=0.0, le=1.0)
    """A float result passes when it is at least this."""

    @field_validator("function")
    @classmethod
    def _module_colon_function(cls, v: str) -> str:
        if not _FUNCTION.match(v):
            raise ValueError("must be 'module:function', as in 'my_evals.scorers:polite'")
        return v

    def label(self) -> str:
        return self.name or self.function


def _judge(p: _Judge, client_factory: JudgeClientFactory | None = None) -> Scorer:
    make = client_factory or default_judge_client
    clients: list[Any] = []  # made on first use: building a dataset must not need the judge

    def score(t: Trajectory) -> Score:
        if not clients:
            clients.append(make())
        v = judge(t, p.rubric, model=p.model, client=clients[0])
        met = sum(c.met for c in v.criteria)
        who = "the simulated judge" if v.simulated else v.model
        rulings = "; ".join(f"{c.index}. {'met' if c.met else 'NOT met'}: {c.reason}" for c in v.criteria)
        return p.score(v.share_met, v.share_met >= p.threshold,
                       f"{met}/{len(v.criteria)} criteria met by {who} (threshold {p.threshold:g}): {rulings}"
                       ).model_copy(update={"cost_usd": v.cost_usd})

    return score


def _python(p: _Python) -> Scorer:
    fn = _import_function(p)

    def score(t: Trajectory) -> Score:
        try:
            out = fn(t, **p.params)
        except Exception as exc:  # a custom scorer's bug fails its case, not the run
            return p.score(0.0, False, f"{p.function} raised {type(exc).__name__}: {exc}")
        if isinstance(out, Score):
            return out.model_copy(update={"scorer": p.label(), "weight": p.weight})
        if isinstance(out, bool):
            return p.score(float(out), out, f"{p.function} returned {out}")
        if isinstance(out, int | float) and 0.0 <= out <= 1.0:
            return p.score(float(out), out >= p.threshold, f"{p.function} returned {out:g} (threshold {p.threshold:g})")
        if isinstance(out, int | float):
            return p.score(0.0, False, f"{p.function} returned {out}, outside 0..1; return a value from 0 to 1")
        return p.score(0.0, False, f"{p.function} returned {type(out).__name__}; a custom scorer returns a Score, "
                                   "a float from 0 to 1 or a bool")

    return score


def _import_function(p: _Python) -> Callable[..., Any]:
    where = f"scorer {p.label()!r}"
    try:
        fn = tracer.import_target(p.function)
    except tracer.TargetError as exc:
        raise ScorerError(f"{where}: {exc}") from None
    if not callable(fn):
        raise ScorerError(f"{where}: {p.function} is a {type(fn).__name__}, not a function. A custom scorer is "
                          "def scorer(trajectory, **params) -> Score | float | bool.")
    try:
        inspect.signature(fn).bind(None, **p.params)
    except TypeError as exc:
        raise ScorerError(f"{where}: {p.function} cannot be called with the trajectory and params "
                          f"{sorted(p.params)}: {exc}. Match the spec's 'params' to the function's keyword arguments."
                          ) from None
    except ValueError:
        pass  # a builtin without a signature: find out when it is called
    return fn


TYPES: tuple[ScorerType, ...] = (
    ScorerType(_Judge, _judge, "an LLM judge finds the whole session meets a rubric"),
    ScorerType(_Python, _python, "a custom function, module:function"),
)
"""This module's scorer types, in the order the docs list them."""
