"""Scorers: each turns a ``Trajectory`` into a ``Score``.

A dataset names its scorers as specs, plain mappings read from YAML or JSON::

    {"type": "tools_required", "tools": ["get_order"], "weight": 2, "name": "looks the order up"}

Every spec takes ``type`` (required: a key of ``SCORER_TYPES``), ``weight`` (> 0, default 1) and
``name`` (the label its scores carry; default the type). The other keys are the type's own, and
``build_scorer`` checks them all, so a typo fails when the dataset is loaded, not mid-run.
A score's ``value`` is 0..1; a trial's value is the weighted mean of its scores, and it passes
when every scorer passed (``score_trial``).

The built-in types (``SCORER_TYPES``; defaults in brackets):

- ``final_contains`` text, all [true], case_sensitive [false]; ``final_not_contains`` text,
  case_sensitive [false]; ``final_regex`` pattern, ignore_case [false]; ``final_json_schema``
  schema (the final answer, or the first JSON object or array in it, must satisfy it).
- ``tools_required`` tools; ``tools_forbidden`` tools; ``tool_order`` tools, mode
  [subsequence | exact]; ``tool_args`` tool, args (argument -> a plain value, or an object of
  ``equals``, ``regex``, ``in``, ``contains``, ``gte``, ``lte``, all of which must hold), call
  [any | all | first]; ``no_redundant_calls`` max_repeats [1]; ``steps_vs_minimal`` minimal,
  slack [1.5]; ``recovers_after_error`` fallback_tools [escalate_to_human].
- ``guards`` fired [], not_fired [], none [false]; ``status`` equals (``guard:*`` globs match).
- ``max_turns`` turns; ``max_cost_usd`` usd (an unknown cost fails); ``max_latency_ms`` ms.
- ``judge`` rubric, threshold [0.7], model (see ``evals._judge``); ``python`` function, params
  [{}], threshold [1.0].

Custom scorers are plain functions, named by a spec of type ``python``::

    {"type": "python", "function": "my_evals.scorers:polite", "params": {"words": ["please"]}, "threshold": 0.5}

    def polite(trajectory: Trajectory, **params) -> Score | float | bool: ...

The function gets the trajectory and the spec's ``params`` as keyword arguments. It returns a
``Score`` (its ``value``, ``passed``, ``reason`` and ``turn`` are kept, the label and weight come
from the spec; a failure's ``turn`` is the decision the dashboard opens for it), a float 0..1
(passed when it is >= the spec's ``threshold``, default 1.0), or a bool (1.0 or 0.0). A custom
scorer that raises, or returns anything else, gives a *failed* score whose reason says what it
raised ("raised KeyError: 'order'"): one bad case must not end a run of hundreds. A spec whose
function cannot be imported, or does not take its params, raises ``ScorerError`` at build time.

Built-in scorers never raise while scoring, except ``judge``: a judge model that cannot be
reached raises ``ScorerError``, since every other case would fail alike.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from tracer import clip_text, did_you_mean

from .._errors import ScorerError
from .._judge import JudgeClientFactory
from .._trajectory import Trajectory
from . import _budgets, _custom, _final, _tools
from ._base import Score, Scorer, ScorerType

SCORER_TYPES: dict[str, ScorerType] = {t.params.kind: t for t in (*_final.TYPES, *_tools.TYPES, *_budgets.TYPES,
                                                                  *_custom.TYPES)}
"""The built-in scorer types by name. Read it for docs and messages; a new check is a ``python`` scorer."""

__all__ = ["SCORER_TYPES", "Score", "Scorer", "ScorerType", "build_scorer", "score_trial"]


def build_scorer(spec: Mapping[str, Any], *, judge_client: JudgeClientFactory | None = None) -> Scorer:
    """Validates a scorer spec and builds the scorer.

    Args:
        spec: A mapping with ``type``, the type's own keys, and optionally ``weight`` and ``name``.
        judge_client: Makes the client of ``judge`` scorers; default ``default_judge_client``.

    Raises:
        ScorerError: the spec is not a mapping, its type is unknown, a key is unknown, missing or
            mistyped, or (``python``) its function cannot be imported or does not take its params.
    """
    if not isinstance(spec, Mapping):
        raise ScorerError(f"a scorer spec must be a mapping with a 'type', got {clip_text(repr(spec), 60)}; "
                          f"the types are: {', '.join(SCORER_TYPES)}.")
    kind = spec.get("type")
    if not isinstance(kind, str) or kind not in SCORER_TYPES:
        what = f"unknown scorer type {kind!r}{did_you_mean(kind, SCORER_TYPES)}" if isinstance(kind, str) else (
            f"the scorer spec {clip_text(json.dumps(dict(spec), default=str), 80)} has no 'type'")
        raise ScorerError(f"{what}; the types are: {', '.join(SCORER_TYPES)}.")
    entry = SCORER_TYPES[kind]
    params = {k: v for k, v in spec.items() if k != "type"}
    try:
        p = entry.params.model_validate(params)
    except ValidationError as exc:
        label = f"{params['name']!r} ({kind})" if isinstance(params.get("name"), str) else repr(kind)
        raise ScorerError(f"scorer {label}: {_problems(exc, entry.fields())}; fields are: "
                          f"{', '.join(entry.fields())}.") from None
    if kind == "judge":
        return entry.build(p, judge_client)
    return entry.build(p)


def score_trial(scorers: Sequence[Scorer], trajectory: Trajectory) -> tuple[float, bool, list[Score]]:
    """Scores one trial with every scorer.

    Blocks while judge scorers call their model. Built scorers hold no state between trials
    except a judge's client, so one list of scorers may score trials from several threads.

    Returns:
        The weighted mean value, whether every scorer passed, and the scores in scorer order.

    Raises:
        ScorerError: no scorers were given, or a judge model cannot be reached.
    """
    if not scorers:
        raise ScorerError("there are no scorers to score the trial with; give the case at least one scorer.")
    scores = [s(trajectory) for s in scorers]
    value = sum(s.value * s.weight for s in scores) / sum(s.weight for s in scores)
    return value, all(s.passed for s in scores), scores


def _problems(exc: ValidationError, fields: list[str]) -> str:
    """A pydantic error as one line a dataset author can act on: unknown keys first, with a suggestion."""
    unknown: list[str] = []
    suggested: set[str] = set()
    for e in exc.errors():
        if e["type"] == "extra_forbidden":
            key = ".".join(str(x) for x in e["loc"])
            close = difflib.get_close_matches(key, fields, n=1, cutoff=0.6)
            suggested.update(close)
            unknown.append(f"unknown field {key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    out = list(unknown)
    for e in exc.errors():
        loc = ".".join(str(x) for x in e["loc"])
        if e["type"] == "extra_forbidden" or (e["type"] == "missing" and loc in suggested):
            continue  # "tool" for "tools": the suggestion says it all
        if e["type"] == "missing":
            out.append(f"missing field {loc!r}")
            continue
        msg = str(e["ctx"]["error"]) if e["type"] == "value_error" and "error" in e.get("ctx", {}) else e["msg"]
        if loc:
            out.append(f"field {loc!r}: {msg} (got {clip_text(json.dumps(e['input'], default=str), 60)})")
        else:  # a rule across fields
            out.append(msg)
    return "; ".join(out)
