"""Scorers of the final answer: the text it holds, a pattern, a JSON Schema."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from pydantic import Field, field_validator

from tracer import clip_text

from .._errors import ScorerError
from .._trajectory import Trajectory
from ._base import Score, Scorer, ScorerType, Spec, Texts, quote

_CLIP = 120


class _FinalContains(Spec):
    kind = "final_contains"
    text: Texts
    """The text(s) the final answer must contain."""
    all: bool = True
    """Every text must appear (else any one)."""
    case_sensitive: bool = False
    """Match case exactly."""


class _FinalNotContains(Spec):
    kind = "final_not_contains"
    text: Texts
    """The text(s) the final answer must not contain."""
    case_sensitive: bool = False
    """Match case exactly."""


class _FinalRegex(Spec):
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


class _FinalJsonSchema(Spec):
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
            return p.score(1.0, True, f"the final answer matches /{p.pattern}/ at {quote(m.group(0))}")
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
    return f"there is no final answer (the session ended with status {quote(t.status)})"


def _quotes(texts: Sequence[str]) -> str:
    return ", ".join(quote(x) for x in texts)


TYPES: tuple[ScorerType, ...] = (
    ScorerType(_FinalContains, _final_contains, "the final answer contains the text(s)"),
    ScorerType(_FinalNotContains, _final_not_contains, "the final answer contains none of the text(s)"),
    ScorerType(_FinalRegex, _final_regex, "the final answer matches a regular expression"),
    ScorerType(_FinalJsonSchema, _final_json_schema, "the final answer (or the first JSON in it) satisfies a "
                                                     "JSON Schema"),
)
"""This module's scorer types, in the order the docs list them."""
