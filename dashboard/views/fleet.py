"""Fleet health: how many appliances report, per kind, how clean the incoming stream is, and what the rules found
(open detections by model and severity, detections per day), and the maintenance and trade-in windows coming in
the next 30 days per region."""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

import altair as alt
import pandas as pd
import streamlit as st

from dashboard.client import ApiError
from dashboard.data import fetch, fetch_or_stop, stop_with
from dashboard.ui import link_to, parse_ts, viewer_zone
from dashboard.words import (
    FORECAST_EXPLAINED,
    FORECAST_KINDS,
    forecast_kind_words,
    left_out_words,
    name_words,
    region_words,
)

st.title("Fleet health")


def health_badge(health: dict[str, Any]) -> None:
    """One badge for the API, then one per dependency with its detail as the tooltip."""
    ok = health.get("status") == "ok"
    st.badge(
        "API ok" if ok else f"API {health.get('status', 'unknown')}",
        icon=":material/check_circle:" if ok else ":material/warning:",
        color="green" if ok else "orange",
    )
    for name in ("database", "broker"):
        part = health.get(name) or {}
        st.badge(
            f"{name} {'ok' if part.get('ok') else 'down'}",
            color="green" if part.get("ok") else "red",
            help=part.get("detail") or None,
        )


health = fetch_or_stop("health")

with st.container(horizontal=True):
    health_badge(health)

summary = fetch_or_stop("fleet_summary")

devices = summary.get("devices", 0)
online = summary.get("online", 0)
with st.container(horizontal=True):
    st.metric("Devices", f"{devices:,}", border=True)
    st.metric(
        "Online", f"{online:,}", f"{online / devices:.0%} of fleet" if devices else None,
        delta_color="off", delta_arrow="off", border=True,
    )
    st.metric("Offline", f"{summary.get('offline', 0):,}", border=True)
    st.metric("Never seen", f"{summary.get('never_seen', 0):,}", border=True)
with st.container(horizontal=True):
    st.metric("Readings, last 24 h", f"{summary.get('readings_24h', 0):,}", border=True)
    st.metric(
        "Messages missing", f"{summary.get('missing_seq', 0):,}", border=True,
        help="Messages devices sent that never arrived (gaps in their sequence numbers).",
    )
    st.metric(
        "Quarantined, last 24 h", f"{summary.get('quarantined_24h', 0):,}", border=True,
        help="Messages that could not be accepted; see Ingest quarantine.",
    )

st.subheader("Online share by kind")
by_kind = pd.DataFrame(summary.get("by_kind") or [], columns=["kind", "devices", "online"])
if by_kind.empty:
    st.info("No devices registered yet.")
else:
    # A kind with no devices has no share (NaN), not 0 %.
    share = by_kind["online"] / by_kind["devices"].where(by_kind["devices"] > 0)
    by_kind["online %"] = (100 * share).round(1)
    by_kind["kind"] = by_kind["kind"].map(name_words)
    st.altair_chart(alt.Chart(by_kind).mark_bar().encode(
        x=alt.X("kind:N", title=None, axis=alt.Axis(labelAngle=0)),
        # Always 0 to 100: a fleet that is all offline reads as empty bars, not as a scale of zeros.
        y=alt.Y("online %:Q", title="online %", scale=alt.Scale(domain=[0, 100])),
        tooltip=["kind:N", "online %:Q", "online:Q", "devices:Q"],
    ).properties(height=300))
    st.caption(
        " · ".join(f"{row.kind}: {row.online:,} of {row.devices:,}" for row in by_kind.itertuples())
    )

if summary.get("quarantined_24h"):
    link_to("quarantine", label="Why were messages quarantined?", icon=":material/report:")


# ---------------------------------------------------------------- what the rules found


SEVERITIES = ["critical", "warning", "info"]
SEVERITY_COLORS = ["#d62728", "#fd8d3c", "#6baed6"]
DETECTIONS_READ = 1000


def rules_findings() -> None:
    """Open detections by model and severity, and detections opened per day over the last 30 days."""
    try:
        recent = fetch("detections", limit=DETECTIONS_READ)
    except ApiError as error:
        if error.status == 403:
            return  # a role that reads no detections (a marketer) sees the fleet's counts only
        stop_with(error)
    items = recent.get("items") or []
    st.subheader("What the rules found")
    if not items:
        st.info("The rules have found nothing yet.", icon=":material/notifications_off:")
        return
    found = pd.DataFrame([{"model": d.get("model") or "?", "severity": d.get("severity") or "info",
                           "status": d.get("status"), "opened": d.get("opened_at")} for d in items])
    found["opened"] = pd.to_datetime(found["opened"], utc=True, format="ISO8601")
    left, right = st.columns(2)
    open_now = found[found["status"] != "cleared"]
    with left:
        st.markdown(f"**Open detections by model and severity** ({len(open_now):,})")
        if open_now.empty:
            st.caption("None open.")
        else:
            st.altair_chart(alt.Chart(open_now).mark_bar().encode(
                x=alt.X("model:N", title=None, sort="-y", axis=alt.Axis(labelAngle=0)),
                y=alt.Y("count():Q", title="open detections", axis=alt.Axis(tickMinStep=1, format="d")),
                color=alt.Color("severity:N", scale=alt.Scale(domain=SEVERITIES, range=SEVERITY_COLORS),
                                legend=alt.Legend(orient="bottom", title=None)),
                tooltip=["model:N", "severity:N", "count():Q"],
            ).properties(height=220))
    since = pd.Timestamp.now(tz="UTC").normalize() - pd.Timedelta(days=29)
    last_month = found[found["opened"] >= since]
    tomorrow = (pd.Timestamp.now(tz="UTC").normalize() + pd.Timedelta(days=1)).isoformat()
    with right:
        st.markdown("**Detections opened per day, last 30 days**")
        st.altair_chart(alt.Chart(last_month).mark_bar().encode(
            x=alt.X("yearmonthdate(opened):T", title=None, scale=alt.Scale(domain=[since.isoformat(), tomorrow])),
            y=alt.Y("count():Q", title="opened", axis=alt.Axis(tickMinStep=1, format="d")),
            color=alt.Color("severity:N", scale=alt.Scale(domain=SEVERITIES, range=SEVERITY_COLORS), legend=None),
            tooltip=[alt.Tooltip("yearmonthdate(opened):T", title="day"), "severity:N", "count():Q"],
        ).properties(height=220))
    if len(items) >= DETECTIONS_READ:
        st.caption(f"From the newest {DETECTIONS_READ:,} detections.")


rules_findings()


# ---------------------------------------------------------------- what is coming


def local_day(value: str, zone: ZoneInfo) -> str:
    """A week's first day as the viewer reads it ('03 Dec')."""
    moment = parse_ts(value)
    return moment.astimezone(zone).strftime("%d %b") if moment else "?"


FORECAST_DAYS = 30
KIND_COLORS = ["#2b8cbe", "#e6550d"]


def demand_forecast() -> None:
    """The maintenance and trade-in windows the rules project to open in the next 30 days: a table per region
    and kind, and the count per week drawn per region."""
    try:
        forecast = fetch("fleet_forecast", days=FORECAST_DAYS)
    except ApiError as error:
        if error.status == 403:
            return
        stop_with(error)
    st.subheader(f"Coming in the next {FORECAST_DAYS} days")
    st.caption(FORECAST_EXPLAINED)
    rows = forecast.get("regions") or []
    if not rows:
        st.info(f"No maintenance or trade-in window is projected to open in the next {FORECAST_DAYS} days.",
                icon=":material/event_available:")
        return
    kinds = list(FORECAST_KINDS.values())
    per_region = pd.DataFrame(
        [{"Region": region_words(row.get("region")), "kind": forecast_kind_words(row["kind"]),
          "devices": row["devices"]} for row in rows]
    ).pivot_table(index="Region", columns="kind", values="devices", aggfunc="sum", fill_value=0, sort=False)
    per_region = per_region.reindex(columns=kinds, fill_value=0)
    per_region["Total"] = per_region.sum(axis=1)
    with st.container(horizontal=True):
        for kind in kinds:
            st.metric(f"{kind} windows, next {FORECAST_DAYS} days", f"{int(per_region[kind].sum()):,}", border=True)
    left, right = st.columns([2, 3])
    with left:
        st.dataframe(per_region.reset_index(), hide_index=True, width="stretch")
    weeks = forecast.get("week_starts") or []
    zone = viewer_zone()
    weekly = pd.DataFrame([
        {"region": region_words(row.get("region")), "kind": forecast_kind_words(row["kind"]),
         "week": local_day(weeks[index], zone), "order": index, "devices": count}
        for row in rows for index, count in enumerate(row.get("weeks") or []) if index < len(weeks)
    ])
    with right:
        st.markdown("**Windows opening per week, by region**")
        st.altair_chart(alt.Chart(weekly).mark_bar().encode(
            x=alt.X("week:N", title="week starting", sort=alt.SortField("order"),
                    axis=alt.Axis(labelAngle=0, labelOverlap=False)),
            xOffset=alt.XOffset("kind:N", sort=kinds),
            y=alt.Y("sum(devices):Q", title="appliances", axis=alt.Axis(tickMinStep=1, format="d")),
            color=alt.Color("kind:N", scale=alt.Scale(domain=kinds, range=KIND_COLORS),
                            legend=alt.Legend(orient="bottom", title=None)),
            row=alt.Row("region:N", title=None, header=alt.Header(labelAngle=0, labelAlign="left")),
            tooltip=["region:N", "kind:N", "week:N", alt.Tooltip("sum(devices):Q", title="appliances")],
        ).properties(height=90, width=420))
    left_out = left_out_words(forecast.get("rules") or [])
    if left_out:
        st.caption(left_out)


demand_forecast()
