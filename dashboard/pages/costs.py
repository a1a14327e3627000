"""costs: being built."""

import streamlit as st

st.title("costs")
