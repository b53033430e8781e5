"""Customer 360: find a customer, then see the whole picture: tier, points and segment, consents, one timeline,
appliances with their health, orders, offers and what the contact policy decided."""

from __future__ import annotations

from typing import Any

import altair as alt
import pandas as pd
import streamlit as st

from dashboard.client import ApiError
from dashboard.data import fetch, fetch_or_stop, stop_with
from dashboard.session import can
from dashboard.ui import frame, link_to, linked_id, local_time, plain, remember_choice, time_ago, viewer_zone
from dashboard.words import duration_words, name_words

SEARCH_LIMIT = 50

st.title("Customer 360")

linked = linked_id("customer")
zone = viewer_zone()
contact_details = can("read_contact_details")
# Marketing finds people by name only: phone and e-mail are the hotline's (the API searches what the role may read).
search = st.text_input("Search customers", placeholder="name, phone or email" if contact_details else "name",
                       width=360)
found = fetch_or_stop("customers", q=search.strip() or None, limit=SEARCH_LIMIT)
items: list[dict[str, Any]] = found.get("items", [])
labels = {
    str(c["id"]): (f"{c.get('name') or '(no name)'} · {c.get('phone') or c.get('email') or ''} (#{c['id']})"
                   if contact_details else f"{c.get('name') or '(no name)'} · {c.get('region') or ''} (#{c['id']})")
    for c in items
}
if linked and linked not in labels:
    labels = {linked: f"customer #{linked}", **labels}
if not labels:
    st.info("No customer matches this search.")
    st.stop()

with st.expander(f"{found.get('total', len(items))} customers match", expanded=not linked):
    # A birthday the API withholds from this role (every one empty) is left out rather than shown as "None".
    with_birthday = any(c.get("birthday") for c in items)
    listing = frame(items, ["id", "name", *(["phone", "email"] if contact_details else []), "region", "timezone",
                            *(["birthday"] if with_birthday else [])])
    st.dataframe(listing.rename(columns={"timezone": "time zone"}), hide_index=True)

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
membership: dict[str, Any] = view.get("membership") or {}
segment: dict[str, Any] = view.get("segment") or {}
orders: list[dict[str, Any]] = view.get("orders") or []
offers: list[dict[str, Any]] = view.get("offers") or []

st.header(customer.get("name") or f"Customer #{customer_id}")
tier = (membership.get("tier") or {}).get("name") or customer.get("tier")
with st.container(horizontal=True):
    if tier:
        st.badge(f"{tier} member", color="violet", icon=":material/workspace_premium:")
    if segment.get("value_segment") or customer.get("segment"):
        st.badge(str(segment.get("value_segment") or customer.get("segment")), color="orange",
                 help="Value segment: recency, frequency and monetary scores.")
    if segment.get("top_revenue"):
        st.badge("among the 20% who bring 80%", color="green", icon=":material/star:")
    for device_segment in segment.get("device_segments") or []:
        st.badge(str(device_segment).replace("_", " "), color="gray")
    for key in ("region", "timezone"):
        if customer.get(key):
            st.badge(str(customer[key]), color="gray")
    if customer.get("erased_at"):
        st.badge("erased", color="red")

online_count = sum(1 for d in devices if d.get("online"))
open_orders = sum(1 for o in orders if o.get("status") not in ("completed", "cancelled"))
with st.container(horizontal=True):
    if membership:
        next_tier = (membership.get("next_tier") or {}).get("name")
        st.metric("Tier", str(tier or "–"), border=True,
                  help=(f"{float(membership.get('to_next_tier') or 0):,.2f} more spend reaches {next_tier}."
                        if next_tier else "The highest tier."))
        st.metric("Points", f"{int(membership.get('points_balance') or 0):,}", border=True,
                  help=f"{int(membership.get('points_expiring_soon') or 0):,} of them expire within 30 days.")
        window = int(membership.get("window_days") or 365)
        st.metric("Spend, last year" if window == 365 else f"Spend, last {duration_words(window * 86400)}",
                  f"{float(membership.get('spend_in_window') or 0):,.2f}", border=True)
    st.metric("Appliances", len(devices), f"{online_count} online" if devices else None, delta_color="off",
              delta_arrow="off", border=True)
    st.metric("Open orders", open_orders, border=True)
    st.metric("Offers", len(offers), border=True)
    if customer.get("birthday"):
        st.metric("Birthday", str(customer["birthday"]), border=True)

left, right = st.columns(2)
with left:
    st.subheader("Contact")
    if can("read_contact_details"):
        contact = (f"**Phone** {plain(customer.get('phone') or '–')}  \n"
                   f"**Email** {plain(customer.get('email') or '–')}")
    else:
        contact = "Phone and e-mail are the hotline's; offers reach the customer through the contact policy."
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
            # Words, not emoji: they read the same in every browser and font.
            grid.loc[str(consent.get("purpose")), str(consent.get("channel"))] = (
                "given" if consent.get("granted") else "withdrawn"
            )
        st.dataframe(grid.style.map(lambda word: {"given": "color: #067647; font-weight: 600",
                                                  "withdrawn": "color: #b42318"}.get(word, "")))
    history = view.get("consent_history") or []
    if history:
        with st.expander(f"Consent history ({len(history)})"):
            st.dataframe(pd.DataFrame([
                {"when": local_time(h.get("at"), zone), "purpose": h.get("purpose"), "channel": h.get("channel"),
                 "granted": bool(h.get("granted")), "how": h.get("source") or "–"}
                for h in history
            ]), hide_index=True, column_config={"granted": st.column_config.CheckboxColumn("granted")})

timeline: list[dict[str, Any]] = view.get("timeline") or []
st.subheader("Timeline")
if not timeline:
    st.caption("Nothing has happened with this customer yet.")
else:
    events = pd.DataFrame([{"at": t.get("at"), "kind": name_words(t.get("kind")), "what": t.get("text")}
                           for t in timeline])
    events["at"] = pd.to_datetime(events["at"], utc=True, format="ISO8601")
    kinds = list(dict.fromkeys(events["kind"]))
    # Room either side, so a customer whose whole story is minutes long still reads as moments on a day.
    first, last = events["at"].min(), events["at"].max()
    pad = max(pd.Timedelta(hours=12), (last - first) * 0.05)
    st.altair_chart(alt.Chart(events).mark_point(filled=True, size=110).encode(
        # One way of writing time on the axis: hours within a couple of days, dates beyond.
        x=alt.X("at:T", title=None, scale=alt.Scale(domain=[(first - pad).isoformat(), (last + pad).isoformat()]),
                axis=alt.Axis(format="%a %H:%M" if (last - first) + 2 * pad <= pd.Timedelta(days=2) else "%d %b %Y",
                              labelOverlap=True)),
        y=alt.Y("kind:N", title=None, sort=kinds),
        color=alt.Color("kind:N", legend=None), tooltip=[alt.Tooltip("at:T", format="%a %d %b %H:%M"), "what:N"],
    ).properties(height=max(90, 38 * len(kinds))))
    st.dataframe(pd.DataFrame({"when": [local_time(t.get("at"), zone) for t in timeline],
                               "kind": [name_words(t.get("kind")) for t in timeline],
                               "what": [t.get("text") for t in timeline]}),
                 hide_index=True, column_config={"what": st.column_config.TextColumn(width="large")})

st.subheader("Appliances")
if not devices:
    st.caption("No appliances registered to this customer.")
else:
    table = frame(
        devices, ["id", "model", "kind", "online", "last_seen", "missing_seq", "purchased_on", "region"]
    )
    if "last_seen" in table:
        table["last_seen"] = table["last_seen"].map(time_ago)
    if "kind" in table:
        table["kind"] = table["kind"].map(name_words)
    table = table.rename(columns={"id": "device", "last_seen": "last seen", "missing_seq": "messages missing",
                                  "purchased_on": "purchased"})
    st.dataframe(table, hide_index=True,
                 column_config={"online": st.column_config.CheckboxColumn("online")})
    with st.container(horizontal=True):
        for device in devices:
            link_to("device", label=device["id"], icon=":material/kitchen:", query_params={"device": device["id"]})

if orders:
    st.subheader("Service orders")
    st.dataframe(pd.DataFrame([
        {"order": f"#{o.get('id')}", "opened": local_time(o.get("opened_at"), zone), "device": o.get("device_id"),
         "type": o.get("type"), "status": str(o.get("status") or "").replace("_", " "), "reason": o.get("reason"),
         "completed": local_time(o.get("completed_at"), zone) if o.get("completed_at") else "–"}
        for o in orders
    ]), hide_index=True, column_config={"reason": st.column_config.TextColumn(width="large")})
if offers:
    st.subheader("Offers")
    st.dataframe(pd.DataFrame([
        {"offered": local_time(o.get("issued_at"), zone), "template": o.get("template"), "status": o.get("status"),
         "why": o.get("status_reason"), "reason to the owner": o.get("reason"), "channel": o.get("channel") or "–",
         "expires": local_time(o.get("expires_at"), zone) if o.get("expires_at") else "–"}
        for o in offers
    ]), hide_index=True, column_config={"why": st.column_config.TextColumn(width="medium")})
contacts: list[dict[str, Any]] = view.get("contacts") or []
if contacts:
    st.subheader("Contacts the policy decided")
    st.dataframe(pd.DataFrame([
        {"when": local_time(c.get("decided_at"), zone), "purpose": c.get("purpose"), "channel": c.get("channel"),
         # A subject with no space is a key the API keeps for itself, not words for a person.
         "subject": c.get("subject") if " " in str(c.get("subject") or "") else "–",
         "decision": "held" if c.get("held") else ("allowed" if c.get("allowed") else "refused"),
         "why": c.get("reason")}
        for c in contacts
    ]), hide_index=True, column_config={"why": st.column_config.TextColumn(width="large")})
