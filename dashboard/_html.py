"""A page's parts as HTML, for ``st.html``: tables, headline numbers, rows of choices, titled panels.

What a Streamlit element costs a page is the browser drawing it (React, its styles, then layout), on
every load, and about as much for a number or a label as for a table: a page of thirty elements
missed Streamlit's floor by half again (``benchmarks/RESULTS.md`` §68, §78). So the parts a reader
only reads, or clicks as links, are written here as HTML and drawn together, a few elements a page
(``_ui.draw``). Choices live in the URL: a link or a GET form loads the page anew with them, and a
page is a deep link to what it shows. Nothing here imports Streamlit.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlencode

STYLE = """<style>
.fr-scroll{overflow-x:auto}
.fr-table{border-collapse:collapse;width:100%;font-size:0.8125rem}
.fr-table th{text-align:left;font-weight:400;color:#808495;padding:4px 6px;vertical-align:bottom;
  border-bottom:1px solid rgba(128,132,149,0.3)}
.fr-table td{border-bottom:1px solid rgba(128,132,149,0.15);padding:4px 6px;white-space:nowrap}
.fr-table td.wrap{white-space:normal;min-width:10em}
.fr-table .num{text-align:right;font-variant-numeric:tabular-nums}
.fr-table a{color:inherit}
.fr-table tr{position:relative}
.fr-table td:first-child a::after{content:"";position:absolute;inset:0}
.fr-table tr:has(td:first-child a):hover td{background:rgba(128,132,149,0.1)}
.fr-table tr.on td{background:rgba(255,75,75,0.08);font-weight:600}
.fr-table th a{text-decoration:underline dotted}
.fr-metrics{display:grid;gap:0.5rem 1rem;margin-bottom:0.5rem}
.fr-metric{min-width:0}
.fr-ml{font-size:0.875rem;line-height:1.6;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.fr-mv{font-size:2.25rem;line-height:1.3;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
.fr-mn{font-size:0.875rem;color:#808495}
.fr-links{display:flex;flex-direction:column;justify-content:center;gap:0.25rem;font-size:0.875rem}
.fr-panels{display:grid;gap:1rem}
.fr-h{font-size:1.5rem;font-weight:600;margin:1rem 0 0.5rem;padding:0}
.fr-note{font-size:0.875rem;color:#808495;margin:0.25rem 0 0.75rem}
.fr-switch{display:flex;flex-wrap:wrap;align-items:center;gap:0.25rem 0;margin:0 0 0.5rem;font-size:0.875rem}
.fr-sl{min-width:7.5rem;margin-right:0.5rem}
.fr-switch a,.fr-switch b{padding:0.3rem 0.75rem;border:1px solid rgba(128,132,149,0.4);margin-left:-1px;
  text-decoration:none;color:inherit;font-weight:400;line-height:1.4}
.fr-switch :is(a,b):nth-child(2){border-radius:0.5rem 0 0 0.5rem}
.fr-switch :is(a,b):last-child{border-radius:0 0.5rem 0.5rem 0}
.fr-switch b{border-color:#ff4b4b;color:#ff4b4b;background:rgba(255,75,75,0.08);position:relative}
.fr-switch a:hover{color:#ff4b4b}
.fr-switch .bad{box-shadow:inset 0 -3px #ff2b2b}
.fr-switch .warn{box-shadow:inset 0 -3px #ffa421}
.fr-form{display:flex;flex-wrap:wrap;align-items:flex-start;gap:0.5rem 1rem;margin-bottom:0.5rem;font-size:0.875rem}
.fr-form select{max-width:100%;padding:0.4rem 0.6rem;font:inherit;color:inherit;
  border:1px solid rgba(128,132,149,0.4);border-radius:0.5rem;background:transparent}
.fr-form label.fr-pick{display:flex;flex-direction:column;gap:0.2rem;flex:1 1 18rem;min-width:0}
.fr-form .fr-pick~button{align-self:flex-end}
.fr-form input[type=search]{width:28rem;max-width:100%;padding:0.4rem 0.6rem;font:inherit;color:inherit;
  border:1px solid rgba(128,132,149,0.4);border-radius:0.5rem;background:transparent}
.fr-form details{border:1px solid rgba(128,132,149,0.4);border-radius:0.5rem;padding:0.35rem 0.6rem;min-width:9rem}
.fr-form summary{cursor:pointer}
.fr-form details label{display:block;white-space:nowrap;margin-top:0.2rem}
.fr-form button{padding:0.4rem 0.9rem;font:inherit;color:inherit;border:1px solid rgba(128,132,149,0.4);
  border-radius:0.5rem;background:transparent;cursor:pointer}
.fr-form button:hover{border-color:#ff4b4b;color:#ff4b4b}
.fr-form a{align-self:center}
a.fr-btn{display:inline-block;padding:0.4rem 0.9rem;border:1px solid rgba(128,132,149,0.4);border-radius:0.5rem;
  text-decoration:none;color:inherit;margin:0.25rem 0}
a.fr-btn:hover{border-color:#ff4b4b;color:#ff4b4b}
.fr-pair{display:grid;grid-template-columns:repeat(2,minmax(0,1fr));gap:1rem;margin:0.5rem 0 1rem}
.fr-box{border:1px solid rgba(128,132,149,0.3);border-radius:0.5rem;padding:0.5rem 1rem;font-size:0.9rem;min-width:0}
.fr-box p{margin:0.4rem 0}
.fr-box code{font-size:0.8rem}
.fr-box pre{white-space:pre-wrap;word-break:break-word;background:rgba(128,132,149,0.08);padding:8px 10px;
  border-radius:0.4rem;font-size:0.8rem}
.fr-call{border-radius:0.5rem;padding:0.6rem 0.9rem;margin:0.5rem 0;font-size:0.875rem;overflow-wrap:anywhere}
.fr-call ul{margin:0.3rem 0 0 1.2rem;padding:0}
.fr-warning{background:rgba(255,189,69,0.15);color:rgb(146,108,5)}
.fr-success{background:rgba(33,195,84,0.1);color:rgb(23,114,51)}
.fr-info{background:rgba(28,131,225,0.1);color:rgb(0,66,128)}
[title].fr-ml,[title].fr-sl,[title].fr-h{text-decoration:underline dotted rgba(128,132,149,0.6);cursor:help}
</style>"""
"""Every part's style, once in each element that draws parts."""


def url(page: str, /, **query: Any) -> str:
    """The relative URL of a page with its query, for links in tables; a list value repeats its
    parameter (``agent=a&agent=b``), as ``st.query_params.get_all`` reads it back."""
    q = urlencode({k: v for k, v in query.items() if v is not None and v != []}, doseq=True)
    return f"/{page}?{q}" if q else f"/{page}"


def _tip(text: str | None) -> str:
    # A tooltip is plain text: the markdown of a help text's code spans would show as backticks.
    return f' title="{html.escape(text.replace("`", ""))}"' if text else ""


def link(text: str, href: str) -> str:
    """A link to ``href`` (``url``'s) in this tab, reading ``text``."""
    return f'<a href="{html.escape(href)}">{html.escape(text)}</a>'


def button_link(text: str, href: str, *, help: str | None = None) -> str:
    """A link that looks like ``st.button``'s button, for a choice that opens more of the page (``?edit=1``)
    rather than writes."""
    return f'<p><a class="fr-btn" href="{html.escape(href)}"{_tip(help)}>{html.escape(text)}</a></p>'


def heading(text: str, *, help: str | None = None) -> str:
    """A section's title, as ``st.subheader`` writes it; ``help`` is its tooltip."""
    return f'<h3 class="fr-h"{_tip(help)}>{html.escape(text)}</h3>'


def note(text: str) -> str:
    """A line of grey text, as ``st.caption`` writes it (plain text, not markdown)."""
    return f'<p class="fr-note">{html.escape(text)}</p>'


def callout(inner: str, tone: Literal["warning", "success", "info"] = "warning") -> str:
    """A coloured box, as ``st.warning``, ``st.success`` or ``st.info`` draws one, around HTML (escaped
    by the caller)."""
    return f'<div class="fr-call fr-{tone}">{inner}</div>'


def table(rows: Sequence[Mapping[str, str]], *, links: Sequence[str | None], numeric: Sequence[str] = (),
          wrap: Sequence[str] = (), indent: Sequence[int] | None = None, tips: Mapping[str, str] | None = None,
          sorts: Mapping[str, str] | None = None, sorted_by: tuple[str, bool] | None = None,
          chosen: int | None = None) -> str:
    """A table, each row's first cell a link that opens its page in this tab; the link covers its
    row, so a click anywhere on the row opens it. ``st.dataframe``'s grid costs the browser ~0.35–0.6 s
    of main-thread time on every load of a page it is on (``benchmarks/RESULTS.md`` §61, §63, §65);
    this costs far less, but every row is still drawn and sanitised (a hundred rows of a dozen cells:
    0.03–0.05 s of a warm load, §78): page or cap the rows. A click loads the page anew, so whatever
    the target needs must be in the link's query; sorting is the caller's, by header links (``sorts``).
    No rows: no table.

    Args:
        rows: The cells, already written as shown; the first row's keys are the headers.
        links: Each row's target (``url``), or ``None`` for a row that opens nothing.
        numeric: Columns aligned right.
        wrap: Columns of long text, wrapped onto more lines; the others stay on one line.
        indent: Each row's depth in a tree, drawn as the first cell's indent.
        tips: A header's tooltip, by column.
        sorts: A header's link, by column: the page sorted by that column.
        sorted_by: The column the rows are sorted by and whether descending, marked with an arrow.
        chosen: The row whose details the page shows below the table, marked.
    """
    if not rows:
        return ""
    tips, sorts = tips or {}, sorts or {}
    cols = list(rows[0])

    def cell(col: str, value: str, k: int) -> str:
        text = html.escape(value)
        if col == cols[0]:
            pad = f' style="padding-left:{0.5 + 1.2 * indent[k]:.1f}em"' if indent else ""
            text = f'<a href="{html.escape(links[k])}">{text}</a>' if links[k] else text
            return f"<td{pad}>{text}</td>"
        kind = "num" if col in numeric else "wrap" if col in wrap else ""
        return f'<td class="{kind}">{text}</td>' if kind else f"<td>{text}</td>"

    def header(col: str) -> str:
        text = html.escape(col)
        if sorted_by is not None and sorted_by[0] == col:
            text += " ↓" if sorted_by[1] else " ↑"
        if col in sorts:
            text = f'<a href="{html.escape(sorts[col])}">{text}</a>'
        return f'<th{" class=num" if col in numeric else ""} title="{html.escape(tips.get(col, ""))}">{text}</th>'

    head = "".join(header(c) for c in cols)
    body = "".join(("<tr class=on>" if k == chosen else "<tr>") + "".join(cell(c, row[c], k) for c in cols) + "</tr>"
                   for k, row in enumerate(rows))
    return f'<div class="fr-scroll"><table class="fr-table"><tr>{head}</tr>{body}</table></div>'


def pager(page_name: str, query: Mapping[str, Any], page: int, pages: int, *, name: str = "page") -> str:
    """Links to the first, previous, next and last pages of a list, with the page shown (``?page=N``;
    ``name`` is the parameter)."""
    def to(n: int, label: str) -> str:
        target = url(page_name, **(dict(query) | {name: n}))
        return f'<a href="{html.escape(target)}">{label}</a>' if n != page else label

    return (f'<p class="fr-note">{to(1, "« first")} · {to(max(1, page - 1), "‹ previous")} · '
            f"page {page:,} of {pages:,} · {to(min(pages, page + 1), 'next ›')} · {to(pages, 'last »')}</p>")


@dataclass(frozen=True)
class Metric:
    """A headline number as ``metrics`` shows it."""

    label: str
    value: str
    help: str | None = None
    """What the number means: the label's tooltip."""
    note: str | None = None
    """A grey line under the value (what it is out of)."""


Links = Sequence[tuple[str, str]]
"""Links (label, ``url``) stacked in a cell of a row of ``metrics``."""


def metrics(*rows: Sequence[Metric | Links]) -> str:
    """Rows of headline numbers, looking like ``st.metric``'s; the rows are as wide as the widest, its
    items side by side."""
    def item(m: Metric | Links) -> str:
        if not isinstance(m, Metric):
            return '<div class="fr-links">' + "".join(link(label, href) for label, href in m) + "</div>"
        below = f'<div class="fr-mn">{html.escape(m.note)}</div>' if m.note else ""
        return (f'<div class="fr-metric"><div class="fr-ml"{_tip(m.help)}>{html.escape(m.label)}</div>'
                f'<div class="fr-mv">{html.escape(m.value)}</div>{below}</div>')

    width = max(len(r) for r in rows)
    return "".join(f'<div class="fr-metrics" style="grid-template-columns:repeat({width},minmax(0,1fr))">'
                   + "".join(item(m) for m in r) + "</div>" for r in rows)


def panels(*columns: Sequence[tuple[str, str]]) -> str:
    """Titled panels (a title, as ``st.subheader`` writes it, over its HTML: a chart, a ``note``) in
    side-by-side columns."""
    body = "".join("<div>" + "".join(heading(title) + inner for title, inner in col) + "</div>" for col in columns)
    return f'<div class="fr-panels" style="grid-template-columns:repeat({len(columns)},minmax(0,1fr))">{body}</div>'


@dataclass(frozen=True)
class Switch:
    """A row of ``switches``: a URL parameter and its choices (value to label), one of them current."""

    label: str
    param: str
    choices: Mapping[str, str]
    current: str
    help: str | None = None
    tips: Mapping[str, str] = field(default_factory=dict)
    """A choice's tooltip, by value."""
    marks: Mapping[str, Literal["bad", "warn"]] = field(default_factory=dict)
    """A choice underlined red (something failed there) or orange (something to look at), by value."""


def switches(page: str, here: Mapping[str, Any], *rows: Switch) -> str:
    """Rows of choices (a range, which sessions, a breakdown), looking like ``st.segmented_control``,
    each choice a link: ``page`` with the query ``here`` (the page's URL now) but the row's parameter
    set to it and no page number. The current one is marked and links nowhere."""
    def choice(row: Switch, value: str, label: str) -> str:
        attrs = _tip(row.tips.get(value)) + (f' class="{row.marks[value]}"' if value in row.marks else "")
        if value == row.current:
            return f"<b{attrs}>{html.escape(label)}</b>"
        target = url(page, **({k: v for k, v in here.items() if k != "page"} | {row.param: value}))
        return f'<a href="{html.escape(target)}"{attrs}>{html.escape(label)}</a>'

    return "".join(f'<div class="fr-switch"><span class="fr-sl"{_tip(r.help)}>{html.escape(r.label)}</span>'
                   + "".join(choice(r, v, label) for v, label in r.choices.items()) + "</div>" for r in rows)


def search_field(name: str, text: str, hint: str, *, label: str = "Search",
                 suggestions: Sequence[tuple[str, str]] = ()) -> str:
    """A text box of ``filters``: its parameter, its text now, its placeholder; ``suggestions`` (value,
    what it is) are offered as the user types, as the browser lists a ``datalist``."""
    listed = ""
    if suggestions:
        listed = f'<datalist id="fr-{html.escape(name)}-list">' + "".join(
            f'<option value="{html.escape(v)}">{html.escape(said)}</option>' for v, said in suggestions) + "</datalist>"
    source = f' list="fr-{html.escape(name)}-list"' if suggestions else ""
    return (f'<input type="search" name="{html.escape(name)}" value="{html.escape(text)}" '
            f'aria-label="{html.escape(label)}" placeholder="{html.escape(hint)}"{source}>{listed}')


def select_field(name: str, label: str, options: Sequence[tuple[str, str]], current: str) -> str:
    """A drop-down of ``filters`` under its label: its parameter, the options (value, what it reads) and
    the value chosen now."""
    listed = "".join(f'<option value="{html.escape(v)}"{" selected" if v == current else ""}>{html.escape(said)}'
                     "</option>" for v, said in options)
    return (f'<label class="fr-pick">{html.escape(label)}<select name="{html.escape(name)}">{listed}</select>'
            "</label>")


def boxes_field(name: str, offered: Sequence[str], ticked: Sequence[str]) -> str:
    """A set of checkboxes of ``filters``, folded under a line that says which are ticked: its
    parameter, the values offered, and those ticked now."""
    shown = f"{name.capitalize()}: " + (", ".join(ticked) if ticked else "any")
    return f"<details><summary>{html.escape(shown)}</summary>" + "".join(
        f'<label><input type="checkbox" name="{html.escape(name)}" value="{html.escape(v)}"'
        f'{" checked" if v in ticked else ""}> {html.escape(v)}</label>' for v in offered) + "</details>"


def filters(page: str, *, kept: Mapping[str, Any], fields: Sequence[str], submit: str = "Filter",
            clear: bool = False) -> str:
    """Fields (``search_field``, ``select_field``, ``boxes_field``) as a GET form: submitting it loads
    ``page`` with them in its query, as the URL's own choices are read (``?q=…&status=ok&status=error``).

    Args:
        page: The page the form loads.
        kept: Other choices of the URL that the form carries along (hidden fields).
        fields: The form's fields, in order.
        submit: The button's label.
        clear: Add a link that loads ``page`` with ``kept`` alone, the fields cleared.
    """
    hidden = "".join(f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(str(v))}">'
                     for k, v in kept.items() if v not in (None, "", []))
    button = f'<button type="submit">{html.escape(submit)}</button>'
    reset = link("Clear the filters", url(page, **kept)) if clear else ""
    return (f'<form class="fr-form" method="get" action="/{page}" role="search">{hidden}{"".join(fields)}'
            f"{button}{reset}</form>")
