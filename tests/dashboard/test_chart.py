"""The charts Overview, Costs and Review draw: values a reader can hover, gaps left as gaps."""

import pandas as pd
import pytest

from dashboard import _chart

_ARGS = dict(x="time", across=False, series="series", order=None, colors=None, stack=True, height=220,
             title=None, points=False, width=480)


def _svg(data: pd.DataFrame, mark: str, **kw) -> str:
    return _chart.svg(data, mark, **{**_ARGS, **kw})


def test_every_bar_shows_its_series_and_value_on_hover():
    t = pd.to_datetime([0, 60_000_000_000], unit="ns", utc=True)
    data = pd.DataFrame({"time": [t[0], t[0], t[1]], "series": ["ok", "other", "ok"], "value": [3.0, 1.0, 1234.0]})
    svg = _svg(data, "bar", order=["ok", "other"])
    assert svg.count("<rect") == 3 + 2  # the bars and the legend's two swatches
    shown = _chart.html_chart(data, "bar", **{**_ARGS, "order": ["ok", "other"]})
    assert 'title="1970-01-01 00:00:00 UTC\nok: 3\nother: 1"' in shown
    assert 'title="1970-01-01 00:01:00 UTC\nok: 1,234"' in shown


def test_a_missing_value_breaks_the_line_instead_of_drawing_a_zero():
    t = pd.to_datetime([i * 60_000_000_000 for i in range(5)], unit="ns", utc=True)
    data = pd.DataFrame({"time": t, "series": "p50", "value": [1.0, 2.0, None, 4.0, 5.0]})
    svg = _svg(data, "line", order=["p50"])
    assert svg.count("<polyline") == 2
    assert svg.count("<circle") == 4


def test_groups_across_keep_their_order_and_escape_their_names():
    """A group's name is the user's (a route, a tag): escaped, in the drawing and in its tooltip."""
    data = pd.DataFrame({"model": ["b<x>", "a", "b<x>", "a"], "series": ["cost", "cost", "saved", "saved"],
                         "value": [2.0, 1.0, 0.5, 0.25]})
    svg = _svg(data, "bar", x="model", across=True, stack=False)
    assert svg.index("b&lt;x&gt; · cost: 2") < svg.index("a · cost: 1")
    assert "<x>" not in svg
    assert 'title="b&lt;x&gt;\ncost: 2\nsaved: 0.5"' in _chart.html_chart(data, "bar", **{**_ARGS, "x": "model",
                                                                                        "across": True})


def test_a_bucket_without_rows_is_a_gap_on_the_time_axis():
    t = pd.to_datetime([0, 60_000_000_000, 180_000_000_000], unit="ns", utc=True)  # no row at minute 2
    data = pd.DataFrame({"time": t, "series": "ok", "value": [1.0, 1.0, 1.0]})
    shown = _chart.html_chart(data, "bar", **_ARGS)
    lefts = [float(part.split("%")[0]) for part in shown.split("left:")[1:]]
    assert lefts[2] - lefts[1] == pytest.approx(2 * (lefts[1] - lefts[0]), rel=1e-3)
