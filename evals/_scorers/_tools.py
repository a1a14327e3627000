"""Scorers of the tool calls: which were made, in what order, with what arguments, and how many."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, field_validator

from tracer import canonical_json, clip_text

from .._trajectory import ToolStep, Trajectory
from ._base import Score, Scorer, ScorerType, Spec, Texts


class _ToolsRequired(Spec):
    kind = "tools_required"
    tools: Texts
    """Tools that must each be called at least once."""


class _ToolsForbidden(Spec):
    kind = "tools_forbidden"
    tools: Texts
    """Tools that must never be called."""


class _ToolOrder(Spec):
    kind = "tool_order"
    tools: Texts
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


class _ToolArgs(Spec):
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


class _NoRedundantCalls(Spec):
    kind = "no_redundant_calls"
    max_repeats: int = Field(default=1, ge=1)
    """How many times one tool may be called with the same arguments (a retry counts: 2 allows one)."""


class _StepsVsMinimal(Spec):
    kind = "steps_vs_minimal"
    minimal: int = Field(ge=0)
    """Tool calls on the shortest good path."""
    slack: float = Field(default=1.5, ge=1.0)
    """Passes while tool calls <= minimal x slack."""


class _RecoversAfterError(Spec):
    kind = "recovers_after_error"
    fallback_tools: Texts = ["escalate_to_human"]
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
        return p.score(1 - len(called) / len(p.tools), False, where,
                       turn=min(c.turn for c in t.tool_calls if c.name in called))

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
            wrong = t.tool_calls[same] if same < len(names) else None
            got = f"{wrong.name} (turn {wrong.turn})" if wrong else "nothing more"
            return p.score(same / max(len(names), len(p.tools)), False,
                           f"expected exactly {want}; got {' → '.join(names) or 'no tool calls'}: call {same + 1} "
                           f"was {got}, expected {expected}", turn=wrong.turn if wrong else None)
        matched: list[int] = []
        for k, name in enumerate(names):
            if len(matched) < len(p.tools) and name == p.tools[len(matched)]:
                matched.append(k)
        if len(matched) == len(p.tools):
            return p.score(1.0, True, f"called {want} in that order, at "
                                      f"{', '.join(f'turn {t.tool_calls[k].turn}' for k in matched)}")
        nxt = p.tools[len(matched)]
        last = None
        if matched:
            last = t.tool_calls[matched[-1]]
            reason = f"called {' → '.join(p.tools[:len(matched)])} (last at turn {last.turn}), then no {nxt}"
            earlier = [c.turn for c in t.tool_calls[:matched[-1]] if c.name == nxt]
            if earlier:
                reason += f" ({nxt} was called only before that, at {_turns(earlier)})"
        else:
            reason = f"never called {nxt}"
        # The decision after which the next tool was due and never came.
        return p.score(len(matched) / len(p.tools), False, f"expected {want}: {reason}; {_calls_made(t)}",
                       turn=last.turn if last else None)

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
                return p.score(1.0, True, f"the first {p.tool} call (turn {c.turn}) matches: {_args(c)}", turn=c.turn)
            return p.score(share[0], False, f"the first {p.tool} call (turn {c.turn}): {'; '.join(f)}{hint}",
                           turn=c.turn)
        good = [c for c, f in zip(calls, failures) if not f]
        if p.call == "all":
            if len(good) == len(calls):
                return p.score(1.0, True, f"all {len(calls)} {p.tool} call(s) match, at "
                                          f"{_turns(c.turn for c in calls)}")
            k, f = next((k, f) for k, f in enumerate(failures) if f)
            return p.score(len(good) / len(calls), False, f"{len(calls) - len(good)} of {len(calls)} {p.tool} "
                                                          f"call(s) do not match; at turn {calls[k].turn}: "
                                                          f"{'; '.join(f)}{hint}", turn=calls[k].turn)
        if good:
            return p.score(1.0, True, f"the {p.tool} call at turn {good[0].turn} matches: {_args(good[0])}",
                           turn=good[0].turn)
        best = max(range(len(calls)), key=lambda k: share[k])
        return p.score(share[best], False, f"no {p.tool} call matches ({len(calls)} made); the closest, at turn "
                                           f"{calls[best].turn}: {'; '.join(failures[best])}{hint}",
                       turn=calls[best].turn)

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
                       f"{len(worst)} times (at {_turns(c.turn for c in worst)}), more than {p.max_repeats}",
                       turn=min(g[p.max_repeats].turn for g in over))  # the first call that was one too many

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
        unrecovered: list[ToolStep] = []
        for k in errors:
            bad = t.tool_calls[k]
            later = t.tool_calls[k + 1:]
            retry = next((c for c in later if c.name == bad.name and not c.is_error), None)
            fallback = next((c for c in later if c.name in p.fallback_tools and not c.is_error), None)
            final = next((d for d in t.decisions if d.start_ns > bad.start_ns and d.action == "final"), None)
            if not (retry or fallback or final):
                unrecovered.append(bad)
        if not unrecovered:
            return p.score(1.0, True, f"recovered from all {len(errors)} failed tool call(s), at "
                                      f"{_turns(t.tool_calls[k].turn for k in errors)}")
        return p.score(1 - len(unrecovered) / len(errors), False,
                       "; ".join(f"{c.name} failed at turn {c.turn} and was followed by no successful {c.name}, no "
                                 f"{' or '.join(p.fallback_tools)} and no final answer" for c in unrecovered),
                       turn=unrecovered[0].turn)

    return score


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


def _show(v: Any) -> str:
    return clip_text(json.dumps(v, ensure_ascii=False, default=str), 60)


TYPES: tuple[ScorerType, ...] = (
    ScorerType(_ToolsRequired, _tools_required, "each of the tools was called"),
    ScorerType(_ToolsForbidden, _tools_forbidden, "none of the tools was called"),
    ScorerType(_ToolOrder, _tool_order, "the tools were called in this order"),
    ScorerType(_ToolArgs, _tool_args, "a tool's calls had arguments that satisfy predicates"),
    ScorerType(_NoRedundantCalls, _no_redundant_calls, "no tool was called again with the same arguments"),
    ScorerType(_StepsVsMinimal, _steps_vs_minimal, "tool calls stay near the shortest good path"),
    ScorerType(_RecoversAfterError, _recovers_after_error, "every failed tool call was retried, escalated or "
                                                           "followed by a final answer"),
)
"""This module's scorer types, in the order the docs list them."""
