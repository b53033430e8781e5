"""offers."""

import streamlit as st

st.title("offers")
