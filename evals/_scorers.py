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
``Score`` (its ``value``, ``passed`` and ``reason`` are kept; the label and weight come from the
spec), a float 0..1 (passed when it is >= the spec's ``threshold``, default 1.0), or a bool
(1.0 or 0.0). A custom scorer that raises, or returns anything else, gives a *failed* score whose
reason says what it raised ("raised KeyError: 'order'"): one bad case must not end a run of
hundreds. A spec whose function cannot be imported, or does not take its params, raises
``ScorerError`` at build time.

Built-in scorers never raise while scoring, except ``judge``: a judge model that cannot be
reached raises ``ScorerError``, since every other case would fail alike.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator

from tracer import canonical_json, clip_text, format_usd

from ._errors import ScorerError
from ._judge import JudgeClientFactory, default_judge_client, judge
from ._trajectory import ToolStep, Trajectory


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


Scorer = Callable[[Trajectory], Score]
"""A built scorer: ``trajectory -> Score``."""

_CLIP = 120
_FUNCTION = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


def _listed(value: Any) -> Any:
    """Lets a spec give one string where a list of strings is expected."""
    return [value] if isinstance(value, str) else value


_Texts = Annotated[list[str], BeforeValidator(_listed), Field(min_length=1)]


class _Spec(BaseModel):
    """The keys every spec takes; each type adds its own."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    kind: ClassVar[str]
    weight: float = Field(default=1.0, gt=0.0)
    """The scorer's weight in the trial's weighted mean (> 0)."""
    name: str | None = None
    """The label its scores carry (default: the type)."""

    def label(self) -> str:
        return self.name or self.kind

    def score(self, value: float, passed: bool, reason: str) -> Score:
        return Score(scorer=self.label(), value=max(0.0, min(1.0, value)), passed=passed, weight=self.weight,
                     reason=reason)


# -- the final answer ----------------------------------------------------------------------------


class _FinalContains(_Spec):
    kind = "final_contains"
    text: _Texts
    """The text(s) the final answer must contain."""
    all: bool = True
    """Every text must appear (else any one)."""
    case_sensitive: bool = False
    """Match case exactly."""


class _FinalNotContains(_Spec):
    kind = "final_not_contains"
    text: _Texts
    """The text(s) the final answer must not contain."""
    case_sensitive: bool = False
    """Match case exactly."""


class _FinalRegex(_Spec):
    kind = "final_regex"
    pattern: str
    """A Python regular expression that must match somewhere in the final answer (``re.search``)."""
    ignore_case: bool = False
    """Match case-insensitively."""

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, v: str) -> str:
        try:
            re.compile(v)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from None
        return v


class _FinalJsonSchema(_Spec):
    kind = "final_json_schema"
    json_schema: dict[str, Any] = Field(alias="schema")
    """A JSON Schema the final answer (or the first JSON object or array in it) must satisfy."""


def _final_contains(p: _FinalContains) -> Scorer:
    def score(t: Trajectory) -> Score:
        if t.final_answer is None:
            return p.score(0.0, False, _no_final(t))
        found = [x for x in p.text if _has(t.final_answer, x, p.case_sensitive)]
        missing = [x for x in p.text if x not in found]
        if p.all:
            if not missing:
                return p.score(1.0, True, f"the final answer contains {_quotes(found)}")
            has = f" (it has {_quotes(found)})" if found else ""
            return p.score(len(found) / len(p.text), False,
                           f"the final answer lacks {_quotes(missing)}{has}: {clip_text(t.final_answer, _CLIP)}")
        if found:
            return p.score(1.0, True, f"the final answer contains {_quotes(found)}")
        return p.score(0.0, False,
                       f"the final answer contains none of {_quotes(p.text)}: {clip_text(t.final_answer, _CLIP)}")

    return score


def _final_not_contains(p: _FinalNotContains) -> Scorer:
    def score(t: Trajectory) -> Score:
        if t.final_answer is None:
            return p.score(1.0, True, _no_final(t) + ", so nothing forbidden in it")
        found = [x for x in p.text if _has(t.final_answer, x, p.case_sensitive)]
        if not found:
            return p.score(1.0, True, f"the final answer contains none of {_quotes(p.text)}")
        return p.score(1 - len(found) / len(p.text), False,
                       f"the final answer contains {_quotes(found)}: "
                       f"{clip_text(t.final_answer, _CLIP, around=found[0])}")

    return score


def _final_regex(p: _FinalRegex) -> Scorer:
    pattern = re.compile(p.pattern, re.IGNORECASE if p.ignore_case else 0)

    def score(t: Trajectory) -> Score:
        if t.final_answer is None:
            return p.score(0.0, False, _no_final(t))
        m = pattern.search(t.final_answer)
        if m:
            return p.score(1.0, True, f"the final answer matches /{p.pattern}/ at {_quote(m.group(0))}")
        return p.score(0.0, False, f"the final answer does not match /{p.pattern}/: {clip_text(t.final_answer, _CLIP)}")

    return score


def _final_json_schema(p: _FinalJsonSchema) -> Scorer:
    try:
        import jsonschema
    except ImportError:
        raise ScorerError(f"scorer {p.label()!r} (final_json_schema) needs the jsonschema package: "
                          "pip install jsonschema.") from None
    checker = jsonschema.validators.validator_for(p.json_schema)
    try:
        checker.check_schema(p.json_schema)
    except jsonschema.SchemaError as exc:
        raise ScorerError(f"scorer {p.label()!r}: 'schema' is not a valid JSON Schema: {exc.message} (at "
                          f"{exc.json_path}). Fix the schema; see https://json-schema.org/understanding-json-schema."
                          ) from None
    validator = checker(p.json_schema)

    def score(t: Trajectory) -> Score:
        if t.final_answer is None:
            return p.score(0.0, False, _no_final(t))
        found, value = _first_json(t.final_answer)
        if not found:
            return p.score(0.0, False,
                           f"the final answer holds no JSON object or array: {clip_text(t.final_answer, _CLIP)}")
        error = jsonschema.exceptions.best_match(validator.iter_errors(value))
        if error is None:
            return p.score(1.0, True,
                           f"the final answer's JSON satisfies the schema: {clip_text(json.dumps(value), _CLIP)}")
        return p.score(0.0, False, f"the final answer's JSON fails the schema at {error.json_path}: {error.message}")

    return score


# -- the tool calls ------------------------------------------------------------------------------


class _ToolsRequired(_Spec):
    kind = "tools_required"
    tools: _Texts
    """Tools that must each be called at least once."""


class _ToolsForbidden(_Spec):
    kind = "tools_forbidden"
    tools: _Texts
    """Tools that must never be called."""


class _ToolOrder(_Spec):
    kind = "tool_order"
    tools: _Texts
    """Tools in the order they must be called."""
    mode: Literal["exact", "subsequence"] = "subsequence"
    """``subsequence``: these calls in this order, others allowed in between; ``exact``: exactly these calls."""


_OPS = ("equals", "regex", "in", "contains", "gte", "lte")


@dataclass(frozen=True)
class _Predicate:
    """What one argument must satisfy: every (op, operand) pair holds."""

    ops: tuple[tuple[str, Any], ...]

    def failure(self, arg: str, arguments: dict[str, Any]) -> str | None:
        """Why ``arguments[arg]`` fails the predicate, or ``None`` when it holds."""
        if arg not in arguments:
            return f"{arg} is missing"
        v = arguments[arg]
        for op, x in self.ops:
            why = _op_failure(op, x, arg, v)
            if why:
                return why
        return None


def _op_failure(op: str, x: Any, arg: str, v: Any) -> str | None:
    if op == "equals":
        return None if _same(v, x) else f"{arg} is {_show(v)}, expected {_show(x)}"
    if op == "regex":
        if not isinstance(v, str):
            return f"{arg} is {_show(v)}, not text to match /{x.pattern}/"
        return None if x.search(v) else f"{arg} {_show(v)} does not match /{x.pattern}/"
    if op == "in":
        return None if any(_same(v, y) for y in x) else f"{arg} is {_show(v)}, not one of {_show(x)}"
    if op == "contains":
        if isinstance(v, str):
            ok = isinstance(x, str) and x in v
        elif isinstance(v, list):
            ok = any(_same(e, x) for e in v)
        elif isinstance(v, dict):
            ok = x in v
        else:
            return f"{arg} is {_show(v)}, not text, a list or an object"
        return None if ok else f"{arg} {_show(v)} does not contain {_show(x)}"
    n = _number(v)
    if n is None:
        return f"{arg} is {_show(v)}, not a number"
    if op == "gte":
        return None if n >= x else f"{arg} is {_show(v)}, below {x:g}"
    return None if n <= x else f"{arg} is {_show(v)}, above {x:g}"


def _predicate(arg: str, spec: Any) -> _Predicate:
    """A predicate from a spec: a plain value (equality) or an object of operators, all of which must hold."""
    if not (isinstance(spec, dict) and spec and set(spec) <= set(_OPS)):
        return _Predicate((("equals", spec),))
    ops: list[tuple[str, Any]] = []
    for op, x in spec.items():
        if op == "regex":
            if not isinstance(x, str):
                raise ValueError(f"argument {arg!r}: 'regex' must be a string, got {_show(x)}")
            try:
                x = re.compile(x)
            except re.error as exc:
                raise ValueError(f"argument {arg!r}: 'regex' is not a valid regular expression: {exc}") from None
        elif op == "in" and not isinstance(x, list):
            raise ValueError(f"argument {arg!r}: 'in' must be a list of allowed values, got {_show(x)}")
        elif op in ("gte", "lte") and _number(x) is None:
            raise ValueError(f"argument {arg!r}: {op!r} must be a number, got {_show(x)}")
        elif op in ("gte", "lte"):
            x = _number(x)
        ops.append((op, x))
    return _Predicate(tuple(ops))


class _ToolArgs(_Spec):
    kind = "tool_args"
    tool: str
    """The tool whose calls are checked."""
    args: dict[str, Any] = Field(min_length=1)
    """Argument -> predicate: a plain value (equality), or an object of ``equals``, ``regex``, ``in``,
    ``contains``, ``gte``, ``lte`` (all given must hold)."""
    call: Literal["any", "all", "first"] = "any"
    """Which calls of the tool must match: ``any`` one, ``all`` of them, or the ``first``."""

    @field_validator("args")
    @classmethod
    def _compile(cls, v: dict[str, Any]) -> dict[str, Any]:
        return {arg: _predicate(arg, spec) for arg, spec in v.items()}


class _NoRedundantCalls(_Spec):
    kind = "no_redundant_calls"
    max_repeats: int = Field(default=1, ge=1)
    """How many times one tool may be called with the same arguments (a retry counts: 2 allows one)."""


class _StepsVsMinimal(_Spec):
    kind = "steps_vs_minimal"
    minimal: int = Field(ge=0)
    """Tool calls on the shortest good path."""
    slack: float = Field(default=1.5, ge=1.0)
    """Passes while tool calls <= minimal x slack."""


class _RecoversAfterError(_Spec):
    kind = "recovers_after_error"
    fallback_tools: _Texts = ["escalate_to_human"]
    """Tools whose later successful call counts as recovering from any error."""


def _tools_required(p: _ToolsRequired) -> Scorer:
    def score(t: Trajectory) -> Score:
        missing = [x for x in p.tools if x not in t.tool_names]
        if not missing:
            return p.score(1.0, True, "called " + ", ".join(f"{x} (turn {_first_turn(t, x)})" for x in p.tools))
        return p.score(1 - len(missing) / len(p.tools), False,
                       f"never called {', '.join(missing)}; {_calls_made(t)}")

    return score


def _tools_forbidden(p: _ToolsForbidden) -> Scorer:
    def score(t: Trajectory) -> Score:
        called = [x for x in p.tools if x in t.tool_names]
        if not called:
            return p.score(1.0, True, f"never called {' or '.join(p.tools)}")
        where = "; ".join(f"{x} was called at {_turns(c.turn for c in t.tool_calls if c.name == x)}" for x in called)
        return p.score(1 - len(called) / len(p.tools), False, where)

    return score


def _tool_order(p: _ToolOrder) -> Scorer:
    want = " → ".join(p.tools)

    def score(t: Trajectory) -> Score:
        names = t.tool_names
        if p.mode == "exact":
            if names == p.tools:
                return p.score(1.0, True, f"called exactly {want}")
            same = next((i for i, (a, b) in enumerate(zip(names, p.tools)) if a != b), min(len(names), len(p.tools)))
            expected = p.tools[same] if same < len(p.tools) else "nothing more"
            got = f"{names[same]} (turn {t.tool_calls[same].turn})" if same < len(names) else "nothing more"
            return p.score(same / max(len(names), len(p.tools)), False,
                           f"expected exactly {want}; got {' → '.join(names) or 'no tool calls'}: call {same + 1} "
                           f"was {got}, expected {expected}")
        matched: list[int] = []
        for k, name in enumerate(names):
            if len(matched) < len(p.tools) and name == p.tools[len(matched)]:
                matched.append(k)
        if len(matched) == len(p.tools):
            return p.score(1.0, True, f"called {want} in that order, at "
                                      f"{', '.join(f'turn {t.tool_calls[k].turn}' for k in matched)}")
        nxt = p.tools[len(matched)]
        if matched:
            last = t.tool_calls[matched[-1]]
            reason = f"called {' → '.join(p.tools[:len(matched)])} (last at turn {last.turn}), then no {nxt}"
            earlier = [c.turn for c in t.tool_calls[:matched[-1]] if c.name == nxt]
            if earlier:
                reason += f" ({nxt} was called only before that, at {_turns(earlier)})"
        else:
            reason = f"never called {nxt}"
        return p.score(len(matched) / len(p.tools), False, f"expected {want}: {reason}; {_calls_made(t)}")

    return score


def _tool_args(p: _ToolArgs) -> Scorer:
    def check(c: ToolStep) -> list[str]:
        return [why for arg, pred in p.args.items() if (why := pred.failure(arg, c.arguments))]

    def score(t: Trajectory) -> Score:
        calls = [c for c in t.tool_calls if c.name == p.tool]
        if not calls:
            return p.score(0.0, False, f"{p.tool} was never called; {_calls_made(t)}")
        failures = [check(c) for c in calls]
        share = [1 - len(f) / len(p.args) for f in failures]
        hint = (" (no arguments were recorded: was the session traced without content?)"
                if all(not c.arguments for c in calls) else "")
        if p.call == "first":
            c, f = calls[0], failures[0]
            if not f:
                return p.score(1.0, True, f"the first {p.tool} call (turn {c.turn}) matches: {_args(c)}")
            return p.score(share[0], False, f"the first {p.tool} call (turn {c.turn}): {'; '.join(f)}{hint}")
        good = [c for c, f in zip(calls, failures) if not f]
        if p.call == "all":
            if len(good) == len(calls):
                return p.score(1.0, True, f"all {len(calls)} {p.tool} call(s) match, at "
                                          f"{_turns(c.turn for c in calls)}")
            k, f = next((k, f) for k, f in enumerate(failures) if f)
            return p.score(len(good) / len(calls), False, f"{len(calls) - len(good)} of {len(calls)} {p.tool} "
                                                          f"call(s) do not match; at turn {calls[k].turn}: "
                                                          f"{'; '.join(f)}{hint}")
        if good:
            return p.score(1.0, True, f"the {p.tool} call at turn {good[0].turn} matches: {_args(good[0])}")
        best = max(range(len(calls)), key=lambda k: share[k])
        return p.score(share[best], False, f"no {p.tool} call matches ({len(calls)} made); the closest, at turn "
                                           f"{calls[best].turn}: {'; '.join(failures[best])}{hint}")

    return score


def _no_redundant_calls(p: _NoRedundantCalls) -> Scorer:
    def score(t: Trajectory) -> Score:
        total = len(t.tool_calls)
        if not total:
            return p.score(1.0, True, "no tool calls, so none redundant")
        groups: dict[str, list[ToolStep]] = {}
        for c in t.tool_calls:
            groups.setdefault(c.name + canonical_json(c.arguments), []).append(c)
        over = [g for g in groups.values() if len(g) > p.max_repeats]
        if not over:
            return p.score(1.0, True, f"no tool was called with the same arguments more than {p.max_repeats} "
                                      f"time(s) ({total} calls)")
        redundant = sum(len(g) - p.max_repeats for g in over)
        worst = max(over, key=len)
        return p.score(1 - redundant / total, False,
                       f"{redundant} of {total} calls are redundant: {worst[0].name}({_args(worst[0])}) was called "
                       f"{len(worst)} times (at {_turns(c.turn for c in worst)}), more than {p.max_repeats}")

    return score


def _steps_vs_minimal(p: _StepsVsMinimal) -> Scorer:
    def score(t: Trajectory) -> Score:
        actual, allowed = len(t.tool_calls), p.minimal * p.slack
        value = 1.0 if actual == 0 else min(1.0, p.minimal / actual)
        verdict = "within" if actual <= allowed else "over"
        return p.score(value, actual <= allowed, f"{actual} tool calls against a minimal {p.minimal}: {verdict} "
                                                 f"the {allowed:g} allowed (slack {p.slack:g})")

    return score


def _recovers_after_error(p: _RecoversAfterError) -> Scorer:
    def score(t: Trajectory) -> Score:
        errors = [k for k, c in enumerate(t.tool_calls) if c.is_error]
        if not errors:
            return p.score(1.0, True, "no tool call errored, so there was nothing to recover from")
        unrecovered: list[str] = []
        for k in errors:
            bad = t.tool_calls[k]
            later = t.tool_calls[k + 1:]
            retry = next((c for c in later if c.name == bad.name and not c.is_error), None)
            fallback = next((c for c in later if c.name in p.fallback_tools and not c.is_error), None)
            final = next((d for d in t.decisions if d.start_ns > bad.start_ns and d.action == "final"), None)
            if not (retry or fallback or final):
                unrecovered.append(f"{bad.name} failed at turn {bad.turn} and was followed by no successful "
                                   f"{bad.name}, no {' or '.join(p.fallback_tools)} and no final answer")
        if not unrecovered:
            return p.score(1.0, True, f"recovered from all {len(errors)} failed tool call(s), at "
                                      f"{_turns(t.tool_calls[k].turn for k in errors)}")
        return p.score(1 - len(unrecovered) / len(errors), False, "; ".join(unrecovered))

    return score


# -- guards, status and budgets -------------------------------------------------------------------


class _Guards(_Spec):
    kind = "guards"
    fired: list[str] = []
    """Guards that must have fired."""
    not_fired: list[str] = []
    """Guards that must not have fired."""
    none: bool = False
    """No guard at all may fire."""

    @model_validator(mode="after")
    def _something_to_check(self) -> _Guards:
        if not (self.fired or self.not_fired or self.none):
            raise ValueError("nothing to check: give 'fired', 'not_fired' or 'none: true'")
        if self.none and self.fired:
            raise ValueError("'none: true' contradicts 'fired'; keep one of them")
        return self


class _Status(_Spec):
    kind = "status"
    equals: _Texts
    """The status(es) the session may end with (``ok``, ``waiting_human``; ``guard:*`` globs)."""


class _MaxTurns(_Spec):
    kind = "max_turns"
    turns: int = Field(ge=1)
    """The most turns the session may take."""


class _MaxCostUsd(_Spec):
    kind = "max_cost_usd"
    usd: float = Field(ge=0.0)
    """The most the session may cost, in USD (an unknown cost fails)."""


class _MaxLatencyMs(_Spec):
    kind = "max_latency_ms"
    ms: float = Field(gt=0.0)
    """The longest the session may take, wall time, in milliseconds."""


def _guards(p: _Guards) -> Scorer:
    def score(t: Trajectory) -> Score:
        fired = ", ".join(t.guards) or "none"
        checks = [(g in t.guards, f"{g} {'fired' if g in t.guards else 'did not fire'}") for g in p.fired]
        checks += [(g not in t.guards, f"{g} {'fired' if g in t.guards else 'did not fire'}") for g in p.not_fired]
        if p.none:
            checks.append((not t.guards, "no guard fired" if not t.guards else f"guards fired: {fired}"))
        ok = [c for c in checks if c[0]]
        if len(ok) == len(checks):
            return p.score(1.0, True, "; ".join(why for _, why in checks))
        bad = "; ".join(why for good, why in checks if not good)
        return p.score(len(ok) / len(checks), False, f"{bad} (guards fired: {fired})")

    return score


def _status(p: _Status) -> Scorer:
    def score(t: Trajectory) -> Score:
        why = f" ({t.status_reason})" if t.status_reason else ""
        if any(fnmatchcase(t.status, s) for s in p.equals):
            return p.score(1.0, True, f"the session ended with status {_quote(t.status)}{why}")
        return p.score(0.0, False, f"the session ended with status {_quote(t.status)}{why}, expected "
                                   f"{' or '.join(_quote(s) for s in p.equals)}")

    return score


def _max_turns(p: _MaxTurns) -> Scorer:
    def score(t: Trajectory) -> Score:
        ok = t.turns <= p.turns
        return p.score(float(ok), ok, f"{t.turns} turns, {'within' if ok else 'over'} the limit of {p.turns}")

    return score


def _max_cost_usd(p: _MaxCostUsd) -> Scorer:
    def score(t: Trajectory) -> Score:
        if t.cost_usd is None:
            return p.score(0.0, False, f"the cost is unknown (a model's price is missing), so it cannot be held to "
                                       f"${p.usd:g}; add the price to a FLIGHTREC_PRICES file")
        ok = t.cost_usd <= p.usd
        return p.score(float(ok), ok,
                       f"cost {format_usd(t.cost_usd)}, {'within' if ok else 'over'} the limit of ${p.usd:g}")

    return score


def _max_latency_ms(p: _MaxLatencyMs) -> Scorer:
    def score(t: Trajectory) -> Score:
        ok = t.latency_ms <= p.ms
        return p.score(float(ok), ok, f"took {t.latency_ms:.0f} ms, {'within' if ok else 'over'} the limit of "
                                      f"{p.ms:g} ms")

    return score


# -- the judge and custom scorers ------------------------------------------------------------------


class _Judge(_Spec):
    kind = "judge"
    rubric: _Texts
    """Criteria, each a claim about the whole session; quote the words that are evidence."""
    threshold: float = Field(default=0.7, ge=0.0, le=1.0)
    """Passes when this share of the criteria is met."""
    model: str | None = None
    """The judge model (default ``$FLIGHTREC_JUDGE_MODEL``, else ``claude-haiku-4-5``)."""


class _Python(_Spec):
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
                       f"{met}/{len(v.criteria)} criteria met by {who} (threshold {p.threshold:g}): {rulings}")

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
    module_name, _, attr = p.function.partition(":")
    where = f"scorer {p.label()!r}"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise ScorerError(f"{where}: cannot import {module_name!r} ({exc}). Check the module path in 'function', and "
                          "that its package is installed or its directory is on PYTHONPATH (run from the project "
                          "root).") from None
    except Exception as exc:
        raise ScorerError(f"{where}: importing {module_name!r} raised {type(exc).__name__}: {exc}. Fix the module."
                          ) from None
    fn: Any = module
    for part in attr.split("."):
        if not hasattr(fn, part):
            names = [n for n in dir(fn) if not n.startswith("_")]
            raise ScorerError(f"{where}: {module_name!r} has no {attr!r}{_did_you_mean(part, names)}. Name a "
                              "function of that module after the colon.")
        fn = getattr(fn, part)
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


# -- the registry ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScorerType:
    """One built-in scorer type: its parameters and what it checks."""

    params: type[_Spec]
    """The pydantic model that validates its spec (``model_json_schema()`` documents it)."""
    build: Callable[..., Scorer]
    """Makes the scorer from validated params."""
    summary: str
    """What it checks, in one line."""

    def fields(self) -> list[str]:
        """The spec keys it takes besides ``type``: its own, then ``weight`` and ``name``."""
        names = [f.alias or n for n, f in self.params.model_fields.items()]
        common = list(_Spec.model_fields)
        return [n for n in names if n not in common] + common


SCORER_TYPES: dict[str, ScorerType] = {t.params.kind: t for t in (
    ScorerType(_FinalContains, _final_contains, "the final answer contains the text(s)"),
    ScorerType(_FinalNotContains, _final_not_contains, "the final answer contains none of the text(s)"),
    ScorerType(_FinalRegex, _final_regex, "the final answer matches a regular expression"),
    ScorerType(_FinalJsonSchema, _final_json_schema, "the final answer (or the first JSON in it) satisfies a "
                                                     "JSON Schema"),
    ScorerType(_ToolsRequired, _tools_required, "each of the tools was called"),
    ScorerType(_ToolsForbidden, _tools_forbidden, "none of the tools was called"),
    ScorerType(_ToolOrder, _tool_order, "the tools were called in this order"),
    ScorerType(_ToolArgs, _tool_args, "a tool's calls had arguments that satisfy predicates"),
    ScorerType(_NoRedundantCalls, _no_redundant_calls, "no tool was called again with the same arguments"),
    ScorerType(_StepsVsMinimal, _steps_vs_minimal, "tool calls stay near the shortest good path"),
    ScorerType(_RecoversAfterError, _recovers_after_error, "every failed tool call was retried, escalated or "
                                                           "followed by a final answer"),
    ScorerType(_Guards, _guards, "which guards fired"),
    ScorerType(_Status, _status, "how the session ended"),
    ScorerType(_MaxTurns, _max_turns, "turns within a limit"),
    ScorerType(_MaxCostUsd, _max_cost_usd, "cost within a limit"),
    ScorerType(_MaxLatencyMs, _max_latency_ms, "wall time within a limit"),
    ScorerType(_Judge, _judge, "an LLM judge finds the whole session meets a rubric"),
    ScorerType(_Python, _python, "a custom function, module:function"),
)}
"""The built-in scorer types by name. Read it for docs and messages; a new check is a ``python`` scorer."""


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
        what = f"unknown scorer type {kind!r}{_did_you_mean(kind, SCORER_TYPES)}" if isinstance(kind, str) else (
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


# -- helpers ---------------------------------------------------------------------------------------


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


def _did_you_mean(word: Any, choices: Any) -> str:
    close = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _has(text: str, needle: str, case_sensitive: bool) -> bool:
    return needle in text if case_sensitive else needle.casefold() in text.casefold()


def _first_json(text: str) -> tuple[bool, Any]:
    """The text as JSON, else the first JSON object or array inside it (fenced or not)."""
    try:
        return True, json.loads(text)
    except ValueError:
        pass
    decoder = json.JSONDecoder()
    for m in re.finditer(r"[\[{]", text):
        try:
            return True, decoder.raw_decode(text, m.start())[0]
        except ValueError:
            continue
    return False, None


def _no_final(t: Trajectory) -> str:
    return f"there is no final answer (the session ended with status {_quote(t.status)})"


def _first_turn(t: Trajectory, tool: str) -> int:
    return next(c.turn for c in t.tool_calls if c.name == tool)


def _turns(turns: Any) -> str:
    ts = sorted(set(turns))
    return f"turn {ts[0]}" if len(ts) == 1 else f"turns {', '.join(map(str, ts))}"


def _calls_made(t: Trajectory) -> str:
    return f"the calls were: {' → '.join(t.tool_names)}" if t.tool_calls else "no tool was called"


def _args(c: ToolStep) -> str:
    return clip_text(canonical_json(c.arguments), 80)


def _same(a: Any, b: Any) -> bool:
    """Equality, except that a bool never equals a number (JSON keeps them apart; Python does not)."""
    return isinstance(a, bool) == isinstance(b, bool) and a == b


def _number(v: Any) -> float | None:
    """``v`` as a number: an int, a float, or text that parses as one; ``None`` otherwise."""
    if isinstance(v, bool):
        return None
    if isinstance(v, int | float):
        return float(v)
    if isinstance(v, str):
        try:
            n = float(v)
        except ValueError:
            return None
        return n if math.isfinite(n) else None
    return None


def _quote(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _quotes(texts: Sequence[str]) -> str:
    return ", ".join(_quote(x) for x in texts)


def _show(v: Any) -> str:
    return clip_text(json.dumps(v, ensure_ascii=False, default=str), 60)
