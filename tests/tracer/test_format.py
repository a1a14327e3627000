"""How values are written for a person: one rule on every surface for money, durations, token counts
and clipped text; and the one importer of ``MODULE:ATTR`` specs."""

from __future__ import annotations

import re

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


@pytest.mark.parametrize(("value", "shown"), [
    (840.4, "840 ms"), (9_999, "9,999 ms"), (12_345, "12.3 s"), (None, "–"), (float("nan"), "–"),
])
def test_durations_read_in_milliseconds_below_ten_seconds(value, shown):
    assert tracer.format_ms(value) == shown


@pytest.mark.parametrize(("value", "shown"), [
    (0, "0 min"), (300, "5 min"), (3599, "59 min"), (3600, "1.0 h"), (25 * 3600, "25.0 h"), (48 * 3600, "2.0 d"),
    (84 * 3600, "3.5 d"), (None, "–"), (float("nan"), "–"),
])
def test_waits_read_in_minutes_then_hours_then_days_from_two(value, shown):
    assert tracer.format_wait(value) == shown


@pytest.mark.parametrize(("value", "shown"), [
    (8192, "8,192"), (12_345, "12.3k"), (200_000, "200k"), (1_250_000, "1.25M"), (None, "–"), (float("nan"), "–"),
])
def test_token_counts_shorten_from_ten_thousand(value, shown):
    assert tracer.format_tokens(value) == shown


def test_a_module_attr_spec_imports_from_the_working_directory_and_says_why_it_cannot(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(tmp_path)  # as the working directory is, once import_target has put it there
    (tmp_path / "specs_here.py").write_text("class Box:\n    def polite(self): ...\nVALUE = 3\n")
    assert tracer.import_target("specs_here:VALUE") == 3
    assert tracer.import_target("specs_here:Box.polite").__name__ == "polite"
    for spec, says in [
        ("specs_here", "'specs_here' is not MODULE:ATTR"),
        ("no_such_module_here:x", "cannot import 'no_such_module_here'"),
        ("specs_here:VALEU", "'specs_here' has no 'VALEU' (did you mean 'VALUE'?)"),
    ]:
        with pytest.raises(tracer.TargetError, match=re.escape(says)):
            tracer.import_target(spec)
    (tmp_path / "specs_broken.py").write_text("raise RuntimeError('half-written')\n")
    with pytest.raises(tracer.TargetError, match="importing 'specs_broken' raised RuntimeError: half-written"):
        tracer.import_target("specs_broken:x")
