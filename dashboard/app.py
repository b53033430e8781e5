"""Entry point of the CareLoop dashboard: `streamlit run dashboard/app.py`."""

from __future__ import annotations

import streamlit as st

from dashboard.client import load_api_settings
from dashboard.data import clear_cache

st.set_page_config(page_title="CareLoop", page_icon=":material/home_repair_service:", layout="wide")

# Paths are relative to this file. Later pages (Marketing: offers; rules) get their own page files and a
# place here once their endpoints exist.
PAGES = {
    "Fleet": [
        st.Page("views/fleet.py", title="Fleet health", icon=":material/monitor_heart:", default=True),
        st.Page("views/device.py", title="Device drill-down", icon=":material/kitchen:"),
        st.Page("views/quarantine.py", title="Ingest quarantine", icon=":material/report:"),
    ],
    "Customers": [
        st.Page("views/customers.py", title="Customers", icon=":material/groups:"),
    ],
    "Service": [
        # First under Service: the queue is where a dispatcher works.
        st.Page("views/dispatch.py", title="Dispatch board", icon=":material/assignment_ind:"),
        st.Page("views/detections.py", title="Detections", icon=":material/notification_important:"),
    ],
}

page = st.navigation(PAGES)

# The sidebar is drawn before the page runs so it stays visible when a page stops on an API error.
with st.sidebar:
    settings = load_api_settings()
    st.caption(f"API: `{settings.base_url}`" + ("" if settings.token else " · no token set"))
    if st.button("Refresh", icon=":material/refresh:", help="Read everything from the API again"):
        clear_cache()

page.run()
