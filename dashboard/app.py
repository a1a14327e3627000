"""The dashboard's entry script: ``streamlit run dashboard/app.py`` (``flightrec dashboard`` runs it)."""

import streamlit as st

from dashboard._ui import PAGES

st.set_page_config(page_title="flightrec", page_icon=":material/flight_takeoff:", layout="wide")

_TITLES = {
    "overview": ("Overview", ":material/monitoring:"),
    "sessions": ("Sessions", ":material/list:"),
    "session": ("Session", ":material/account_tree:"),
    "replay": ("Replay", ":material/replay:"),
    "evals": ("Evals", ":material/fact_check:"),
    "alerts": ("Alerts", ":material/notifications:"),
    "review": ("Review", ":material/rate_review:"),
    "approvals": ("Approvals", ":material/approval:"),
    "costs": ("Costs", ":material/payments:"),
    "audit": ("Audit", ":material/policy:"),
}

pages = [st.Page(PAGES[key], title=title, icon=icon, url_path=key, default=key == "overview")
         for key, (title, icon) in _TITLES.items()]
st.navigation(pages).run()
