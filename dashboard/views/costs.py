"""Costs: where the money goes, by model, agent and day, and what the prompt cache saved.

A call whose model has no known price has an unknown cost (``llm_calls.cost_usd`` is NULL): it is
counted and flagged, never summed as 0, so a group with such calls shows a lower bound.
"""

import pandas as pd
import streamlit as st

import tracer
from dashboard import _ui

_PER_TOKEN = 1e-6
_GROUPS = ("model", "agent", "day")


def _prices_cte(models: list[str]) -> tuple[str, list[object]]:
    """The per-token input and cache-read prices of the models the table knows, as a CTE. The price
    table resolves aliases and dated ids, so it is asked in Python, once per distinct model."""
    table = tracer.PriceTable.load()
    known = [(m, p.input * _PER_TOKEN, p.cache_read * _PER_TOKEN) for m in models if (p := table.lookup(m))]
    if not known:
        return "prices AS (SELECT NULL::VARCHAR AS model, NULL::DOUBLE AS input, NULL::DOUBLE AS cache_read " \
               "WHERE false)", []
    rows = ", ".join("(?, ?::DOUBLE, ?::DOUBLE)" for _ in known)
    return f"prices(model, input, cache_read) AS (VALUES {rows})", [v for row in known for v in row]


@_ui.cached
def _costs() -> pd.DataFrame:
    """One scan of the calls, grouped by model, by agent, by day, and in total (``grp`` says which).
    The model is the one that answered, as the recorder priced it."""
    models = _ui.frame("SELECT DISTINCT coalesce(response_model, model) AS m FROM llm_calls "
                       "WHERE m IS NOT NULL")["m"].tolist()
    cte, params = _prices_cte(models)
    return _ui.frame(
        f"""WITH {cte},
            calls AS (
                SELECT coalesce(c.response_model, c.model, '(none)') AS model, coalesce(s.agent, '(none)') AS agent,
                       make_timestamp(c.start_ns // 1000)::DATE AS day, c.status, c.cost_usd, c.input_tokens,
                       c.output_tokens, c.cache_read_tokens, c.cache_write_tokens,
                       c.cache_read_tokens * (p.input - p.cache_read) AS saved_usd
                FROM llm_calls c LEFT JOIN sessions s USING (session_id)
                LEFT JOIN prices p ON p.model = coalesce(c.response_model, c.model))
            SELECT CASE GROUPING(model, agent, day) WHEN 3 THEN 'model' WHEN 5 THEN 'agent' WHEN 6 THEN 'day'
                   ELSE 'total' END AS grp,
                   model, agent, day, count(*) AS calls,
                   count(*) FILTER (WHERE status = 'ok' AND cost_usd IS NULL) AS unpriced_calls,
                   coalesce(sum(cost_usd), 0) AS cost_usd,
                   sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens,
                   sum(cache_read_tokens) AS cache_read_tokens, sum(cache_write_tokens) AS cache_write_tokens,
                   sum(saved_usd) AS saved_usd,
                   count(*) FILTER (WHERE cache_read_tokens > 0 AND saved_usd IS NULL) AS unpriced_reads
            FROM calls GROUP BY GROUPING SETS ((model), (agent), (day), ()) ORDER BY grp, cost_usd DESC, day""",
        params)


def _headline(total: pd.Series) -> None:
    cols = st.columns(4)
    unpriced = int(total["unpriced_calls"])
    cols[0].metric("Known cost", _ui.usd(total["cost_usd"]),
                   help="The calls whose model has a price. Calls without one are not counted as 0.")
    cols[1].metric("LLM calls", f"{int(total['calls']):,}")
    cols[2].metric("Cache reads", _ui.tokens(total["cache_read_tokens"]),
                   help="Input tokens read from the prompt cache instead of being sent at full price.")
    cols[3].metric("Cache savings", _ui.usd(total["saved_usd"] or 0.0),
                   help="What the cache reads would have cost at the model's input price, minus what they cost.")
    if unpriced:
        calls = "call uses" if unpriced == 1 else "calls use"
        st.warning(f"{unpriced:,} successful {calls} a model with no known price: their cost is unknown, so "
                   "totals below are lower bounds. Add the model to a price file (`$FLIGHTREC_PRICES`, shaped "
                   "like tracer/prices.json) and record again.", icon=":material/price_change:")


def _table(rows: pd.DataFrame, by: str) -> None:
    # A group made only of unpriced calls has no cost at all; one with some is a lower bound.
    shown = rows.assign(cost_usd=rows["cost_usd"].where(rows["unpriced_calls"] < rows["calls"]))
    st.dataframe(
        shown[[by, "calls", "cost_usd", "unpriced_calls", "input_tokens", "output_tokens", "cache_read_tokens",
               "cache_write_tokens", "saved_usd"]],
        hide_index=True, width="stretch",
        column_config={
            "day": st.column_config.DateColumn("day (UTC)"),
            "cost_usd": st.column_config.NumberColumn("cost", format="$%.4f"),
            "unpriced_calls": st.column_config.NumberColumn("unpriced calls",
                                                            help="Calls with no known price (cost unknown)."),
            "input_tokens": st.column_config.NumberColumn("input (uncached)"),
            "output_tokens": st.column_config.NumberColumn("output"),
            "cache_read_tokens": st.column_config.NumberColumn("cache read"),
            "cache_write_tokens": st.column_config.NumberColumn("cache write"),
            "saved_usd": st.column_config.NumberColumn("cache savings", format="$%.4f"),
        })


def render() -> None:
    st.title("Costs")
    costs = _costs()
    total = costs[costs["grp"] == "total"]
    if total.empty or int(total["calls"].iloc[0]) == 0:
        st.info("No LLM call recorded in this store yet. Record some sessions (`make demo`, or point an agent "
                "at this store) and their costs will show here.")
        return
    _headline(total.iloc[0])
    asked = _ui.param("by") or "model"
    if asked not in _GROUPS:
        st.warning(f"`by={asked}` in the URL is not one of {', '.join(_GROUPS)}; showing by model.")
        asked = "model"
    by = st.segmented_control("Break down by", list(_GROUPS), default=asked, key="costs_by") or asked
    st.query_params["by"] = by
    rows = costs[costs["grp"] == by]
    data = rows.set_index(by)[["cost_usd", "saved_usd"]].rename(
        columns={"cost_usd": "cost", "saved_usd": "cache savings"}).fillna(0.0)
    st.bar_chart(data, height=260, horizontal=by != "day", stack=False, y_label="USD" if by == "day" else None,
                 x_label="USD" if by != "day" else None)
    _table(rows, by)
    st.caption("Cache savings count what reading from the prompt cache saved against the model's input price; "
               "cache writes cost more than plain input and are priced in the cost column.")


_ui.guarded(render, live=True)
