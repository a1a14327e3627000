"""Charts drawn here, for ``st.html``: bars (stacked, side by side, or across) and lines over time.

A Vega-Lite chart costs the browser its chart library on every page load (~0.35 s of main-thread
time for a page's first chart, whatever its size), and an inline SVG in ``st.markdown`` costs as much
again in its markdown parser, one React element a shape (``benchmarks/RESULTS.md`` §61). So the chart
is an SVG image the browser draws by itself, with a plain ``<div>`` over each bucket (or group) whose
tooltip lists its values: hovering shows them, as Vega-Lite's tooltips did.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Sequence
from typing import Any, Literal

import pandas as pd

# Streamlit's own chart colours, so that the charts look as they did.
_INK = "#808495"  # text and axes: an image does not inherit the theme's colour; this grey reads on both
_PALETTE = ("#0068c9", "#83c9ff", "#ff2b2b", "#ffabab", "#29b09d", "#7defa1", "#ff8700", "#ffd16a", "#6d3fc0",
            "#d5dae5")
_FONT = 11
_LEFT, _RIGHT, _TOP = 56, 12, 10
_LABEL_CHARS = 18  # a group's label across is cut to this many characters (its tooltip has all of it)


Hover = list[tuple[float, float, float, float, str]]
"""Where a tooltip is (x, y, width, height in the drawing's units) and what it says."""


def html_chart(data: pd.DataFrame, mark: Literal["bar", "line"], **kw: Any) -> str:
    """The chart as HTML for ``st.html``: the SVG as an image, scaled to the column's width, and the
    tooltips' boxes over it, placed in percent of it; the arguments are ``_ui.chart``'s."""
    hover: Hover = []
    drawing = svg(data, mark, hover=hover, **kw)
    w, h = kw["width"], kw["height"]
    boxes = "".join(f'<div title="{_esc(text)}" style="position:absolute;left:{x / w:.3%};top:{y / h:.3%};'
                    f'width:{bw / w:.3%};height:{bh / h:.3%}"></div>' for x, y, bw, bh, text in hover)
    src = base64.b64encode(drawing.encode()).decode()
    return (f'<div style="position:relative;width:100%"><img alt="chart" style="width:100%;display:block" '
            f'src="data:image/svg+xml;base64,{src}">{boxes}</div>')


def svg(data: pd.DataFrame, mark: Literal["bar", "line"], *, x: str, across: bool, series: str,
        order: Sequence[str] | None, colors: Sequence[str] | None, stack: bool, height: int, title: str | None,
        points: bool, width: int, hover: Hover | None = None) -> str:
    """The chart as one ``<svg>`` element; the arguments are ``_ui.chart``'s. ``hover`` receives the
    tooltips' boxes (each shape also has its own ``<title>``, for the SVG shown by itself)."""
    hover = [] if hover is None else hover
    names = list(order) if order is not None else list(dict.fromkeys(data[series].tolist()))
    names += [n for n in dict.fromkeys(data[series].tolist()) if n not in names]
    palette = list(colors or ()) + [c for c in _PALETTE if c not in (colors or ())]
    color = {n: palette[i % len(palette)] for i, n in enumerate(names)}
    legend = len(names) > 1
    legend_h = 22 if legend else 0
    parts: list[str] = []
    if across:
        _across(parts, hover, data, x, series, names, color, stack, width, height - legend_h, title)
    else:
        _over_time(parts, hover, data, mark, x, series, names, color, stack, width, height - legend_h, title,
                   points)
    if legend:
        parts.append(_legend(names, color, height - 6))
    return (f'<svg viewBox="0 0 {width} {height}" width="100%" role="img" xmlns="http://www.w3.org/2000/svg" '
            f'style="font: {_FONT}px sans-serif; color: inherit; display: block">{"".join(parts)}</svg>')


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _num(v: float) -> str:
    """A value as an axis or tooltip shows it: short, with k / M for large ones."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    a = abs(v)
    if a >= 1e6:
        return f"{v / 1e6:.3g}M"
    if a >= 1e4:
        return f"{v / 1e3:.3g}k"
    if a >= 100 or v == int(v):
        return f"{v:,.0f}"
    return f"{v:.3g}"


def _ticks(hi: float, lo: float = 0.0, n: int = 4) -> list[float]:
    """Round values from ``lo`` to at least ``hi``, about ``n`` steps apart."""
    if hi <= lo:
        hi = lo + 1
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.floor(lo / step) * step
    out = [start]
    while out[-1] < hi - 1e-12 * step:
        out.append(out[-1] + step)
    return out


def _anchor(x: float, right: float) -> str:
    """A label's anchor: centred on its tick, but kept inside the drawing at its right end."""
    return "end" if x > right - 30 else "middle"


def _value_axis(parts: list[str], ticks: list[float], y, x0: float, x1: float, title: str | None) -> None:
    for t in ticks:
        yy = y(t)
        parts.append(f'<line x1="{x0}" x2="{x1}" y1="{yy:.1f}" y2="{yy:.1f}" stroke="{_INK}" '
                     f'stroke-opacity="0.3"/><text x="{x0 - 4}" y="{yy + 4:.1f}" text-anchor="end" '
                     f'fill="{_INK}">{_esc(_num(t))}</text>')
    if title:
        mid = (y(ticks[0]) + y(ticks[-1])) / 2
        parts.append(f'<text transform="translate(11 {mid:.1f}) rotate(-90)" text-anchor="middle" '
                     f'fill="{_INK}">{_esc(title)}</text>')


def _when(t: pd.Timestamp, span_s: float) -> str:
    fmt = "%Y-%m-%d" if span_s >= 3 * 86_400 else "%m-%d %H:%M" if span_s >= 86_400 else "%H:%M" \
        if span_s >= 600 else "%H:%M:%S"
    return t.strftime(fmt)


def _over_time(parts: list[str], hover: Hover, data: pd.DataFrame, mark: str, x: str, series: str, names: list[str],
               color: dict[str, str], stack: bool, width: int, height: int, title: str | None, points: bool) -> None:
    times = sorted(data[x].dropna().unique())
    values = data["value"].astype(float)
    if mark == "bar" and stack:
        tops = data.assign(v=values.clip(lower=0)).groupby(x)["v"].sum()
        hi = float(tops.max()) if len(tops) else 0.0
    else:
        hi = float(values.max()) if values.notna().any() else 0.0
    lo = min(0.0, float(values.min())) if values.notna().any() else 0.0
    ticks = _ticks(hi, lo)
    x0, x1, y0, y1 = _LEFT, width - _RIGHT, _TOP, height - 20
    y = lambda v: y1 - (v - ticks[0]) / (ticks[-1] - ticks[0]) * (y1 - y0)  # noqa: E731
    _value_axis(parts, ticks, y, x0, x1, title)
    if not times:
        return
    n = len(times)
    ts = [pd.Timestamp(t) for t in times]
    span_s = (ts[-1] - ts[0]).total_seconds() if n > 1 else 0.0
    # On a time axis: the buckets are a step apart, and a bucket with no row is a gap, not squeezed out.
    step_s = min((b - a).total_seconds() for a, b in zip(ts, ts[1:], strict=False)) if n > 1 else 1.0
    slots = round(span_s / step_s) + 1
    slot = (x1 - x0) / slots
    pos = {t: x0 + slot * ((tt - ts[0]).total_seconds() / step_s + 0.5) for t, tt in zip(times, ts, strict=True)}
    full = "%Y-%m-%d %H:%M:%S UTC"
    # Time labels: as many as fit, evenly spaced.
    every = max(1, math.ceil(n / max(1, (x1 - x0) // 90)))
    for i in range(0, n, every):
        parts.append(f'<text x="{pos[times[i]]:.1f}" y="{y1 + 14}" text-anchor="{_anchor(pos[times[i]], x1)}" '
                     f'fill="{_INK}">{_esc(_when(ts[i], span_s))}</text>')
    parts.append(f'<line x1="{x0}" x2="{x1}" y1="{y(0):.1f}" y2="{y(0):.1f}" stroke="{_INK}" '
                 'stroke-opacity="0.4"/>')
    by = {name: frame for name, frame in data.groupby(series, sort=False)}
    said: dict[Any, list[str]] = {t: [] for t in times}
    for name in names:
        if name in by:
            for t, v in zip(by[name][x], by[name]["value"], strict=True):
                if t in said and not pd.isna(v):
                    said[t].append(f"{name}: {_num(float(v))}")
    for t in times:
        hover.append((pos[t] - slot / 2, y0, slot, y1 - y0, "\n".join([pd.Timestamp(t).strftime(full), *said[t]])))
    if mark == "bar":
        bar_w = slot * 0.8 / (1 if stack else len(names))
        base = dict.fromkeys(times, 0.0)
        for k, name in enumerate(names):
            if name not in by:
                continue
            for t, v in zip(by[name][x], by[name]["value"], strict=True):
                if pd.isna(v) or t not in pos:
                    continue
                v = float(v)
                left = pos[t] - slot * 0.4 + (0 if stack else k * bar_w)
                bottom = base[t] if stack else 0.0
                top, foot = y(bottom + max(v, 0)), y(bottom + min(v, 0))
                if stack:
                    base[t] += max(v, 0)
                parts.append(f'<rect x="{left:.1f}" y="{top:.1f}" width="{max(bar_w - 0.5, 0.5):.1f}" '
                             f'height="{max(foot - top, 0):.1f}" fill="{color[name]}"><title>'
                             f'{_esc(name)} · {pd.Timestamp(t).strftime(full)}: {_esc(_num(v))}</title></rect>')
        return
    for name in names:
        if name not in by:
            continue
        line, runs = [], []
        for t, v in zip(by[name][x], by[name]["value"], strict=True):
            if pd.isna(v) or t not in pos:
                if line:
                    runs.append(line)
                line = []
                continue
            line.append((pos[t], y(float(v)), t, float(v)))
        if line:
            runs.append(line)
        for run in runs:
            if len(run) > 1:
                pts = " ".join(f"{px:.1f},{py:.1f}" for px, py, _, _ in run)
                parts.append(f'<polyline points="{pts}" fill="none" stroke="{color[name]}" stroke-width="2"/>')
            for px, py, t, v in run:
                # A point for each value: visible when asked (or alone), else only a target for the tooltip.
                shown = points or len(run) == 1
                parts.append(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="{3.5 if shown else 5}" fill="{color[name]}" '
                             f'fill-opacity="{1 if shown else 0}"><title>{_esc(name)} · '
                             f'{pd.Timestamp(t).strftime(full)}: {_esc(_num(v))}</title></circle>')


def _across(parts: list[str], hover: Hover, data: pd.DataFrame, x: str, series: str, names: list[str],
            color: dict[str, str], stack: bool, width: int, height: int, title: str | None) -> None:
    """Bars across: one group a row, in ``data``'s order, its series side by side (or stacked)."""
    groups = list(dict.fromkeys(data[x].tolist()))
    values = data["value"].astype(float)
    hi = float(data.assign(v=values).groupby(x)["v"].sum().max() if stack else values.max()) if len(data) else 0.0
    ticks = _ticks(max(hi, 0.0))
    label_w = 8 + 6.2 * min(_LABEL_CHARS, max((len(str(g)) for g in groups), default=4))
    x0, x1, y0, y1 = label_w, width - _RIGHT, _TOP, height - 20
    scale = lambda v: x0 + v / ticks[-1] * (x1 - x0)  # noqa: E731
    for t in ticks:
        parts.append(f'<line x1="{scale(t):.1f}" x2="{scale(t):.1f}" y1="{y0}" y2="{y1}" stroke="{_INK}" '
                     f'stroke-opacity="0.3"/><text x="{scale(t):.1f}" y="{y1 + 14}" '
                     f'text-anchor="{_anchor(scale(t), x1)}" '
                     f'fill="{_INK}">{_esc(_num(t))}</text>')
    if title:
        parts.append(f'<text x="{(x0 + x1) / 2:.1f}" y="{y1 + 28}" text-anchor="middle" fill="{_INK}" '
                     f'fill-opacity="0.7">{_esc(title)}</text>')
    if not groups:
        return
    row = (y1 - y0) / len(groups)
    bar = row * 0.8 / (1 if stack else len(names))
    cells = {(g, s): float(v) for g, s, v in zip(data[x], data[series], values, strict=True) if not pd.isna(v)}
    for i, g in enumerate(groups):
        top = y0 + i * row + row * 0.1
        hover.append((0, y0 + i * row, x1, row, "\n".join(
            [str(g), *(f"{n}: {_num(cells[g, n])}" for n in names if (g, n) in cells)])))
        label = str(g) if len(str(g)) <= _LABEL_CHARS else str(g)[:_LABEL_CHARS - 1] + "…"
        parts.append(f'<text x="{x0 - 4:.1f}" y="{y0 + (i + 0.5) * row + 4:.1f}" text-anchor="end" '
                     f'fill="{_INK}"><title>{_esc(g)}</title>{_esc(label)}</text>')
        left = 0.0
        for k, name in enumerate(names):
            v = cells.get((g, name))
            if v is None:
                continue
            start = left if stack else 0.0
            bx = scale(start)
            parts.append(f'<rect x="{bx:.1f}" y="{top + (0 if stack else k * bar):.1f}" '
                         f'width="{max(scale(start + v) - bx, 0):.1f}" height="{max(bar - 1, 0.5):.1f}" '
                         f'fill="{color[name]}"><title>{_esc(g)} · {_esc(name)}: {_esc(_num(v))}</title></rect>')
            if stack:
                left += v


def _legend(names: list[str], color: dict[str, str], y: float) -> str:
    out, x = [], _LEFT
    for name in names:
        out.append(f'<rect x="{x}" y="{y - 9}" width="10" height="10" fill="{color[name]}"/>'
                   f'<text x="{x + 14}" y="{y}" fill="{_INK}">{_esc(name)}</text>')
        x += 24 + 6.5 * len(str(name))
    return "".join(out)
