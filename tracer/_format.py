"""How values are written for a person, the same on every surface (``traces show``, replay, eval
reports, the dashboard): money, durations, token counts, and text clipped to a width."""

from __future__ import annotations


def format_ms(value: float | None) -> str:
    """A duration in milliseconds: ``840 ms`` under ten seconds, ``12.3 s`` from ten; ``–`` when
    unknown (``None`` or NaN, pandas' missing value)."""
    if value is None or value != value:
        return "–"
    return f"{value:,.0f} ms" if value < 10_000 else f"{value / 1000:,.1f} s"


def format_wait(seconds: float | None) -> str:
    """How long something has waited, as a person reads a wait: ``5 min`` under an hour, ``25.0 h``
    under two days, ``3.5 d`` from two; ``–`` when unknown (``None`` or NaN)."""
    if seconds is None or seconds != seconds:
        return "–"
    if seconds < 3600:
        return f"{int(seconds // 60)} min"  # whole minutes: 59.9 is not yet an hour
    return f"{seconds / 3600:.1f} h" if seconds < 2 * 86_400 else f"{seconds / 86_400:.1f} d"


def format_tokens(value: float | None) -> str:
    """A token count: ``8,192`` under ten thousand, ``12.3k`` under a hundred thousand, ``200k`` under
    a million (a context window), ``1.25M`` from one; ``–`` when unknown (``None`` or NaN)."""
    if value is None or value != value:
        return "–"
    if value >= 1_000_000:
        return f"{value / 1e6:,.2f}M"
    if value >= 100_000:
        return f"{value / 1000:,.0f}k"
    return f"{value / 1000:,.1f}k" if value >= 10_000 else f"{int(value):,}"


def format_usd(value: float | None, *, signed: bool = False) -> str:
    """Money: ``$0.0123`` under a dollar (one call costs a fraction of a cent), ``$1,234.57`` from one.

    Args:
        value: US dollars; ``None`` or NaN (pandas' missing value) is ``unknown``: a model without a price.
        signed: Write a difference, with its sign: ``+$0.0012``, ``-$1.50``.
    """
    if value is None or value != value:
        return "unknown"
    sign = ("+" if value >= 0 else "-") if signed else ("-" if value < 0 else "")
    amount = abs(value)
    return f"{sign}${amount:.4f}" if amount < 1 else f"{sign}${amount:,.2f}"


def clip_text(text: str, limit: int, *, around: str | None = None) -> str:
    """``text`` on one line (runs of whitespace as one space), cut to at most ``limit`` characters, with
    ``…`` where it was cut.

    Args:
        around: Keep the part around the first place this occurs (case-insensitive), when it does;
            otherwise the start is kept.
    """
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    at = text.casefold().find(around.casefold()) if around else -1
    lo = max(0, min(at - limit // 2, len(text) - limit)) if at >= 0 else 0
    window = text[lo:lo + limit]
    if lo:
        window = "…" + window[1:]
    if lo + limit < len(text):
        window = window[:-1] + "…"
    return window
