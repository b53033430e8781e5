"""Entry point of the CareLoop dashboard: `streamlit run dashboard/app.py`."""

from __future__ import annotations

import streamlit as st

from dashboard.client import load_api_settings
from dashboard.data import clear_cache
from dashboard.session import current_user, pages_for, sign_out
from dashboard.ui import seconds_until
from dashboard.words import duration_words

st.set_page_config(page_title="CareLoop", page_icon=":material/home_repair_service:", layout="wide")

# Every page, by its file under views/ (paths are relative to this file): its title, icon and sidebar group.
PAGES = {
    "fleet": ("Fleet", "Fleet health", ":material/monitor_heart:"),
    "device": ("Fleet", "Device drill-down", ":material/kitchen:"),
    "quarantine": ("Fleet", "Ingest quarantine", ":material/report:"),
    "customers": ("Customers", "Customer 360", ":material/groups:"),
    "dispatch": ("Service", "Dispatch board", ":material/assignment_ind:"),
    "detections": ("Service", "Detections", ":material/notification_important:"),
    "offers": ("Marketing", "Offers and campaigns", ":material/sell:"),
    "rules": ("Rules", "Rules", ":material/rule:"),
}


def navigation_for(role: str) -> dict[str, list[st.Page]]:
    """The role's pages in their groups; the first is where the person lands."""
    groups: dict[str, list[st.Page]] = {}
    for position, name in enumerate(pages_for(role)):
        group, title, icon = PAGES[name]
        if name == "dispatch" and role == "technician":
            title = "My orders"
        page = st.Page(f"views/{name}.py", title=title, icon=icon, default=position == 0)
        groups.setdefault(group, []).append(page)
    return groups


user = current_user()
if user is None:
    # Signed out, the sign-in page is all there is: no page reads the API without a person's own token. It answers
    # at every page's address too, so a link or bookmark (/dispatch) asks who you are, then opens that page.
    page = st.navigation(
        [st.Page("views/sign_in.py", title="Sign in", icon=":material/login:", default=True)]
        + [st.Page("views/sign_in.py", title="Sign in", icon=":material/login:", url_path=name) for name in PAGES],
        position="hidden",
    )
else:
    page = st.navigation(navigation_for(user.role))
    # The sidebar is drawn before the page runs so it stays visible when a page stops on an API error.
    with st.sidebar:
        if message := st.session_state.pop("signed_in_message", None):
            st.toast(message, icon=":material/waving_hand:")
        st.markdown(f"**{user.name}**")
        st.badge(user.role, icon=":material/badge:", color="violet")
        if user.expires_at and (left := seconds_until(user.expires_at)) is not None:
            st.caption(f"Your token expires in {duration_words(left)}." if left > 0 else "Your token has expired.")
        if not user.told_by_api:
            st.caption("The API does not say whose token this is; the role is the one its reads allow.")
        with st.container(horizontal=True):
            if st.button("Refresh", icon=":material/refresh:", help="Read everything from the API again"):
                clear_cache()
            if st.button("Sign out", icon=":material/logout:", key="sign_out"):
                sign_out()
                st.rerun()
        st.caption(f"API: `{load_api_settings().base_url}`")

page.run()
