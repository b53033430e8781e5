"""Sign in: the person pastes their own token; the API says who it is for and the dashboard follows that role."""

from __future__ import annotations

import streamlit as st

from dashboard.client import DEV_TOKEN_VARIABLE, ApiError, load_api_settings
from dashboard.session import sign_in

settings = load_api_settings()

st.title("Sign in to CareLoop")
st.markdown(
    "Paste the token you were given. It decides what you see and may do: dispatchers work orders and calls, "
    "marketers offers and campaigns, technicians their own orders."
)
st.caption("Ask an administrator for one: `careloop token --role dispatcher --name \"Your Name\"`. "
           "`careloop demo` prints one for each role.")


def try_sign_in(token: str) -> None:
    try:
        user = sign_in(settings.base_url, token)
    except ApiError as error:
        if error.status == 401:
            st.error("The API does not know this token: check that it was pasted whole, or ask for a new one.",
                     icon=":material/key_off:")
        else:
            st.error(str(error), icon=":material/cloud_off:")
        return
    st.session_state["signed_in_message"] = f"Signed in as {user.name} ({user.role})."
    st.rerun()


with st.form("sign_in", width=520):
    token = st.text_input("Your token", type="password", placeholder="cl_disp_…", key="sign_in_token")
    if st.form_submit_button("Sign in", type="primary", icon=":material/login:"):
        if token.strip():
            try_sign_in(token)
        else:
            st.error("Paste your token first.")

if settings.dev_token:
    with st.container(border=True, width=520):
        st.markdown(f"**Developer sign-in.** `{DEV_TOKEN_VARIABLE}` is set on the server: anyone who opens this "
                    "page may sign in with it. Unset it anywhere others can reach.")
        if st.button("Sign in with the developer token", icon=":material/developer_mode:", key="dev_sign_in"):
            try_sign_in(settings.dev_token)

st.caption(f"API: `{settings.base_url}`")
