"""Ingest quarantine: messages that could not be accepted, and why."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pandas as pd
import streamlit as st

from dashboard.data import fetch_or_stop
from dashboard.ui import frame, local_time, viewer_zone

LIST_LIMIT = 200

st.title("Ingest quarantine")

stats = fetch_or_stop("ingest_stats")
by_reason = pd.DataFrame(stats.get("quarantine_by_reason") or [], columns=["reason", "count"])

with st.container(horizontal=True):
    st.metric("Quarantined", f"{int(by_reason['count'].sum()):,}", border=True)
    st.metric("Reasons", len(by_reason), border=True)
    st.metric("Messages missing", f"{stats.get('missing_seq', 0):,}", border=True,
              help="Messages devices sent that never arrived; these are not in quarantine.")

if by_reason.empty:
    st.success("Nothing in quarantine.")
    st.stop()

st.subheader("By reason")
st.bar_chart(by_reason, x="reason", y="count", horizontal=True, sort="-count", x_label="messages", y_label="",
             height=max(160, 40 * len(by_reason)))

reasons = by_reason.sort_values("count", ascending=False)["reason"].tolist()
reason = st.selectbox("Reason", ["all reasons", *reasons], width=320)
listing = fetch_or_stop("quarantine", reason=None if reason == "all reasons" else reason, limit=LIST_LIMIT)
items: list[dict[str, Any]] = listing.get("items", [])

st.subheader("Latest messages")
total = listing.get("total", len(items))
st.caption(f"{total:,} in quarantine for this filter; showing the latest {len(items)}.")
if not items:
    st.info("No messages for this reason.")
    st.stop()


def payload_text(payload: Any) -> str:
    """The payload as one line: a JSON document re-encoded, raw text as received."""
    return payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)


table = frame(items, ["received_at", "device_id", "reason", "detail", "topic", "payload", "id"])
if "payload" in table:
    table["payload"] = table["payload"].map(payload_text)
if "received_at" in table:
    zone = viewer_zone()
    table["received_at"] = table["received_at"].map(lambda at: local_time(at, zone))
table = table.rename(columns={"received_at": "received", "device_id": "device"})
st.dataframe(table, hide_index=True, column_config={"payload": st.column_config.TextColumn(width="large")})

by_id = {str(item.get("id")): item for item in items}
chosen = st.selectbox(
    "Inspect a message", list(by_id),
    format_func=lambda key: f"#{key} · {by_id[key].get('device_id') or '?'} · {by_id[key].get('reason')}",
)
message = by_id[chosen]
st.markdown(f"**{message.get('reason')}**: {message.get('detail') or ''}  \n`{message.get('topic') or ''}`")
payload = message.get("payload")
if isinstance(payload, str):
    # Kept as text when it arrived as text; show it as a document when it is one after all.
    with contextlib.suppress(ValueError):
        payload = json.loads(payload)
if isinstance(payload, dict | list):
    st.json(payload)
else:
    st.code(str(payload), language=None)
