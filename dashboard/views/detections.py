"""Detections: what the rule engine found on which appliance, why, and what it asks for; acknowledge them."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from dashboard.client import ApiError
from dashboard.data import change, fetch, fetch_or_stop, show_api_error, stop_with
from dashboard.session import can
from dashboard.ui import (
    link_to,
    linked_id,
    metric_units,
    parse_ts,
    plain,
    reason_of,
    remember_choice,
    show_explanation,
    time_ago,
)

STATUSES = ["open", "acknowledged", "cleared"]
SEVERITIES = ["critical", "warning", "info"]
ALL_STATUSES, ALL_SEVERITIES, ALL_RULES = "all statuses", "all severities", "all rules"
SEVERITY_COLORS = {"critical": "red", "warning": "orange", "info": "blue"}
STATUS_COLORS = {"open": "red", "acknowledged": "orange", "cleared": "green"}
LIST_LIMIT = 200
# The API's largest page. Critical open detections are counted among these, as the API has no count by severity.
COUNT_LIMIT = 1000
# What the last click on "Acknowledge" did, shown after the rerun that reads the new state.
ACKNOWLEDGED_KEY = "detections_acknowledged"


def action_row(action: dict[str, Any]) -> dict[str, Any]:
    params = action.get("params") or {}
    what = " · ".join(f"{key} {value}" for key, value in params.items()) if isinstance(params, dict) else params
    return {"action": str(action.get("action") or "?").replace("_", " "), "status": action.get("status"),
            "what": what, "key": action.get("key")}


def label_of(detection: dict[str, Any]) -> str:
    return (f"#{detection.get('id')} · {detection.get('severity')} · {detection.get('rule_id')} · "
            f"{detection.get('device_id')} · {detection.get('status')}")


st.title("Detections")

if message := st.session_state.pop(ACKNOWLEDGED_KEY, None):
    st.success(message, icon=":material/check_circle:")

open_now = fetch_or_stop("detections", status="open", limit=COUNT_LIMIT)
acknowledged = fetch_or_stop("detections", status="acknowledged", limit=1)
try:
    rules: dict[str, dict[str, Any]] = {rule["id"]: rule for rule in fetch("rules").get("items", [])}
except ApiError as error:
    if error.status != 403:
        stop_with(error)
    rules = {}  # a technician reads their detections, not the rules: the descriptions are left out

open_items: list[dict[str, Any]] = open_now.get("items", [])
open_total = open_now.get("total", len(open_items))
critical_open = sum(1 for d in open_items if d.get("severity") == "critical")
with st.container(horizontal=True):
    st.metric("Open", f"{open_total:,}", border=True, help="Found by a rule and not yet seen by a person.")
    st.metric("Acknowledged", f"{acknowledged.get('total', 0):,}", border=True,
              help="Seen by a person; each clears by itself once its rule stops holding.")
    st.metric("Critical open", f"{critical_open:,}" + ("+" if open_total > len(open_items) else ""), border=True,
              help=f"Counted among the newest {len(open_items):,} open." if open_total > len(open_items) else None)

linked = linked_id("detection")

with st.container(horizontal=True, vertical_alignment="bottom"):
    status = st.selectbox("Status", [*STATUSES, ALL_STATUSES], width=180)
    severity = st.selectbox("Severity", [ALL_SEVERITIES, *SEVERITIES], width=180)
    rule_id = st.selectbox("Rule", [ALL_RULES, *sorted(rules)], width=320)
    device_text = st.text_input("Device id", placeholder="e.g. RH-000123", width=220)

listing = fetch_or_stop(
    "detections",
    status=None if status == ALL_STATUSES else status,
    rule_id=None if rule_id == ALL_RULES else rule_id,
    device_id=device_text.strip() or None,
    limit=LIST_LIMIT,
)
items: list[dict[str, Any]] = listing.get("items", [])
# The API filters by status, rule and device; severity is a property of the rule, so it is filtered here.
shown = [d for d in items if severity == ALL_SEVERITIES or d.get("severity") == severity]

total = listing.get("total", len(items))
caption = f"{total:,} detection{'s match' if total != 1 else ' matches'}; showing the newest {len(items)}"
st.caption(caption + (f", {len(shown)} of them {severity}." if severity != ALL_SEVERITIES else "."))

by_id = {str(d.get("id")): d for d in shown}
if linked and linked not in by_id:
    # A link or bookmark names one detection: show it even when the filters would hide it.
    try:
        by_id = {linked: fetch("detection", linked), **by_id}
    except ApiError as error:
        if error.status not in (404, 422):
            stop_with(error)
        st.warning(f"There is no detection #{linked}.")

narrowed = bool(device_text.strip()) or rule_id != ALL_RULES or severity != ALL_SEVERITIES
if not shown:
    if status == "open" and not narrowed:
        st.info("Nothing open: no rule has found anything new.")
    else:
        st.info("No detection matches these filters.")
else:
    table = pd.DataFrame(
        [
            {"opened": parse_ts(d.get("opened_at")), "severity": d.get("severity"), "rule": d.get("rule_id"),
             "device": d.get("device_id"), "model": d.get("model"), "status": d.get("status"),
             "reason": reason_of(d.get("explanation")), "id": d.get("id")}
            for d in shown
        ]
    )
    st.dataframe(
        table, hide_index=True,
        column_config={"opened": st.column_config.DatetimeColumn("opened", format="YYYY-MM-DD HH:mm"),
                       "reason": st.column_config.TextColumn(width="large")},
    )
if not by_id:
    st.stop()

ids = list(by_id)
chosen = st.selectbox("Inspect a detection", ids, index=ids.index(linked) if linked in ids else 0,
                      format_func=lambda key: label_of(by_id[key]))
remember_choice("detection", chosen)
detection = by_id[chosen]
device_id = str(detection.get("device_id") or "")
rule = rules.get(str(detection.get("rule_id")), {})
description = (rule.get("document") or {}).get("description")

st.header(f"#{detection.get('id')} · {detection.get('rule_id')}")
with st.container(horizontal=True):
    st.badge(str(detection.get("severity")), color=SEVERITY_COLORS.get(str(detection.get("severity")), "gray"))
    st.badge(str(detection.get("status")), color=STATUS_COLORS.get(str(detection.get("status")), "gray"))
    if detection.get("model"):
        st.badge(str(detection["model"]), color="gray", icon=":material/kitchen:")
    if detection.get("rule_version") is not None:
        st.badge(f"rule v{detection['rule_version']}", color="gray")
if description:
    st.caption(plain(description))

with st.container(horizontal=True):
    st.metric("Opened", time_ago(detection.get("opened_at")), border=True, help=detection.get("opened_at"))
    acknowledged_at, acknowledged_by = detection.get("acknowledged_at"), detection.get("acknowledged_by")
    st.metric("Acknowledged by", f"{acknowledged_by or '?'}, {time_ago(acknowledged_at)}" if acknowledged_at else "–",
              border=True, help=acknowledged_at or "Nobody has acknowledged it.")
    st.metric("Cleared", time_ago(detection.get("cleared_at")) if detection.get("cleared_at") else "still holds",
              border=True, help=detection.get("cleared_at") or "The rule still holds for this appliance.")

with st.container(horizontal=True, vertical_alignment="center"):
    if device_id:
        link_to("device", label=f"Device {device_id}", icon=":material/kitchen:",
                     query_params={"device": device_id})
    if detection.get("owner_id") is not None:
        link_to("customers", label=f"Owner: customer {detection['owner_id']}", icon=":material/person:",
                     query_params={"customer": str(detection["owner_id"])})
    if detection.get("status") == "open" and can("acknowledge_detections") and st.button(
        "Acknowledge", type="primary", icon=":material/done:", key=f"acknowledge_{chosen}",
        help="Say you have seen it. It stays listed as acknowledged until the rule stops holding, then clears.",
    ):
        try:
            result = change("acknowledge_detection", chosen)
        except ApiError as error:
            show_api_error(error)
        else:
            by = f" by {result['acknowledged_by']}" if result.get("acknowledged_by") else ""
            st.session_state[ACKNOWLEDGED_KEY] = (
                f"Detection #{chosen} ({detection.get('rule_id')} on {device_id}) is now "
                f"{result.get('status', 'acknowledged')}{by}."
            )
            # Run again so the metrics and the list above read the new state.
            st.rerun()

st.subheader("Why it opened")
models = {m["code"]: m for m in fetch_or_stop("models").get("items", [])}
units = metric_units(models, detection.get("model"))
show_explanation(detection.get("explanation"), units)

if detection.get("status") == "cleared":
    st.subheader("Why it cleared")
    show_explanation(detection.get("clear_explanation"), units)

st.subheader("Actions")
actions = [a for a in detection.get("actions") or [] if isinstance(a, dict)]
if not actions:
    st.caption("The rule asks for no action.")
else:
    pending = sum(1 for a in actions if a.get("status") == "pending")
    st.caption(f"{pending} of {len(actions)} waiting for the service that carries them out.")
    st.dataframe(pd.DataFrame([action_row(a) for a in actions]), hide_index=True,
                 column_config={"what": st.column_config.TextColumn(width="large")})

with st.expander("Explanation as the API sent it"):
    st.json(detection.get("explanation") or {})
