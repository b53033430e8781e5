"""The CareLoop dispatcher dashboard (Streamlit); it talks to the HTTP API only."""

from pathlib import Path

# What `streamlit run` (or `careloop dashboard`) should be given.
APP_PATH = Path(__file__).with_name("app.py")
