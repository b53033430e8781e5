"""Offers and campaigns: what each template and rule issued, delivered, redeemed and let expire, what it earned
against the holdout (uplift with its interval), what the contact policy held back and why; templates, which
marketers change."""

from __future__ import annotations

import datetime as dt
from typing import Any

import altair as alt
import pandas as pd
import streamlit as st

from dashboard.client import ApiError
from dashboard.data import change, fetch_or_stop, show_api_error
from dashboard.session import can
from dashboard.ui import local_time, plain, time_ago, viewer_zone
from dashboard.words import duration_words, plural

RANGES = {"last 30 days": 30, "last 90 days": 90, "last year": 365, "all time": None}
GROUPINGS = {"template": "Template", "rule": "Rule", "segment": "Segment"}
# Every offer made is `offered`; the contact policy holds it (waiting) or blocks it (never sent), or it is issued to the
# customer, then delivered, redeemed or let expire.
OUTCOMES = ["offered", "held", "blocked", "issued", "delivered", "redeemed", "expired"]
OUTCOME_COLORS = ["#c6dbef", "#fdae6b", "#d62728", "#9ecae1", "#4292c6", "#2ca02c", "#bdbdbd"]
OUTCOME_HELP = {
    "offered": "Eligible customers an offer was made for (the random holdout not counted).",
    "held": "Waiting for the contact policy: service first, quiet hours or a frequency cap.",
    "blocked": "Never sent: the customer has not consented to this purpose and channel.",
    "issued": "Let out by the contact policy to the customer: offered, less held and blocked.",
    "delivered": "The message reached the customer.",
    "redeemed": "The coupon was used.",
    "expired": "Issued and never used before it ran out.",
}
LIST_LIMIT = 200
STATUSES = ["held", "blocked", "issued", "delivered", "redeemed", "expired"]
ALL_STATUSES, ALL_TEMPLATES = "all statuses", "all templates"
# What the last template change did, shown after the rerun that reads the new state.
SAVED_KEY = "offers_saved"
# Fields the API answers with a template that are not part of what is sent back to change it.
READ_ONLY_FIELDS = {"id", "created_at", "updated_at"}


def value_text(template: dict[str, Any]) -> str:
    """'15% off' or '50.00 off' (an amount in the shop's currency)."""
    value = str(template.get("value"))
    value = value.removesuffix(".00") if template.get("value_kind") == "percent" else value
    return f"{value}% off" if template.get("value_kind") == "percent" else f"{value} off"


def share_text(share: Any) -> str:
    try:
        return f"{float(share):.0%}"
    except (TypeError, ValueError):
        return "–"


def outcomes(row: dict[str, Any]) -> dict[str, int]:
    """A report row's counts, one per OUTCOMES: `treated` is every offer made; issued is what the contact policy
    let out (offered, less held and blocked)."""
    offered = int(row.get("treated") or row.get("issued") or 0)
    held, blocked = int(row.get("held") or 0), int(row.get("blocked") or 0)
    return {"offered": offered, "held": held, "blocked": blocked, "issued": max(offered - held - blocked, 0),
            "delivered": int(row.get("delivered") or 0), "redeemed": int(row.get("redeemed") or 0),
            "expired": int(row.get("expired") or 0)}


def points(value: Any) -> float | None:
    """A share (0.031) in percentage points (3.1), for the uplift chart; None when the API has none."""
    return None if value is None else round(float(value) * 100, 2)


st.title("Offers and campaigns")
if message := st.session_state.pop(SAVED_KEY, None):
    st.success(message, icon=":material/check_circle:")

templates: list[dict[str, Any]] = fetch_or_stop("offer_templates", limit=1000).get("items", [])
by_code = {str(t["code"]): t for t in templates}


# ---------------------------------------------------------------- results


def campaign_results() -> None:
    """The report: counts per template, rule or segment as bars, uplift against the holdout with its interval."""
    with st.container(horizontal=True, vertical_alignment="bottom"):
        grouping = st.segmented_control("Per", list(GROUPINGS), default="template", required=True,
                                        format_func=GROUPINGS.__getitem__, key="report_grouping") or "template"
        span = st.selectbox("Issued in", list(RANGES), index=1, width=180, key="report_range")
    days = RANGES[span]
    # Whole days, so that reruns within the cache's ttl ask the same question.
    since = (dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
             - dt.timedelta(days=days)).isoformat() if days else None
    report = fetch_or_stop("offers_report", group_by=grouping, since=since)
    rows: list[dict[str, Any]] = report.get("rows") or []
    total: dict[str, Any] = report.get("total") or {}

    total_counts = outcomes(total)
    with st.container(horizontal=True):
        for outcome in OUTCOMES:
            st.metric(outcome.capitalize(), f"{total_counts[outcome]:,}", border=True, help=OUTCOME_HELP[outcome])
        st.metric("Revenue", f"{float(total.get('revenue') or 0):,.2f}", border=True,
                  help="Paid with redeemed coupons.")
        uplift = total.get("uplift")
        st.metric("Uplift", "–" if uplift is None else f"{float(uplift) * 100:+.1f} pts", border=True,
                  help="Conversion of the customers offered minus that of the random holdout, in percentage points.")
    if not rows:
        st.info(f"No offers issued {span if days else 'yet'}.", icon=":material/sell:")
        return

    left, right = st.columns(2)
    counts = pd.DataFrame([{"key": r["key"], "outcome": outcome, "offers": count}
                           for r in rows for outcome, count in outcomes(r).items()])
    with left:
        st.markdown(f"**What each {grouping} offered and what came of it**")
        # Horizontal bars: a long template code is a label on its own line, never dropped for want of room.
        st.altair_chart(alt.Chart(counts).mark_bar().encode(
            y=alt.Y("key:N", title=None, sort=[r["key"] for r in rows], axis=alt.Axis(labelLimit=240)),
            yOffset=alt.YOffset("outcome:N", sort=OUTCOMES),
            x=alt.X("offers:Q", title="offers", axis=alt.Axis(tickMinStep=1, format=",d")),
            # Four to a row: seven outcomes in one row run past a half-width column and lose the last ones.
            color=alt.Color("outcome:N", sort=OUTCOMES, scale=alt.Scale(domain=OUTCOMES, range=OUTCOME_COLORS),
                            legend=alt.Legend(orient="bottom", title=None, columns=4)),
            tooltip=[alt.Tooltip("key:N", title=grouping), "outcome:N", alt.Tooltip("offers:Q", format=",d")],
        ).properties(height=alt.Step(11)))
    uplifts = pd.DataFrame([{"key": r["key"], "uplift": points(r.get("uplift")), "low": points(r.get("uplift_low")),
                             "high": points(r.get("uplift_high")), "offered": int(r.get("treated") or 0),
                             "holdout": int(r.get("holdout") or 0)}
                            for r in rows if r.get("uplift") is not None])
    with right:
        confidence = share_text(report.get("confidence"))
        st.markdown(f"**Uplift against the holdout, with its {confidence} interval** (percentage points)")
        if uplifts.empty:
            st.caption("No uplift yet: a holdout needs customers kept out at random to compare with.")
        else:
            base = alt.Chart(uplifts).encode(y=alt.Y("key:N", title=None, sort=list(uplifts["key"])))
            st.altair_chart(alt.layer(
                base.mark_rule(strokeWidth=3, color="#4292c6").encode(
                    x=alt.X("low:Q", title="uplift (percentage points)"), x2="high:Q"),
                base.mark_point(filled=True, size=90, color="#08519c").encode(
                    x="uplift:Q", tooltip=["key:N", "uplift:Q", "low:Q", "high:Q", "offered:Q", "holdout:Q"]),
                alt.Chart(pd.DataFrame({"zero": [0]})).mark_rule(color="#d62728", strokeDash=[4, 3]).encode(
                    x="zero:Q"),
            ).properties(height=max(200, 50 * len(uplifts))))
            st.caption(f"An interval that stays right of the dashed line is an offer that works. "
                       f"{plain(report.get('method') or '')}")
    st.dataframe(pd.DataFrame([
        {grouping: r["key"], **outcomes(r), "held out": r.get("holdout"), "revenue": float(r.get("revenue") or 0),
         "conversion": share_text(r.get("conversion_treated")) if r.get("conversion_treated") is not None else "–",
         "holdout conversion": (share_text(r.get("conversion_holdout"))
                                if r.get("conversion_holdout") is not None else "–")}
        for r in rows
    ]), hide_index=True, column_config={"revenue": st.column_config.NumberColumn(format="%.2f")})


if can("read_offer_report"):
    st.subheader("Campaign results")
    campaign_results()


# ---------------------------------------------------------------- held back, and every offer


def held_back() -> None:
    """The offers the contact policy holds (service first, quiet hours, caps) or blocked (no consent), and why."""
    held = fetch_or_stop("offers", status="held", limit=LIST_LIMIT)
    blocked = fetch_or_stop("offers", status="blocked", limit=LIST_LIMIT)
    items = (held.get("items") or []) + (blocked.get("items") or [])
    with st.container(horizontal=True):
        st.metric("Held", f"{held.get('total', 0):,}", border=True,
                  help="Waiting: service comes first, quiet hours or a frequency cap; they go out when allowed.")
        st.metric("Blocked", f"{blocked.get('total', 0):,}", border=True,
                  help="Never sent: the customer has not consented to this purpose and channel.")
    if not items:
        st.caption("The contact policy holds nothing back.")
        return
    reasons = pd.DataFrame({"why": [o.get("status_reason") or "–" for o in items],
                            "status": [o.get("status") for o in items]})
    by_reason = reasons.groupby(["why", "status"]).size().reset_index(name="offers")
    st.altair_chart(alt.Chart(by_reason).mark_bar().encode(
        y=alt.Y("why:N", title=None, sort="-x", axis=alt.Axis(labelLimit=420)),
        x=alt.X("offers:Q", axis=alt.Axis(tickMinStep=1, format="d")),
        color=alt.Color("status:N", scale=alt.Scale(domain=["held", "blocked"], range=["#fdae6b", "#d62728"]),
                        legend=alt.Legend(orient="bottom", title=None)),
        tooltip=["why:N", "status:N", "offers:Q"],
    ).properties(height=alt.Step(32)))


st.subheader("What the contact policy held back")
held_back()

st.subheader("Offers")
with st.container(horizontal=True, vertical_alignment="bottom"):
    status = st.selectbox("Status", [ALL_STATUSES, *STATUSES], width=180, key="offer_status")
    template_choice = st.selectbox("Template", [ALL_TEMPLATES, *by_code], width=220, key="offer_template")
listing = fetch_or_stop("offers", status=None if status == ALL_STATUSES else status,
                        template=None if template_choice == ALL_TEMPLATES else template_choice, limit=LIST_LIMIT)
offers: list[dict[str, Any]] = listing.get("items") or []
zone = viewer_zone()
if not offers:
    st.info("No offer matches these filters.")
else:
    st.dataframe(pd.DataFrame([
        # issued_at is when the offer was made, whatever the contact policy did with it since.
        {"offered": local_time(o.get("issued_at"), zone), "template": o.get("template"),
         "customer": f"#{o['customer_id']}" if o.get("customer_id") is not None else "–",
         "device": o.get("device_id") or "–", "status": o.get("status"), "why": o.get("status_reason"),
         "reason to the owner": o.get("reason"), "channel": o.get("channel") or "–",
         "expires": local_time(o.get("expires_at"), zone) if o.get("expires_at") else "–", "code": o.get("code")}
        for o in offers
    ]), hide_index=True, column_config={"why": st.column_config.TextColumn(width="medium"),
                                        "reason to the owner": st.column_config.TextColumn(width="medium")})
    if listing.get("total", len(offers)) > len(offers):
        st.caption(f"The newest {len(offers)} of {listing['total']:,}.")


# ---------------------------------------------------------------- templates


st.subheader("Templates")
if not templates:
    st.info("No offer templates yet.")
    st.stop()
st.dataframe(pd.DataFrame([
    {"code": t.get("code"), "name": t.get("name"), "category": t.get("category"), "value": value_text(t),
     "valid for": duration_words(int(t.get("validity_days") or 0) * 86400),
     "channels": ", ".join(t.get("channels") or []), "held out": share_text(t.get("holdout_share")),
     "active": bool(t.get("active")), "reason": t.get("reason")}
    for t in templates
]), hide_index=True, column_config={"active": st.column_config.CheckboxColumn("active"),
                                    "reason": st.column_config.TextColumn(width="large")})

if not can("edit_offer_templates"):
    st.caption("Templates are changed by marketers.")
    st.stop()


def save_template(code: str, changes: dict[str, Any]) -> None:
    template = {key: value for key, value in by_code[code].items() if key not in READ_ONLY_FIELDS}
    try:
        change("update_offer_template", code, {**template, **changes})
    except ApiError as error:
        if error.status == 422:
            st.error(f"Not saved: {error.detail}", icon=":material/edit_off:")
        else:
            show_api_error(error)
        return
    st.session_state[SAVED_KEY] = (f"Template {code} is saved; offers issued before keep the value and words they "
                                   "were issued with.")
    st.rerun()


code = st.selectbox("Change a template", list(by_code), key="template_choice",
                    format_func=lambda c: f"{c} · {by_code[c].get('name')}")
chosen = by_code[code]
with st.form(f"template_{code}"):
    name = st.text_input("Name", chosen.get("name") or "", max_chars=200)
    with st.container(horizontal=True, vertical_alignment="bottom"):
        value = st.number_input(f"Value ({'percent' if chosen.get('value_kind') == 'percent' else 'amount'})",
                                min_value=0.01, max_value=1_000_000.0, value=float(chosen.get("value") or 1),
                                step=1.0, format="%.2f", width=180)
        validity = st.number_input("Valid for (days)", min_value=1, max_value=3660,
                                   value=int(chosen.get("validity_days") or 30), width=160)
        holdout = st.slider("Held out at random", 0, 50, int(round(float(chosen.get("holdout_share") or 0) * 100)),
                            format="%d%%", width=260,
                            help="Eligible customers who get nothing, to measure what the offer adds.")
        active = st.checkbox("Active", bool(chosen.get("active")))
    subject = st.text_input("Subject", chosen.get("subject") or "", max_chars=200)
    reason = st.text_input("Reason (in the owner's words)", chosen.get("reason") or "", max_chars=300)
    message = st.text_area("Message", chosen.get("message") or "", max_chars=2000, height=100)
    st.caption("Subject, reason and message may name {name}, {appliance}, {age}, {value}, {expires}, {code}, "
               "{reason} and {reason_lower}.")
    if st.form_submit_button("Save template", type="primary", icon=":material/save:"):
        save_template(code, {"name": name, "value": f"{value:.2f}", "validity_days": int(validity),
                             "holdout_share": f"{holdout / 100:.2f}", "active": active, "subject": subject,
                             "reason": reason, "message": message})
st.caption(plural(len(templates), "template") + f"; {code} last changed {time_ago(chosen.get('updated_at'))}.")
