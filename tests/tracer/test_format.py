"""How values are written for a person: one rule for money on every surface, one for clipped text."""

from __future__ import annotations

import pytest

import tracer


@pytest.mark.parametrize(("value", "signed", "shown"), [
    (0.0123456, False, "$0.0123"),
    (1234.567, False, "$1,234.57"),
    (None, False, "unknown"),
    (float("nan"), False, "unknown"),  # pandas' missing value: a model without a price
    (0.0012, True, "+$0.0012"),
    (-1.5, True, "-$1.50"),
    (0.0, True, "+$0.0000"),
])
def test_money_reads_in_cents_below_a_dollar_and_in_dollars_from_one(value, signed, shown):
    assert tracer.format_usd(value, signed=signed) == shown


def test_clipped_text_fits_its_limit_and_says_where_it_was_cut():
    assert tracer.clip_text("short  text\n", 20) == "short text"
    assert tracer.clip_text("abcdefghij", 5) == "abcd…"
    text = "x" * 50 + " the needle " + "y" * 50
    around = tracer.clip_text(text, 20, around="NEEDLE")
    assert len(around) == 20 and "needle" in around and around[0] == around[-1] == "…"
    assert tracer.clip_text("needle" + "z" * 30, 10, around="needle") == "needlezzz…"  # found at the start
    assert tracer.clip_text("a" * 30, 10, around="missing") == "aaaaaaaaa…"
