"""evals: being built."""

import streamlit as st

st.title("evals")
