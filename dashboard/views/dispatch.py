"""Dispatch board: open service orders and call tasks, most urgent first; open one to assign it, move it along,
complete it, or record a call."""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pandas as pd
import streamlit as st

from dashboard.client import ApiError
from dashboard.data import change, fetch, fetch_or_stop, show_api_error, stop_with
from dashboard.session import can, current_user
from dashboard.ui import (
    format_value,
    link_to,
    linked_id,
    local_time,
    metric_units,
    parse_ts,
    plain,
    remember_choice,
    show_explanation,
    telemetry_chart,
    time_ago,
    time_left,
    viewer_zone,
)
from dashboard.words import duration_words, metric_words, span_seconds, unit_words

# The queue reads itself again this often; the cache's ttl (15 s) is shorter, so each refresh sees the API anew.
REFRESH_EVERY = dt.timedelta(seconds=30)
QUEUE_LIMIT = 500
PRIORITIES = ["urgent", "high", "normal", "low"]
ALL_REGIONS, ALL_SKILLS, ALL_PRIORITIES = "all regions", "all skills", "all priorities"
SLA_WORDS = {"overdue": "overdue", "due_soon": "due soon", "ok": "ok", "met": "met", "missed": "missed"}
# Marks drawn as cell colours, not emoji: they read the same in every browser and font.
SLA_CELL_STYLES = {
    "overdue": "background-color: #fde2e1; color: #b42318; font-weight: 600",
    "due soon": "background-color: #fef0c7; color: #93370d; font-weight: 600",
}
SLA_COLORS = {"overdue": "red", "due_soon": "orange", "ok": "green", "met": "green", "missed": "red"}
PRIORITY_COLORS = {"urgent": "red", "high": "orange", "normal": "blue", "low": "gray"}
# Where an order may go is the API's answer (allowed_transitions); these are only the buttons' words.
MOVES = {
    "scheduled": ("Mark scheduled", ":material/event:", "A visit window is agreed with the customer."),
    "assigned": ("Back to assigned", ":material/engineering:", "The technician has it, not yet started."),
    "in_progress": ("Start work", ":material/construction:", "The technician is at it."),
    "cancelled": ("Cancel order", ":material/cancel:", "Nothing will be done; the order closes."),
}
# How far either side of the opening the telemetry is drawn, and the bucket that keeps ~150 points a line.
AROUND = {"1 h": (dt.timedelta(hours=1), "1m"), "6 h": (dt.timedelta(hours=6), "5m"),
          "24 h": (dt.timedelta(hours=24), "15m")}
TELEMETRY_LIMIT = 5000
VISIT_LENGTHS = {"1 h": 1, "2 h": 2, "3 h": 3, "4 h": 4}
CALL_OUTCOMES = {
    "reached": ("Reached", ":material/call:", "Spoke with the customer; the call is done."),
    "no_answer": ("No answer", ":material/phone_missed:", "Nobody answered; it comes back in 2 h."),
    "declined": ("Declined", ":material/phone_disabled:", "The customer wants no visit; the call is done."),
}
NO_RATING = "no rating"
# What the last change did, shown after the rerun that reads the new state.
DONE_KEY = "dispatch_done"


def now_utc() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def read_or_none(method: str, *args: Any, **kwargs: Any) -> tuple[Any, str | None]:
    """A read that the token's role may be refused (403): the answer, or None and why it is missing."""
    try:
        return fetch(method, *args, **kwargs), None
    except ApiError as error:
        if error.status == 403:
            return None, error.detail or "your role may not see this"
        stop_with(error)


def by_urgency(orders: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Least time left first (the most overdue at the top); orders without an SLA clock last."""
    return sorted(orders, key=lambda o: (o.get("time_left_s") is None, o.get("time_left_s") or 0, o.get("id")))


def call_due_text(task: dict[str, Any], now: dt.datetime) -> str:
    """'due now (for 20 min)' once a call may be made, else 'in 3 h 10 min'."""
    due = parse_ts(task.get("due_at"))
    if due is None:
        return "–"
    seconds = (due - now).total_seconds()
    if seconds > 0:
        return "in " + time_left(seconds).removesuffix(" left")
    waiting = time_left(seconds).removeprefix("overdue by ")
    return "due now" if -seconds < 60 else f"due now (for {waiting})"


def technician_label(technicians: dict[int, dict[str, Any]], technician_id: Any) -> str:
    if technician_id is None:
        return "–"
    technician = technicians.get(int(technician_id))
    if technician:
        return str(technician["name"])
    signed_in = current_user()
    # A technician reads no technician list, but is told their own name when signing in (/whoami).
    if signed_in is not None and signed_in.technician_id is not None and int(technician_id) == signed_in.technician_id:
        return signed_in.name
    if signed_in is not None and signed_in.role == "technician":
        return "you"  # the API answers a technician only their own orders
    return f"technician #{technician_id}"


# The pickers' labels name only what never changes (id, device, reason, person): the browser sends back the
# label of the chosen option, and a label that changed since (a minute less left, a new window) no longer
# matches, so Streamlit would fall back to the first option under the dispatcher's hands.


def order_label(order: dict[str, Any]) -> str:
    return f"#{order.get('id')} · {order.get('device_id')} · {order.get('reason')}"


def call_label(task: dict[str, Any]) -> str:
    return f"#{task.get('id')} · {task.get('customer_name') or 'no name'} · {task.get('device_id')}"


def marked(table: pd.DataFrame, columns: list[str], styles: dict[str, str]) -> Any:
    """The table with the cells of `columns` coloured by the row's mark (the first column's word)."""
    def row_style(row: pd.Series) -> list[str]:
        style = styles.get(str(row.iloc[0]), "")
        return [style if name in columns else "" for name in row.index]

    return table.style.apply(row_style, axis=1)


def done(message: str) -> None:
    """Keep what the change did for the next run, and run again so everything reads the new state."""
    st.session_state[DONE_KEY] = message
    st.rerun()


# ---------------------------------------------------------------- the queue


user = current_user()
technician_view = user is not None and user.role == "technician"
st.title("My orders" if technician_view else "Dispatch board")
if technician_view:
    st.caption("The orders assigned to you, most urgent first.")
if message := st.session_state.pop(DONE_KEY, None):
    st.success(message, icon=":material/check_circle:")

zone = viewer_zone()
technician_list, technicians_refused = (read_or_none("technicians", limit=1000) if can("assign_orders")
                                        else (None, None))
technicians: dict[int, dict[str, Any]] = {t["id"]: t for t in (technician_list or {}).get("items", [])}
every_open = fetch_or_stop("service_orders", status="open", limit=QUEUE_LIMIT).get("items", [])
regions = sorted({str(o["region"]) for o in every_open if o.get("region")}
                 | {str(t["region"]) for t in technicians.values() if t.get("region")})
skills = sorted({str(o["skill"]) for o in every_open if o.get("skill")}
                | {str(s) for t in technicians.values() for s in t.get("skills") or []})

with st.container(horizontal=True, vertical_alignment="bottom"):
    # A technician's orders are their own: regions and skills are the dispatcher's way through the whole queue.
    region = ALL_REGIONS if technician_view else st.selectbox("Region", [ALL_REGIONS, *regions], width=180)
    skill = ALL_SKILLS if technician_view else st.selectbox("Skill", [ALL_SKILLS, *skills], width=180)
    priority = st.selectbox("Priority", [ALL_PRIORITIES, *PRIORITIES], width=180)
    overdue_only = st.toggle("Overdue only")

chosen = {
    "region": None if region == ALL_REGIONS else region, "skill": None if skill == ALL_SKILLS else skill,
    "priority": None if priority == ALL_PRIORITIES else priority, "overdue": "true" if overdue_only else None,
}
# Only the filters chosen: with none, the queue is the same request as every_open above, and the cache answers it
# (each board read is 500 orders; the API would otherwise be asked twice for the same list on every render).
order_filters = {"status": "open", "limit": QUEUE_LIMIT, **{key: value for key, value in chosen.items() if value}}
narrowed_by_order = skill != ALL_SKILLS or priority != ALL_PRIORITIES or overdue_only


def read_queue() -> tuple[dict[str, Any], list[dict[str, Any]], str | None]:
    """The filtered open orders (most urgent first) and the open calls that go with them."""
    listing = fetch_or_stop("service_orders", **order_filters)
    orders = by_urgency(listing.get("items", []))
    calls, refused = read_or_none("call_tasks", status="open", region=order_filters.get("region"), limit=QUEUE_LIMIT)
    tasks: list[dict[str, Any]] = (calls or {}).get("items", [])
    if narrowed_by_order:
        # Skill, priority and overdue are an order's; a call goes with them through its order, and a call
        # about no order is not among what these filters ask for.
        shown = {o["id"] for o in orders}
        tasks = [t for t in tasks if t.get("order_id") in shown]
    tasks.sort(key=lambda t: (parse_ts(t.get("due_at")) or now_utc(), t.get("id")))
    return {**listing, "items": orders}, tasks, refused


@st.fragment(run_every=REFRESH_EVERY)
def show_queue() -> None:
    """The metrics and both lists; they read themselves again every REFRESH_EVERY, without touching the forms
    below (a refresh never throws away what someone is typing)."""
    listing, tasks, calls_refused = read_queue()
    orders = listing["items"]
    now = now_utc()
    calls_due = sum(1 for t in tasks if (parse_ts(t.get("due_at")) or now) <= now)
    with st.container(horizontal=True):
        st.metric("Open orders", f"{listing.get('total', len(orders)):,}", border=True)
        st.metric("Overdue", sum(1 for o in orders if o.get("sla_state") == "overdue"), border=True,
                  help="Past their SLA due time; the engine raises their priority every few hours.")
        st.metric("Due soon", sum(1 for o in orders if o.get("sla_state") == "due_soon"), border=True,
                  help="Less than a quarter of their SLA (or 4 h) left.")
        if not technician_view:
            st.metric("Unassigned", sum(1 for o in orders if o.get("technician_id") is None), border=True)
            st.metric("Calls due now", "–" if calls_refused else calls_due, border=True)
    st.caption(f"Read at {local_time(now, zone)} ({zone.key}); refreshes by itself every "
               f"{int(REFRESH_EVERY.total_seconds())} s.")

    st.subheader("Orders")
    if not orders:
        if order_filters.get("region") or narrowed_by_order:
            st.info("No open order matches these filters.")
        elif technician_view:
            st.info("No order is assigned to you yet; a dispatcher assigns orders from the dispatch board.")
        else:
            st.info("No open orders: nothing waits for a technician.")
    else:
        # The due time sits beside the time left, not at the far right where a narrow window cuts it off.
        table = pd.DataFrame([
            {"SLA": SLA_WORDS.get(str(o.get("sla_state")), o.get("sla_state")),
             "time left": time_left(o.get("time_left_s")), "due": local_time(o.get("sla_due_at"), zone),
             "order": f"#{o.get('id')}", "priority": o.get("priority"),
             "status": str(o.get("status") or "").replace("_", " "), "reason": o.get("reason"),
             "device": o.get("device_id"), "customer": o.get("customer_name") or "–",
             "technician": technician_label(technicians, o.get("technician_id")), "region": o.get("region"),
             "skill": o.get("skill")}
            for o in orders
        ])
        st.dataframe(marked(table, ["SLA", "time left"], SLA_CELL_STYLES), hide_index=True,
                     column_config={"reason": st.column_config.TextColumn(width="medium")})
        if listing.get("total", len(orders)) > len(orders):
            st.caption(f"The {len(orders)} most urgent of {listing['total']:,}.")

    if technician_view:
        return  # dispatchers make the calls; a technician could not act on the list
    st.subheader("Calls to make")
    if calls_refused:
        st.caption(f"Call tasks are not shown: {calls_refused}.")
    elif not tasks:
        st.info("No open calls.")
    else:
        calls = pd.DataFrame([
            {"due": call_due_text(t, now), "due at": local_time(t.get("due_at"), zone), "call": f"#{t.get('id')}",
             "customer": t.get("customer_name") or "–", "phone": t.get("phone") or "–", "reason": t.get("reason"),
             "device": t.get("device_id"), "order": f"#{t['order_id']}" if t.get("order_id") is not None else "–",
             "attempts": t.get("attempts")}
            for t in tasks
        ])
        # A call that may be made now is marked like an order due soon: it is waiting on us.
        now_style = SLA_CELL_STYLES["due soon"]
        st.dataframe(calls.style.apply(lambda row: [now_style if row["due"].startswith("due now") and name == "due"
                                                    else "" for name in row.index], axis=1),
                     hide_index=True, column_config={"reason": st.column_config.TextColumn(width="medium")})


show_queue()
# The work area below reads the same (cached) answers as the queue did in this run.
queue, open_calls, calls_refused = read_queue()
orders: list[dict[str, Any]] = queue["items"]


# ---------------------------------------------------------------- one order


def telemetry_around(order: dict[str, Any], models: dict[str, dict[str, Any]]) -> None:
    """The device's readings either side of the order's opening, one small chart per metric (their units and
    scales differ too much to share an axis), a dashed line where the order opened."""
    opened = parse_ts(order.get("opened_at"))
    device_id = str(order.get("device_id"))
    if opened is None:
        return
    choice = st.segmented_control("Either side of the opening", list(AROUND), default="6 h", required=True,
                                  key=f"around_{order['id']}") or "6 h"
    span, bucket = AROUND[choice]
    # Rounded to the minute so that reruns within the cache ttl ask the same question.
    until = min(opened + span, now_utc()).replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
    since = (opened - span).replace(second=0, microsecond=0)
    try:
        device = fetch("device", device_id)
        answer = fetch("telemetry", device_id, since=since.isoformat(), until=until.isoformat(), bucket=bucket,
                       limit=TELEMETRY_LIMIT)
    except ApiError as error:
        if error.status == 404:
            st.caption(f"There is no device {device_id} to read telemetry from.")
            return
        show_api_error(error)
        return
    specs: dict[str, dict[str, Any]] = (models.get(str(device.get("model"))) or {}).get("metrics") or {}
    points = pd.DataFrame(answer.get("items") or [], columns=["ts", "metric", "value"])
    points = points[pd.to_numeric(points["value"], errors="coerce").notna()]
    if points.empty:
        st.caption(f"{device_id} sent no readings between {local_time(since, zone)} and {local_time(until, zone)}.")
        return
    # The browser draws times in its own zone, the one the rest of the page uses (viewer_zone).
    points["ts"] = pd.to_datetime(points["ts"], utc=True, format="ISO8601")
    points["value"] = points["value"].astype(float)
    metrics = [m for m in specs if m in set(points["metric"])] + sorted(set(points["metric"]) - set(specs))
    columns = st.columns(3)
    opening = pd.DataFrame({"ts": [pd.Timestamp(opened)]})
    for position, metric in enumerate(metrics):
        unit = unit_words((specs.get(metric) or {}).get("unit"))
        line = points[points["metric"] == metric].sort_values("ts")[["ts", "value"]]
        # The whole window, so the opening sits where it happened even when readings are sparse.
        chart = telemetry_chart(line, unit=unit, title=metric_words(metric) + (f" ({unit})" if unit else ""),
                                domain=(since, until), height=170, marks=opening)
        with columns[position % 3]:
            st.altair_chart(chart)
    st.caption(f"Averages per {duration_words(span_seconds(bucket) or 0).removeprefix('1 ')}, "
               f"{local_time(since, zone)} to {local_time(until, zone)}; the dashed red line is when the order "
               "opened.")


def window_text(start: str | None, end: str | None) -> str:
    """'Tue 01 Dec 09:00 to 11:00' in the viewer's zone; 'none free' without a window."""
    if not start or not end:
        return "none free"
    first, last = local_time(start, zone), local_time(end, zone)
    return f"{first} to {last[-5:] if first[:10] == last[:10] else last}"


def assign_controls(order: dict[str, Any]) -> None:
    """The proposed technicians with why, and the buttons that assign one: with the proposal's window, the soonest
    free one, or a window chosen here."""
    order_id = order["id"]
    proposals, refused = read_or_none("order_proposals", order_id)
    if refused:
        st.caption(f"No proposals: {refused}.")
        return
    if not proposals:
        st.warning(f"No active technician has the skill {order.get('skill')}.", icon=":material/person_off:")
        return
    st.dataframe(pd.DataFrame([
        # Region, load and skill are in the API's why, in words; the table keeps to who, when and why.
        {"technician": p.get("name"),
         f"soonest window ({zone.key})": window_text(p.get("window_start"), p.get("window_end")),
         "why": p.get("reason")}
        for p in proposals
    ]), hide_index=True, column_config={"why": st.column_config.TextColumn(width="large")})
    if order.get("status") not in ("new", "scheduled", "assigned"):
        st.caption(f"Only new, scheduled or assigned orders are assigned; this one is {order.get('status')}.")
        return
    if order.get("technician_id") is not None:
        st.caption(f"Assigned to {technician_label(technicians, order['technician_id'])}, visit "
                   f"{window_text(order.get('appointment_start'), order.get('appointment_end'))}; assigning again "
                   "moves the visit.")
    by_id = {p["technician_id"]: p for p in proposals}
    chosen = st.selectbox(
        "Technician", list(by_id), key=f"technician_{order_id}",
        format_func=lambda tid: f"{by_id[tid]['name']} ({by_id[tid]['region']})",
    )
    proposal = by_id[chosen]
    has_window = bool(proposal.get("window_start") and proposal.get("window_end"))
    st.caption(f"Soonest window: {window_text(proposal.get('window_start'), proposal.get('window_end'))} "
               f"({zone.key}).")
    with st.container(horizontal=True):
        if st.button("Assign with this window", type="primary", icon=":material/event_available:",
                     key=f"assign_window_{order_id}", disabled=not has_window,
                     help=f"{local_time(proposal.get('window_start'), zone)} to "
                          f"{local_time(proposal.get('window_end'), zone)}" if has_window else "No free window."):
            assign(order, chosen, proposal.get("window_start"), proposal.get("window_end"))
        if st.button("Assign, soonest free window", icon=":material/bolt:", key=f"assign_soonest_{order_id}",
                     help="The API books the soonest window free in the technician's calendar now."):
            assign(order, chosen, None, None)
    with st.expander("Book another window"):
        home = technicians.get(chosen, {}).get("timezone") or "UTC"
        try:
            their_zone = ZoneInfo(home)
        except (ZoneInfoNotFoundError, ValueError):
            their_zone = ZoneInfo("UTC")
        st.caption(f"In {proposal.get('name')}'s time zone, {their_zone.key}.")
        tomorrow = (now_utc().astimezone(their_zone) + dt.timedelta(days=1)).date()
        with st.form(f"window_{order_id}", border=False), st.container(horizontal=True, vertical_alignment="bottom"):
            day = st.date_input("Day", tomorrow, min_value=now_utc().astimezone(their_zone).date(), width=160)
            start_time = st.time_input("From", dt.time(9, 0), step=dt.timedelta(minutes=30), width=120)
            length = st.selectbox("Length", list(VISIT_LENGTHS), index=1, width=100)
            if st.form_submit_button("Book this window", icon=":material/event:"):
                start = dt.datetime.combine(day, start_time, tzinfo=their_zone)
                end = start + dt.timedelta(hours=VISIT_LENGTHS[length])
                assign(order, chosen, start.isoformat(), end.isoformat())


def assign(order: dict[str, Any], technician_id: int, start: str | None, end: str | None) -> None:
    try:
        result = change("assign_order", order["id"], technician_id, start=start, end=end)
    except ApiError as error:
        show_api_error(error)
        return
    done(f"Order #{order['id']} is assigned to {technician_label(technicians, technician_id)}, visit "
         f"{window_text(result.get('appointment_start'), result.get('appointment_end'))}.")


def lifecycle_controls(order: dict[str, Any]) -> None:
    """One button per transition the API allows now; completing has its own form below."""
    order_id = order["id"]
    allowed = [s for s in order.get("allowed_transitions") or [] if s != "completed"]
    if order.get("technician_id") is None and "assigned" in allowed:
        allowed.remove("assigned")  # without a technician, assigning is the form above
    if not allowed:
        return
    note = st.text_input("Note (optional)", key=f"note_{order_id}", placeholder="why, for the history",
                         max_chars=2000)
    with st.container(horizontal=True):
        for status in allowed:
            label, icon, why = MOVES.get(status, (status.replace("_", " ").capitalize(), None, None))
            if st.button(label, icon=icon, help=why, key=f"move_{order_id}_{status}"):
                try:
                    change("change_order_status", order_id, status, note=note.strip() or None)
                except ApiError as error:
                    show_api_error(error)
                else:
                    done(f"Order #{order_id} is now {status.replace('_', ' ')}.")


def completion_form(order: dict[str, Any]) -> None:
    order_id = order["id"]
    with st.form(f"complete_{order_id}"):
        outcome = st.text_area("Outcome", placeholder="what was found and done", max_chars=2000, height=80)
        parts = st.text_input("Parts used", placeholder="comma separated, e.g. fan motor, grease filter")
        with st.container(horizontal=True, vertical_alignment="bottom"):
            cost = st.number_input("Cost", min_value=0.0, max_value=1_000_000.0, step=1.0, format="%.2f",
                                   width=160)
            paid = st.checkbox("Paid by the customer")
            rating = st.selectbox("Customer's rating", [NO_RATING, 5, 4, 3, 2, 1], width=160)
        if st.form_submit_button("Complete order", type="primary", icon=":material/task_alt:"):
            if not outcome.strip():
                st.error("Say what was done: the outcome is required.")
                return
            try:
                result = change("complete_order", order_id, outcome=outcome.strip(),
                                parts=[p.strip() for p in parts.split(",") if p.strip()], cost=f"{cost:.2f}",
                                paid=paid, rating=None if rating == NO_RATING else int(rating))
            except ApiError as error:
                show_api_error(error)
            else:
                verification = result.get("verification")
                then = (" The telemetry will confirm the fault cleared within a day, or the order reopens."
                        if verification == "pending" else "")
                done(f"Order #{order_id} is completed.{then}")


# Details of a history entry that are for machines (keys a retry finds itself by) or said better by another key.
HIDDEN_DETAILS = {"action_key", "technician_id", "order_id"}


def history_detail(detail: dict[str, Any]) -> str:
    """A history entry's detail in words: a window as times, instants in the viewer's zone, no machine keys."""
    words = []
    for key, value in detail.items():
        if key in HIDDEN_DETAILS or value in (None, "", [], {}):
            continue
        if key == "window" and isinstance(value, list) and len(value) == 2:
            text = window_text(value[0], value[1])
        elif isinstance(value, str) and parse_ts(value) is not None and "T" in value:
            text = local_time(value, zone)
        elif key.endswith("_id"):
            key, text = key.removesuffix("_id"), f"#{value}"
        else:
            text = format_value(value)
        words.append(f"{key.replace('_', ' ')} {text}")
    return " · ".join(words)


def history_table(order: dict[str, Any]) -> None:
    history = order.get("history") or []
    if not history:
        return
    st.dataframe(pd.DataFrame([
        {"when": local_time(h.get("at"), zone),
         "who": (str(h.get("actor")) if h.get("actor") == h.get("actor_role") or not h.get("actor_role")
                 else f"{h.get('actor')} ({h.get('actor_role')})"),
         "change": h.get("change"),
         "status": f"{h.get('from_status') or '–'} → {h.get('to_status')}" if h.get("to_status") else "",
         "detail": history_detail(h.get("detail") or {})}
        for h in history
    ]), hide_index=True, column_config={"detail": st.column_config.TextColumn(width="large")})


def show_order(order_id: str) -> None:
    try:
        order = fetch("service_order", order_id)
    except ApiError as error:
        if error.status in (404, 422):
            st.warning(f"There is no service order #{order_id}.")
            return
        stop_with(error)
    models = {m["code"]: m for m in fetch_or_stop("models").get("items", [])}
    state = str(order.get("sla_state"))

    st.header(f"Order #{order['id']} · {order.get('reason')}")
    with st.container(horizontal=True):
        st.badge(SLA_WORDS.get(state, state), color=SLA_COLORS.get(state, "gray"),
                 icon=":material/timer:")
        st.badge(str(order.get("priority")), color=PRIORITY_COLORS.get(str(order.get("priority")), "gray"))
        st.badge(str(order.get("status")).replace("_", " "), color="violet")
        st.badge(f"{order.get('type')} · {order.get('skill')}", color="gray", icon=":material/build:")
        if order.get("region"):
            st.badge(str(order["region"]), color="gray", icon=":material/location_on:")
        if order.get("escalations"):
            st.badge(f"escalated {order['escalations']}×", color="red", icon=":material/priority_high:")
        if order.get("reopened"):
            st.badge(f"reopened {order['reopened']}×", color="orange", icon=":material/replay:")

    with st.container(horizontal=True):
        st.metric("SLA", time_left(order.get("time_left_s")), border=True,
                  help=f"Due {local_time(order.get('sla_due_at'), zone)} ({zone.key}).")
        st.metric("Opened", time_ago(order.get("opened_at")), border=True,
                  help=f"{local_time(order.get('opened_at'), zone)}, from {order.get('source')}.")
        st.metric("Technician", technician_label(technicians, order.get("technician_id")), border=True)
        visit = order.get("appointment_start")
        st.metric("Visit", local_time(visit, zone) if visit else "not booked", border=True,
                  help=f"until {local_time(order.get('appointment_end'), zone)}" if visit else None)

    left, right = st.columns(2)
    with left:
        st.markdown(f"**Device** {plain(order.get('device_id'))} · **Reason** {plain(order.get('reason'))}")
        link_to("device", label=f"Device {order.get('device_id')}", icon=":material/kitchen:",
                     query_params={"device": str(order.get("device_id"))})
    with right:
        if order.get("customer_id") is None:
            st.markdown("**Owner** none registered")
        else:
            st.markdown(f"**Owner** {plain(order.get('customer_name') or 'no name')} · "
                        f"**Phone** {plain(order.get('customer_phone') or 'none on record')}")
            link_to("customers", label=f"{order.get('customer_name') or 'Customer'}'s page",
                         icon=":material/person:",
                         query_params={"customer": str(order["customer_id"])})

    st.subheader("Why it opened")
    if order.get("explanation"):
        show_explanation(order["explanation"], metric_units(models, order["explanation"].get("model")))
        with st.container(horizontal=True):
            for detection_id in order.get("detection_ids") or []:
                link_to("detections", label=f"Detection #{detection_id}",
                             icon=":material/notification_important:", query_params={"detection": str(detection_id)})
    else:
        st.caption(f"Opened by hand ({order.get('source')}): {plain(order.get('reason'))}")

    st.subheader("Telemetry around the opening")
    telemetry_around(order, models)

    if order.get("status") not in ("completed", "cancelled"):
        if can("assign_orders"):
            st.subheader("Technician")
            assign_controls(order)
        if can("move_orders"):
            st.subheader("Move it along")
            lifecycle_controls(order)
        if not can("move_orders"):
            st.caption("Your role reads orders; dispatchers and technicians change them.")
        elif "completed" in (order.get("allowed_transitions") or []):
            st.subheader("Complete the visit")
            completion_form(order)
        elif not order.get("allowed_transitions"):
            st.caption("The API allows no change of this order now.")

    st.subheader("History")
    history_table(order)


st.divider()
linked = linked_id("order")
by_id = {str(o["id"]): o for o in orders}
labels = {key: order_label(o) for key, o in by_id.items()}
if linked and linked not in labels:
    # A link or bookmark names one order: open it even when the filters (or its status) would hide it.
    labels = {linked: f"#{linked}", **labels}
if labels:
    ids = list(labels)
    chosen_order = st.selectbox("Open an order", ids, index=ids.index(linked) if linked in ids else 0,
                                format_func=labels.__getitem__, key="order_choice")
    remember_choice("order", chosen_order)
    show_order(chosen_order)


# ---------------------------------------------------------------- one call


def record_call(task: dict[str, Any], outcome: str, *, retry_at: str | None = None, notes: str = "") -> None:
    try:
        result = change("record_call_outcome", task["id"], outcome, retry_at=retry_at, notes=notes.strip() or None)
    except ApiError as error:
        show_api_error(error)
        return
    then = (f"; call again {local_time(result.get('due_at'), zone)}" if result.get("status") == "open"
            else "; the call is done")
    done(f"Call #{task['id']} to {task.get('customer_name') or 'the customer'}: "
         f"{outcome.replace('_', ' ')}{then}.")


def show_call(task: dict[str, Any]) -> None:
    task_id = task["id"]
    now = now_utc()
    with st.container(border=True):
        st.markdown(f"### Call {plain(task.get('customer_name') or 'the owner')} · "
                    f"{plain(task.get('phone') or 'no phone on record')}")
        with st.container(horizontal=True):
            due = parse_ts(task.get("due_at"))
            st.badge(call_due_text(task, now), color="red" if due and due <= now else "gray",
                     icon=":material/schedule:")
            st.badge(f"attempt {int(task.get('attempts') or 0) + 1}", color="gray")
            if task.get("order_id") is not None:
                st.badge(f"order #{task['order_id']}", color="violet", icon=":material/build:")
        st.markdown(f"**Why** {plain(task.get('reason'))}  \n**Due** {local_time(task.get('due_at'), zone)} "
                    f"({zone.key}) · **Contact policy** {plain(task.get('policy_reason'))}")
        st.markdown("**Script**")
        st.info(task.get("script") or "No script.", icon=":material/record_voice_over:")
        if task.get("notes"):
            st.caption(f"Notes so far: {plain(task['notes'])}")
        notes = st.text_input("Notes (optional)", key=f"call_notes_{task_id}", max_chars=2000,
                              placeholder="what the customer said")
        with st.container(horizontal=True, vertical_alignment="bottom"):
            for outcome, (label, icon, why) in CALL_OUTCOMES.items():
                if st.button(label, icon=icon, help=why, key=f"call_{task_id}_{outcome}",
                             type="primary" if outcome == "reached" else "secondary"):
                    record_call(task, outcome, notes=notes)
        with st.container(horizontal=True, vertical_alignment="bottom"):
            local_now = now.astimezone(zone)
            day = st.date_input("Call back on", local_now.date(), min_value=local_now.date(),
                                key=f"call_back_day_{task_id}", width=160)
            at = st.time_input("at", (local_now + dt.timedelta(hours=2)).time().replace(second=0, microsecond=0),
                               step=dt.timedelta(minutes=15), key=f"call_back_time_{task_id}", width=120)
            if st.button("Call back then", icon=":material/phone_callback:", key=f"call_{task_id}_call_back",
                         help=f"The customer asked to be called at this time ({zone.key})."):
                retry = dt.datetime.combine(day, at, tzinfo=zone)
                record_call(task, "call_back", retry_at=retry.isoformat(), notes=notes)


def work_a_call() -> None:
    """The call picker and the call's script and outcome buttons (dispatchers make the calls)."""
    st.divider()
    st.subheader("Work a call")
    if calls_refused:
        st.caption(f"Call tasks are not shown: {calls_refused}.")
    elif not open_calls:
        st.caption("No open calls for these filters.")
    else:
        calls_by_id = {str(t["id"]): t for t in open_calls}
        chosen_call = st.selectbox("Open a call", list(calls_by_id), key="call_choice",
                                   format_func=lambda key: call_label(calls_by_id[key]))
        show_call(calls_by_id[chosen_call])


if can("work_calls"):
    work_a_call()

if not calls_refused and not technician_view:
    blocked, _ = read_or_none("call_tasks", status="blocked", region=order_filters.get("region"), limit=QUEUE_LIMIT)
    held = (blocked or {}).get("items", [])
    if held:
        with st.expander(f"{len(held)} call{'s' if len(held) != 1 else ''} held back by the contact policy"):
            st.dataframe(pd.DataFrame([
                {"customer": t.get("customer_name"), "device": t.get("device_id"), "order": t.get("order_id"),
                 "why not": t.get("policy_reason"), "reason": t.get("reason")}
                for t in held
            ]), hide_index=True, column_config={"why not": st.column_config.TextColumn(width="large")})

if technicians_refused:
    st.caption(f"Technicians are not shown by name: {technicians_refused}.")
