"""overview: being built."""

import streamlit as st

st.title("overview")
