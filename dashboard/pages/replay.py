"""replay: being built."""

import streamlit as st

st.title("replay")
