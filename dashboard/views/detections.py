"""Detections: what the rule engine found on which appliance, why, and what it asks for; acknowledge them."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from dashboard.client import ApiError
from dashboard.data import change, fetch, fetch_or_stop, show_api_error, stop_with
from dashboard.session import can, current_user
from dashboard.ui import (
    link_to,
    linked_id,
    local_time,
    metric_units,
    owner_label,
    parse_ts,
    plain,
    reason_of,
    remember_choice,
    show_explanation,
    time_ago,
    viewer_zone,
)
from dashboard.words import key_words, name_words

STATUSES = ["open", "acknowledged", "cleared"]
SEVERITIES = ["critical", "warning", "info"]
ALL_STATUSES, ALL_SEVERITIES, ALL_RULES, ALL_KINDS = "all statuses", "all severities", "all rules", "all kinds"
SEVERITY_RANK = {"critical": 0, "warning": 1, "info": 2}
# What a detection's rule does, from its actions: a service visit or call (a fault, a maintenance due) comes before
# a detection only recorded, which comes before a marketing offer.
SERVICE_ACTIONS = {"open_service_order", "call_customer"}
KINDS = ["service", "recorded only", "marketing"]
KIND_WORDS = {"service": "service (order or call)", "recorded only": "recorded only", "marketing": "marketing (offer)"}
SEVERITY_COLORS = {"critical": "red", "warning": "orange", "info": "blue"}
STATUS_COLORS = {"open": "red", "acknowledged": "orange", "cleared": "green"}
LIST_LIMIT = 200
# What the last click on "Acknowledge" did, shown after the rerun that reads the new state.
ACKNOWLEDGED_KEY = "detections_acknowledged"


def action_row(action: dict[str, Any]) -> dict[str, Any]:
    params = action.get("params") or {}
    what = (" · ".join(f"{name_words(key)} {value}" for key, value in params.items()) if isinstance(params, dict)
            else params)
    return {"action": name_words(action.get("action") or "?"),
            "status": "done" if action.get("status") == "done" else "waiting", "what": what,
            # The key is how a retry finds the action done; shortened, it still tells one from another.
            "key": key_words(action.get("key"))}


def label_of(detection: dict[str, Any]) -> str:
    return (f"#{detection.get('id')} · {detection.get('severity')} · {detection.get('rule_id')} · "
            f"{detection.get('device_id')} · {detection.get('status')}")


def rule_action_kinds(rule: dict[str, Any]) -> list[str]:
    then = (rule.get("document") or {}).get("then") or []
    return [next(iter(action)) for action in then if isinstance(action, dict) and action]


def kind_of(detection: dict[str, Any], rules: dict[str, dict[str, Any]]) -> str:
    """'service', 'recorded only' or 'marketing', by the actions the detection carries (else its rule's)."""
    kinds = [str(a.get("action")) for a in detection.get("actions") or [] if isinstance(a, dict)]
    if not kinds:
        kinds = rule_action_kinds(rules.get(str(detection.get("rule_id")), {}))
    if set(kinds) & SERVICE_ACTIONS:
        return "service"
    return "marketing" if kinds and all(kind == "offer" for kind in kinds) else "recorded only"


def most_urgent_first(detections: list[dict[str, Any]], rules: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Critical before warning before info; within one, service before recorded before marketing; then newest."""
    def key(detection: dict[str, Any]) -> tuple[int, int, float, int]:
        opened = parse_ts(detection.get("opened_at"))
        return (SEVERITY_RANK.get(str(detection.get("severity")), 3), KINDS.index(kind_of(detection, rules)),
                -(opened.timestamp() if opened else 0), -int(detection.get("id") or 0))
    return sorted(detections, key=key)


st.title("Detections")
user = current_user()
technician_view = user is not None and user.role == "technician"
zone = viewer_zone()
if technician_view:
    st.caption("The detections of the devices on the orders assigned to you.")

if message := st.session_state.pop(ACKNOWLEDGED_KEY, None):
    st.success(message, icon=":material/check_circle:")

open_now = fetch_or_stop("detections", status="open", limit=1)
acknowledged = fetch_or_stop("detections", status="acknowledged", limit=1)
try:
    rules: dict[str, dict[str, Any]] = {rule["id"]: rule for rule in fetch("rules").get("items", [])}
except ApiError as error:
    if error.status != 403:
        stop_with(error)
    rules = {}  # a technician reads their detections, not the rules: the descriptions are left out

open_total = open_now.get("total", 0)
# Counted by the API (severity filter), so none is missed past the page.
critical_open = fetch_or_stop("detections", status="open", severity="critical", limit=1).get("total", 0)
with st.container(horizontal=True):
    st.metric("Open", f"{open_total:,}", border=True, help="Found by a rule and not yet seen by a person.")
    st.metric("Acknowledged", f"{acknowledged.get('total', 0):,}", border=True,
              help="Seen by a person; each clears by itself once its rule stops holding.")
    st.metric("Critical open", f"{critical_open:,}", border=True)

linked = linked_id("detection")

with st.container(horizontal=True, vertical_alignment="bottom"):
    status = st.selectbox("Status", [*STATUSES, ALL_STATUSES], width=180)
    severity = st.selectbox("Severity", [ALL_SEVERITIES, *SEVERITIES], width=180)
    kind = st.selectbox("Kind", [ALL_KINDS, *KINDS], width=220,
                        format_func=lambda k: KIND_WORDS.get(k, k),
                        help="What the rule does: sends a technician or calls (service), only records, or offers.")
    rule_id = st.selectbox("Rule", [ALL_RULES, *sorted(rules)], width=320) if rules else ALL_RULES
    device_text = st.text_input("Device id", placeholder="e.g. RH-000123", width=220)

filters = {"status": None if status == ALL_STATUSES else status, "device_id": device_text.strip() or None,
           "severity": None if severity == ALL_SEVERITIES else severity, "limit": LIST_LIMIT}
# One request, most urgent first: a fault is never pushed off the page by hundreds of newer reminders.
listing = fetch_or_stop("detections", rule_id=None if rule_id == ALL_RULES else rule_id, order="urgent", **filters)
items: list[dict[str, Any]] = listing.get("items", [])
total = listing.get("total", len(items))
# What a rule does (its kind) is the rule's, not the detection's: filtered and ordered here, within the page.
shown = most_urgent_first([d for d in items if kind in (ALL_KINDS, kind_of(d, rules))], rules)

narrowing = [KIND_WORDS.get(kind, kind)] if kind != ALL_KINDS else []
caption = f"{total:,} detection{'s match' if total != 1 else ' matches'}"
if total > len(items) or narrowing:
    caption += f"; {len(shown):,} shown" + (f" ({', '.join(narrowing)})" if narrowing else "")
    if total > len(items):
        caption += f": the {LIST_LIMIT} most urgent"
st.caption(caption + ". Most urgent first: critical, then warning, then info; service before marketing; newest "
           "first within those.")

by_id = {str(d.get("id")): d for d in shown}
if linked and linked not in by_id:
    # A link or bookmark names one detection: show it even when the filters would hide it.
    try:
        by_id = {linked: fetch("detection", linked), **by_id}
    except ApiError as error:
        if error.status not in (404, 422):
            stop_with(error)
        st.warning(f"There is no detection #{linked}.")

narrowed = bool(device_text.strip()) or rule_id != ALL_RULES or severity != ALL_SEVERITIES or kind != ALL_KINDS
if not shown:
    if technician_view and not narrowed:
        # A technician's scope is the devices of their orders: an empty one says nothing about the fleet.
        st.info(f"No {'' if status == ALL_STATUSES else status + ' '}detection on the devices of the orders "
                "assigned to you. You see detections once a dispatcher assigns you an order.")
    elif status == "open" and not narrowed:
        st.info("Nothing open: no rule has found anything new.")
    else:
        st.info("No detection matches these filters.")
else:
    table = pd.DataFrame(
        [
            {"severity": d.get("severity"), "kind": kind_of(d, rules), "opened": local_time(d.get("opened_at"), zone),
             "rule": d.get("rule_id"), "device": d.get("device_id"), "model": d.get("model"),
             "status": d.get("status"), "reason": reason_of(d.get("explanation")), "id": d.get("id")}
            for d in shown
        ]
    )
    st.dataframe(table, hide_index=True, column_config={"reason": st.column_config.TextColumn(width="large")})
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
    st.metric("Opened", time_ago(detection.get("opened_at")), border=True,
              help=local_time(detection.get("opened_at"), zone))
    acknowledged_at, acknowledged_by = detection.get("acknowledged_at"), detection.get("acknowledged_by")
    st.metric("Acknowledged by", f"{acknowledged_by or '?'}, {time_ago(acknowledged_at)}" if acknowledged_at else "–",
              border=True, help=local_time(acknowledged_at, zone) if acknowledged_at
              else "Nobody has acknowledged it.")
    st.metric("Cleared", time_ago(detection.get("cleared_at")) if detection.get("cleared_at") else "still holds",
              border=True, help=local_time(detection.get("cleared_at"), zone) if detection.get("cleared_at")
              else "The rule still holds for this appliance.")

with st.container(horizontal=True, vertical_alignment="center"):
    if device_id:
        link_to("device", label=f"Device {device_id}", icon=":material/kitchen:",
                     query_params={"device": device_id})
    if detection.get("owner_id") is not None:
        link_to("customers", label=f"Owner: {owner_label(detection['owner_id'])}", icon=":material/person:",
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
    if pending == 0:
        st.caption("Every action is carried out." if len(actions) > 1 else "The action is carried out.")
    elif pending == len(actions):
        st.caption("Waiting for the service that carries " + ("them" if pending > 1 else "it") + " out.")
    else:
        st.caption(f"{len(actions) - pending} carried out; {pending} still waiting for the service that carries "
                   f"{'them' if pending > 1 else 'it'} out.")
    st.dataframe(pd.DataFrame([action_row(a) for a in actions]), hide_index=True,
                 column_config={"what": st.column_config.TextColumn(width="large")})

with st.expander("Explanation as the API sent it"):
    st.json(detection.get("explanation") or {})
