"""Scorers of how the session went: the guards that fired, its status, and its turns, cost and time."""

from __future__ import annotations

from fnmatch import fnmatchcase

from pydantic import Field, model_validator

from tracer import format_usd

from .._trajectory import Trajectory
from ._base import Score, Scorer, ScorerType, Spec, Texts, quote


class _Guards(Spec):
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


class _Status(Spec):
    kind = "status"
    equals: Texts
    """The status(es) the session may end with (``ok``, ``waiting_human``; ``guard:*`` globs)."""


class _MaxTurns(Spec):
    kind = "max_turns"
    turns: int = Field(ge=1)
    """The most turns the session may take."""


class _MaxCostUsd(Spec):
    kind = "max_cost_usd"
    usd: float = Field(ge=0.0)
    """The most the session may cost, in USD (an unknown cost fails)."""


class _MaxLatencyMs(Spec):
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
            return p.score(1.0, True, f"the session ended with status {quote(t.status)}{why}")
        return p.score(0.0, False, f"the session ended with status {quote(t.status)}{why}, expected "
                                   f"{' or '.join(quote(s) for s in p.equals)}")

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


TYPES: tuple[ScorerType, ...] = (
    ScorerType(_Guards, _guards, "which guards fired"),
    ScorerType(_Status, _status, "how the session ended"),
    ScorerType(_MaxTurns, _max_turns, "turns within a limit"),
    ScorerType(_MaxCostUsd, _max_cost_usd, "cost within a limit"),
    ScorerType(_MaxLatencyMs, _max_latency_ms, "wall time within a limit"),
)
"""This module's scorer types, in the order the docs list them."""
