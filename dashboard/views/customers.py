"""Customers: find one, then see the whole picture (profile, consents, appliances and their health)."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from dashboard.client import ApiError
from dashboard.data import fetch, fetch_or_stop, stop_with
from dashboard.ui import frame, link_to, linked_id, remember_choice, time_ago

SEARCH_LIMIT = 50
# Sections of the 360 view drawn explicitly; any other list the API adds later (orders, offers,
# contacts) is still shown, as a plain table, until it earns its own layout.
KNOWN_SECTIONS = {"customer", "devices", "consents"}

st.title("Customers")

linked = linked_id("customer")
search = st.text_input("Search customers", placeholder="name, phone or email", width=360)
found = fetch_or_stop("customers", q=search.strip() or None, limit=SEARCH_LIMIT)
items: list[dict[str, Any]] = found.get("items", [])

labels = {
    str(c["id"]): f"{c.get('name') or '(no name)'} · {c.get('phone') or c.get('email') or ''} (#{c['id']})"
    for c in items
}
if linked and linked not in labels:
    labels = {linked: f"customer #{linked}", **labels}
if not labels:
    st.info("No customer matches this search.")
    st.stop()

with st.expander(f"{found.get('total', len(items))} customers match", expanded=not linked):
    st.dataframe(frame(items, ["id", "name", "phone", "email", "region", "timezone", "birthday"]),
                 hide_index=True)

ids = list(labels)
customer_id = st.selectbox(
    "Customer", ids, index=ids.index(linked) if linked in ids else 0, format_func=labels.__getitem__
)
remember_choice("customer", customer_id)

try:
    view = fetch("customer_360", customer_id)
except ApiError as error:
    if error.status == 404:
        st.warning(f"There is no customer {customer_id}.")
        st.stop()
    stop_with(error)

customer: dict[str, Any] = view.get("customer") or {}
devices: list[dict[str, Any]] = view.get("devices") or []
consents: list[dict[str, Any]] = view.get("consents") or customer.get("consents") or []

st.header(customer.get("name") or f"Customer #{customer_id}")
with st.container(horizontal=True):
    for key, color in (("tier", "violet"), ("segment", "orange"), ("region", "gray"), ("timezone", "gray")):
        if customer.get(key):
            st.badge(str(customer[key]), color=color)

online_count = sum(1 for d in devices if d.get("online"))
with st.container(horizontal=True):
    st.metric("Appliances", len(devices), border=True)
    st.metric("Online", online_count, border=True)
    st.metric("Missing seq", sum(int(d.get("missing_seq") or 0) for d in devices), border=True,
              help="Messages from this customer's appliances that never arrived.")
    st.metric("Birthday", customer.get("birthday") or "–", border=True)

left, right = st.columns(2)
with left:
    st.subheader("Contact")
    contact = f"**Phone** {customer.get('phone') or '–'}  \n**Email** {customer.get('email') or '–'}"
    if customer.get("preferred_channel"):
        contact += f"  \n**Preferred channel** {customer['preferred_channel']}"
    st.markdown(contact)
with right:
    st.subheader("Consents")
    if not consents:
        st.caption("No consent recorded: nobody may be contacted.")
    else:
        # Purpose by channel reads faster as a grid than as a list of records.
        purposes = sorted({str(c.get("purpose")) for c in consents})
        channels = sorted({str(c.get("channel")) for c in consents})
        grid = pd.DataFrame("–", index=pd.Index(purposes, name="purpose"), columns=channels)
        for consent in consents:
            grid.loc[str(consent.get("purpose")), str(consent.get("channel"))] = (
                "✅" if consent.get("granted") else "❌"
            )
        st.dataframe(grid)

st.subheader("Appliances")
if not devices:
    st.caption("No appliances registered to this customer.")
else:
    table = frame(
        devices, ["id", "model", "kind", "online", "last_seen", "missing_seq", "purchased_on", "region"]
    )
    if "last_seen" in table:
        table["last_seen"] = table["last_seen"].map(time_ago)
    st.dataframe(table, hide_index=True,
                 column_config={"online": st.column_config.CheckboxColumn("online")})
    with st.container(horizontal=True):
        for device in devices:
            link_to("device", label=device["id"], icon=":material/kitchen:",
                         query_params={"device": device["id"]})

for key, value in view.items():
    if key not in KNOWN_SECTIONS and isinstance(value, list):
        st.subheader(key.replace("_", " ").capitalize())
        if value:
            st.dataframe(pd.DataFrame(value), hide_index=True)
        else:
            st.caption("None.")
