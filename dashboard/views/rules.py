"""rules."""

import streamlit as st

st.title("rules")
