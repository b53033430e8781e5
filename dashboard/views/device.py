"""Device drill-down: find one appliance, see its state, its metrics over a chosen range with what happened to it
(its events, its detections opening and clearing) drawn on them, and its detections, orders and offers."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import pandas as pd
import streamlit as st

from dashboard.client import ApiError
from dashboard.data import fetch, fetch_or_stop, stop_with
from dashboard.session import current_user
from dashboard.ui import (
    bucket_for,
    format_value,
    link_to,
    linked_id,
    local_time,
    owner_label,
    reason_of,
    remember_choice,
    telemetry_chart,
    time_ago,
    viewer_zone,
)
from dashboard.words import event_words, instant_words, metric_words, name_words, plural, unit_words

RANGES = {"1 h": timedelta(hours=1), "6 h": timedelta(hours=6), "24 h": timedelta(days=1),
          "7 d": timedelta(days=7), "30 d": timedelta(days=30)}
# Roughly 100-300 points per line whatever the range, so charts stay readable and requests small.
AUTO_BUCKET = {"1 h": "1m", "6 h": "5m", "24 h": "15m", "7 d": "1h", "30 d": "6h"}
BUCKETS = ["auto", "raw", "1m", "5m", "15m", "1h", "6h", "1d"]
CUSTOM = "dates…"
EVENTS_LIMIT = 500
TELEMETRY_LIMIT = 2000
SEARCH_LIMIT = 50

st.title("Device drill-down")
user = current_user()
technician_view = user is not None and user.role == "technician"
zone = viewer_zone()

models: dict[str, dict[str, Any]] = {m["code"]: m for m in fetch_or_stop("models").get("items", [])}
kinds = sorted({m["kind"] for m in models.values() if m.get("kind")})

linked = linked_id("device")

with st.container(horizontal=True, vertical_alignment="bottom"):
    search = st.text_input("Search devices", placeholder="serial, model or owner", width=320)
    kind = st.selectbox("Kind", ["all kinds", *kinds], width=200,
                        format_func=lambda k: k if k == "all kinds" else name_words(k))
    only_offline = st.toggle("Offline only")

found = fetch_or_stop(
    "devices",
    q=search.strip() or None,
    kind=None if kind == "all kinds" else kind,
    online="false" if only_offline else None,
    limit=SEARCH_LIMIT,
)
labels = {
    d["id"]: f"{d['id']} · {d.get('model', '?')} · {'online' if d.get('online') else 'offline'}"
    for d in found.get("items", [])
}
if linked and linked not in labels:
    labels = {linked: linked, **labels}
if not labels:
    narrowed = bool(search.strip()) or kind != "all kinds" or only_offline
    if narrowed:
        st.info("No device matches this search.")
    elif technician_view:
        # The API shows a technician the devices of the orders assigned to them, and nothing else.
        st.info("No device of an order assigned to you; a dispatcher assigns orders from the dispatch board.")
    else:
        st.info("No device is registered yet.")
    st.stop()

ids = list(labels)
st.caption(f"{found.get('total', len(found.get('items', [])))} devices match; showing up to {SEARCH_LIMIT}.")
device_id = st.selectbox(
    "Device", ids, index=ids.index(linked) if linked in ids else 0, format_func=labels.__getitem__
)
remember_choice("device", device_id)

try:
    device = fetch("device", device_id)
except ApiError as error:
    if error.status == 404:
        st.warning(f"There is no device {device_id!r}.")
        st.stop()
    stop_with(error)

model = models.get(device.get("model", ""), {})
metric_specs: dict[str, dict[str, Any]] = model.get("metrics") or {}

st.header(device["id"])
with st.container(horizontal=True):
    online = bool(device.get("online"))
    st.badge("online" if online else "offline", color="green" if online else "red")
    st.badge(f"{model.get('name') or device.get('model')} "
             f"({name_words(device.get('kind') or model.get('kind', '?'))})",
             color="blue")
    if device.get("region"):
        st.badge(device["region"], color="gray", icon=":material/location_on:")

with st.container(horizontal=True):
    st.metric("Last seen", time_ago(device.get("last_seen")), border=True,
              help=local_time(device.get("last_seen"), zone) if device.get("last_seen")
              else "The device has never reported.")
    st.metric("Last message number", format_value(device.get("last_seq")), border=True,
              help="The sequence number of the device's latest message.")
    st.metric("Messages missing", format_value(device.get("missing_seq", 0)), border=True,
              help="Messages this device sent that never arrived.")
    st.metric("Purchased", instant_words(str(device["purchased_on"])) if device.get("purchased_on") else "–",
              border=True)

if device.get("owner") is not None:
    link_to("customers", label=f"Owner: {owner_label(device['owner'])}", icon=":material/person:",
                 query_params={"customer": str(device["owner"])})

st.subheader("Latest values")
latest: dict[str, Any] = device.get("latest") or {}
if not latest:
    st.caption("No readings yet.")
else:
    with st.container(horizontal=True):
        for name, value in sorted(latest.items()):
            spec = metric_specs.get(name, {})
            low, high = spec.get("min"), spec.get("max")
            out_of_range = isinstance(value, int | float) and (
                (low is not None and value < low) or (high is not None and value > high)
            )
            st.metric(
                f"⚠ {metric_words(name)}" if out_of_range else metric_words(name),
                format_value(value, unit_words(spec.get("unit"))),
                border=True,
                help=(spec.get("description") or "")
                + (f" Valid range {low} to {high} {unit_words(spec.get('unit'))}." if spec else ""),
            )

st.subheader("Metrics over time")
with st.container(horizontal=True, vertical_alignment="bottom"):
    range_label = st.selectbox("Range", [*RANGES, CUSTOM], index=2, width=120)
    if range_label == CUSTOM:
        today = datetime.now(UTC).date()
        picked = st.date_input("From, to (UTC)", (today - timedelta(days=90), today), max_value=today, width=240,
                               key="device_dates")
    bucket_choice = st.selectbox("Bucket", BUCKETS, width=120,
                                 help="Averages per bucket; 'raw' shows every reading.")
    chosen = st.multiselect("Metrics", sorted(set(metric_specs) | set(latest)),
                            default=sorted(latest) or sorted(metric_specs), format_func=metric_words)


def chosen_span() -> tuple[datetime, datetime]:
    """The range asked for: the last hour, day, ... up to now, or whole days picked (UTC), up to now at most."""
    # Rounded to the minute so that reruns within the cache ttl ask the same question.
    current = datetime.now(UTC).replace(second=0, microsecond=0)
    if range_label != CUSTOM:
        return current - RANGES[range_label], current
    # A range being picked has one date yet: it is that one day.
    days: list[date] = list(picked) if isinstance(picked, tuple | list) else [picked]
    start = datetime.combine(days[0], time(0), tzinfo=UTC)
    return start, min(datetime.combine(days[-1], time(0), tzinfo=UTC) + timedelta(days=1), current)


since, now = chosen_span()
span = now - since
# A range up to now asks the API for everything since its start (the minute `now` was rounded from included);
# whole days picked end where they end.
until = now if range_label == CUSTOM else None
drawn_until = now if range_label == CUSTOM else now + timedelta(minutes=1)
# Roughly 100-300 points per line: the automatic bucket follows the range (a chosen one: bucket_for's choice).
auto_bucket = AUTO_BUCKET.get(range_label) or bucket_for(span.total_seconds())
bucket = auto_bucket if bucket_choice == "auto" else bucket_choice


def readings(metric: str) -> tuple[pd.DataFrame, datetime]:
    """The metric's points in the range. With the automatic bucket, the bucket follows the data's own span: a
    device that began reporting an hour ago gets minute averages over that hour, not one 15-minute point.
    Answers the points and where the chart's time axis starts."""
    def ask(since_at: datetime, size: str | None) -> pd.DataFrame:
        answer = fetch_or_stop("telemetry", device_id, metric=metric, since=since_at.isoformat(),
                               until=until and until.isoformat(), bucket=None if size in (None, "raw") else size,
                               limit=TELEMETRY_LIMIT)
        found = pd.DataFrame(answer.get("items") or [], columns=["ts", "metric", "value"])
        found = found[(found["metric"] == metric) & pd.to_numeric(found["value"], errors="coerce").notna()].copy()
        found["ts"] = pd.to_datetime(found["ts"], utc=True, format="ISO8601")
        found["value"] = found["value"].astype(float)
        return found.sort_values("ts")

    points = ask(since, bucket)
    if bucket_choice != "auto" or points.empty:
        return points, since
    first = points["ts"].min().to_pydatetime().replace(second=0, microsecond=0)
    if (now - first) < span / 2:
        fitting = bucket_for((now - first).total_seconds())
        # A little room before the first reading, so it does not sit on the axis.
        return (ask(first, fitting) if fitting != bucket else points), first - (now - first) / 10
    return points, since


def optional(method: str, *args: Any, **filters: Any) -> list[dict[str, Any]] | None:
    """A listing about this device, or None when the role may not read it (403) or the API has no such list."""
    try:
        return fetch(method, *args, **filters).get("items") or []
    except ApiError as error:
        if error.status in (403, 404):
            return None
        stop_with(error)


events = optional("device_events", device_id, since=since.isoformat(), until=until and until.isoformat(),
                  limit=EVENTS_LIMIT)
detections = optional("detections", device_id=device_id, limit=50)
fault_meanings = model.get("fault_codes") or {}


def moments_in_range() -> pd.DataFrame:
    """What happened to the device in the range, to draw on every chart: its events, and its detections opening
    and clearing (labelled with the rule)."""
    rows = [{"ts": e.get("ts"), "kind": "event", "label": event_words(e, fault_meanings)} for e in events or []]
    for d in detections or []:
        rows.append({"ts": d.get("opened_at"), "kind": "detection opened", "label": f"{d.get('rule_id')} opened"})
        if d.get("cleared_at"):
            rows.append({"ts": d.get("cleared_at"), "kind": "detection cleared",
                         "label": f"{d.get('rule_id')} cleared"})
    found = pd.DataFrame(rows, columns=["ts", "kind", "label"])
    found["ts"] = pd.to_datetime(found["ts"], utc=True, format="ISO8601")
    return found[(found["ts"] >= since) & (found["ts"] <= drawn_until)]


moments = moments_in_range()
if not moments.empty:
    counts = moments["kind"].value_counts()
    st.caption(
        f"In this range: {plural(counts.get('event', 0), 'event')}, "
        f"{plural(counts.get('detection opened', 0), 'detection')} opened and "
        f"{counts.get('detection cleared', 0)} cleared, each drawn as a labelled line where a chart covers it "
        "(hover a line for what it was)."
    )
columns = st.columns(2)
for position, metric in enumerate(chosen):
    spec = metric_specs.get(metric, {})
    points, starts = readings(metric)
    with columns[position % 2]:
        unit_text = unit_words(spec.get("unit"))
        unit = f" ({unit_text})" if unit_text else ""
        st.markdown(f"**{metric_words(metric)}**{unit}" + (" · counter" if spec.get("counter") else ""))
        if points.empty:
            st.caption("No readings in this range.")
            continue
        shown_span = now - starts
        st.altair_chart(telemetry_chart(
            points[["ts", "value"]], unit=unit_text, title=None, domain=(starts, now + timedelta(minutes=1)),
            time_format="%H:%M" if shown_span <= timedelta(days=1) else "%d %b",
            moments=moments[moments["ts"] >= starts]))
        if len(points) == 1:
            st.caption(f"One reading so far, {local_time(points['ts'].iloc[0].to_pydatetime(), zone)}.")
        if len(points) >= TELEMETRY_LIMIT:
            st.caption(f"Only the first {TELEMETRY_LIMIT} points; choose a larger bucket.")


# ---------------------------------------------------------------- what happened to it


if events:
    st.subheader("Events in this range")
    st.dataframe(pd.DataFrame([
        {"when": local_time(e.get("ts"), zone), "what": event_words(e, fault_meanings),
         "detail": e.get("detail") or ""}
        for e in events
    ]), hide_index=True)
    if len(events) >= EVENTS_LIMIT:
        st.caption(f"The newest {EVENTS_LIMIT} events of the range.")
if detections:
    st.subheader("Detections")
    st.dataframe(pd.DataFrame([
        {"opened": local_time(d.get("opened_at"), zone), "severity": d.get("severity"), "rule": d.get("rule_id"),
         "status": d.get("status"), "why": reason_of(d.get("explanation"))}
        for d in detections
    ]), hide_index=True, column_config={"why": st.column_config.TextColumn(width="large")})
orders = optional("service_orders", device_id=device_id, limit=50)
if orders:
    st.subheader("Service orders")
    st.dataframe(pd.DataFrame([
        {"order": f"#{o.get('id')}", "opened": local_time(o.get("opened_at"), zone), "type": o.get("type"),
         "priority": o.get("priority"), "status": str(o.get("status") or "").replace("_", " "),
         "reason": o.get("reason")}
        for o in orders
    ]), hide_index=True, column_config={"reason": st.column_config.TextColumn(width="large")})
offers = optional("offers", device_id=device_id, limit=50)
if offers:
    st.subheader("Offers")
    st.dataframe(pd.DataFrame([
        {"issued": local_time(o.get("issued_at"), zone), "template": o.get("template"), "status": o.get("status"),
         "why": o.get("status_reason"), "reason to the owner": o.get("reason")}
        for o in offers
    ]), hide_index=True)
