"""alerts: being built."""

import streamlit as st

st.title("alerts")
