"""Small formatting helpers shared by the pages."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import altair as alt
import pandas as pd
import streamlit as st

from dashboard.client import ApiError
from dashboard.data import fetch
from dashboard.session import current_user, pages_for
from dashboard.words import reason_words, value_words, with_unit


def parse_ts(value: str | None) -> datetime | None:
    """An ISO 8601 timestamp from the API as an aware datetime, or None."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def time_ago(value: str | None, *, now: datetime | None = None) -> str:
    """'3 min ago' style text for a timestamp; 'never' when there is none."""
    moment = parse_ts(value)
    if moment is None:
        return "never"
    seconds = int(((now or datetime.now(UTC)) - moment).total_seconds())
    if seconds < 0:
        return "just now"
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return f"{seconds} s ago"


def seconds_until(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds from now to an instant the API sent (negative once it has passed), or None."""
    moment = parse_ts(value)
    return None if moment is None else (moment - (now or datetime.now(UTC))).total_seconds()


def format_value(value: Any, unit: str | None = None) -> str:
    """A metric value with its unit, rounded for reading."""
    if isinstance(value, bool) or value is None:
        return "–" if value is None else str(value)
    if isinstance(value, int | float):
        text = f"{value:,.2f}".rstrip("0").rstrip(".") if isinstance(value, float) else f"{value:,}"
    else:
        text = str(value)
    return f"{text} {unit}" if unit else text


def frame(items: list[dict[str, Any]], columns: list[str]) -> pd.DataFrame:
    """A DataFrame of just these columns, in order; ones the API did not send are left out."""
    df = pd.DataFrame(items)
    if df.empty:
        return pd.DataFrame(columns=columns)
    return df[[column for column in columns if column in df.columns]]


def linked_id(param: str) -> str | None:
    """The id a link or bookmark names in the URL, or None when the URL only echoes this page's choice."""
    value = st.query_params.get(param)
    # Pages write their current choice to the URL (so it can be shared); reading it back as a
    # link would pin that choice in the picker even after a new search.
    return value if value and value != st.session_state.get(f"shown_{param}") else None


def remember_choice(param: str, value: str) -> None:
    """Put the page's current choice in the URL, for sharing and for the browser's back button."""
    st.query_params[param] = value
    st.session_state[f"shown_{param}"] = value


def duration_text(seconds: float) -> str:
    """A span of time in its two largest units, for reading: '3 h 20 min', '2 d 4 h', '45 min', '30 s'."""
    seconds = int(abs(seconds))
    units = [(86400, "d"), (3600, "h"), (60, "min")]
    parts = []
    for size, unit in units:
        if seconds >= size:
            parts.append(f"{seconds // size} {unit}")
            seconds %= size
        elif parts:
            # Two units side by side only when they are neighbours: '2 d 4 h', never '2 d 5 min'.
            break
        if len(parts) == 2:
            break
    return " ".join(parts) if parts else f"{seconds} s"


def time_left(seconds: float | None) -> str:
    """'3 h 20 min left' before a due time, 'overdue by 2 h' after it, '–' when there is none (a closed order)."""
    if seconds is None:
        return "–"
    return f"{duration_text(seconds)} left" if seconds >= 0 else f"overdue by {duration_text(seconds)}"


def viewer_zone() -> ZoneInfo:
    """The time zone of the person's browser (times are shown and entered in it), else UTC."""
    name = st.context.timezone
    try:
        return ZoneInfo(name) if name else ZoneInfo("UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def local_time(value: str | datetime | None, zone: ZoneInfo) -> str:
    """'Tue 01 Dec 09:00' in `zone`; '–' for nothing."""
    moment = value if isinstance(value, datetime) else parse_ts(value)
    return moment.astimezone(zone).strftime("%a %d %b %H:%M") if moment else "–"


# ---------------------------------------------------------------- explanations (a detection's, an order's)

# Keys of a condition's explanation drawn on their own; any other key is a detail of the condition.
DRAWN_KEYS = {"condition", "kind", "met", "reason", "values", "conditions"}


def plain(text: Any) -> str:
    """Text from the API made safe for st.markdown: no stray emphasis, links, HTML or LaTeX."""
    return re.sub(r"([\\`*_\[\]<>$])", r"\\\1", str(text))


def reason_of(explanation: Any) -> str:
    """An explanation's reason in words ('6.9 years since purchase', not '2.52e+03d')."""
    return reason_words(str(explanation.get("reason") or "")) if isinstance(explanation, dict) else ""


def described(detail: Any, unit: str | None = None) -> str:
    """A condition's detail (a level, a window, a list of codes) as short text, spans and instants in words."""
    return value_words(detail, unit)


# Details of a condition that are levels of its metric, so they carry its unit.
LEVEL_KEYS = {"above", "below", "at_least", "at_most", "clear_above", "clear_below", "target", "level"}


def node_reason(node: dict[str, Any], units: dict[str, str]) -> str:
    """A condition's reason in words, with its metric's unit after the metric's values."""
    unit = units.get(str(node.get("metric") or ""))
    return with_unit(reason_words(str(node.get("reason") or "")), unit)


def show_condition(node: dict[str, Any], units: dict[str, str] | None = None) -> None:
    """One condition of an explanation: its kind, met or not, why, its details and values; then its children."""
    units = units or {}
    unit = units.get(str(node.get("metric") or ""))
    kind = node.get("condition") or node.get("kind") or "condition"
    verdict = ":green[met]" if node.get("met") else ":red[not met]"
    with st.container(border=True):
        st.markdown(f"**{plain(kind)}** · {verdict}  \n{plain(node_reason(node, units))}")
        details = {key: value for key, value in node.items() if key not in DRAWN_KEYS}
        if details:
            st.caption(" · ".join(
                f"{plain(key.replace('_', ' '))}: {plain(described(value, unit if key in LEVEL_KEYS else None))}"
                for key, value in details.items()
            ))
        values = node.get("values")
        if isinstance(values, dict) and values:
            # Formatted as text: the values mix numbers, instants, flags and nothing at all.
            st.table(pd.DataFrame(
                {"value": [value_words(v, unit if isinstance(v, int | float) and not isinstance(v, bool) else None)
                           for v in values.values()]},
                index=pd.Index([key.replace("_", " ") for key in values], name=str(kind))))
        for child in node.get("conditions") or []:
            if isinstance(child, dict):
                show_condition(child, units)


def show_explanation(explanation: Any, units: dict[str, str] | None = None) -> None:
    """Why the rule held (or stopped holding): the reason in words, then the condition tree. `units` names each
    metric's unit (from the model's catalog), so values read '2.6 A'."""
    if not isinstance(explanation, dict) or not explanation:
        st.caption("The engine recorded no explanation.")
        return
    st.markdown(f"**{plain(reason_of(explanation) or 'no reason given')}**")
    if explanation.get("at"):
        zone = viewer_zone()
        st.caption(f"Evaluated {plain(local_time(explanation['at'], zone))} ({plain(zone.key)}).")
    if isinstance(explanation.get("condition"), dict):
        show_condition(explanation["condition"], units)


def metric_units(models: dict[str, dict[str, Any]], model: Any) -> dict[str, str]:
    """Each metric's unit for a model code, from the /models catalog keyed by code."""
    metrics = (models.get(str(model)) or {}).get("metrics") or {}
    return {name: str(spec.get("unit") or "") for name, spec in metrics.items() if isinstance(spec, dict)}


def link_to(view: str, *, label: str, icon: str | None = None, query_params: dict[str, str] | None = None) -> None:
    """A link to the page views/<view>.py, drawn only when the signed-in person's role has that page."""
    user = current_user()
    if user is None or view not in pages_for(user.role):
        return
    st.page_link(f"views/{view}.py", label=label, icon=icon, query_params=query_params)


# ---------------------------------------------------------------- telemetry charts

# The buckets the API averages telemetry over, smallest first, with their length in seconds.
BUCKET_SECONDS: tuple[tuple[str, int], ...] = (
    ("1m", 60), ("5m", 300), ("15m", 900), ("1h", 3600), ("6h", 6 * 3600), ("1d", 86400),
)
# Numbers on an axis as people write them: '4,490.77', '0', '2.5', never '4,490.774545' or '0.000000'.
AXIS_NUMBER = ",~r"


def bucket_for(span_seconds: float, *, points: int = 150) -> str | None:
    """The smallest bucket that keeps about `points` points over a span; None (every reading) for a span so short
    that even one-minute averages would leave only a few."""
    if span_seconds < 10 * 60:
        return None
    for name, size in BUCKET_SECONDS:
        if span_seconds / size <= points:
            return name
    return BUCKET_SECONDS[-1][0]


# What happened to a device, drawn on its charts: each kind of moment in a colour of its own.
MOMENT_KINDS = ["event", "detection opened", "detection cleared"]
MOMENT_COLORS = ["#6a51a3", "#d62728", "#2ca02c"]


def telemetry_chart(points: pd.DataFrame, *, unit: str = "", title: str | None = None,
                    domain: tuple[datetime, datetime] | None = None, height: int = 220,
                    time_format: str = "%H:%M", marks: pd.DataFrame | None = None,
                    moments: pd.DataFrame | None = None) -> alt.LayerChart:
    """One metric over time (columns ts, value): a line with a point on every reading, so a single bucket shows;
    the value axis padded around a flat line and labelled as people write numbers. `marks` (a column ts) are
    drawn as dashed red rules (when an order opened); `moments` (columns ts, kind from MOMENT_KINDS, label) as
    rules coloured by kind, each labelled at the top, the label also in the tooltip."""
    values = points["value"].astype(float)
    low, high = float(values.min()), float(values.max())
    if low == high:
        pad = max(abs(low) * 0.05, 1.0)
        y_scale = alt.Scale(domain=[low - pad, high + pad], zero=False)
    else:
        y_scale = alt.Scale(zero=False, nice=True)
    x_scale = alt.Scale(domain=[domain[0].isoformat(), domain[1].isoformat()]) if domain else alt.Undefined
    base = alt.Chart(points).encode(
        x=alt.X("ts:T", title=None, scale=x_scale, axis=alt.Axis(format=time_format, labelOverlap=True)),
        y=alt.Y("value:Q", title=unit or None, scale=y_scale, axis=alt.Axis(format=AXIS_NUMBER)),
        tooltip=[alt.Tooltip("ts:T", title="time", format="%a %d %b %H:%M"),
                 alt.Tooltip("value:Q", title=title or "value", format=AXIS_NUMBER)],
    )
    # Big points where they are few (one bucket must be seen), small where they would merge into a thick line.
    size = 60 if len(points) <= 30 else 12
    layers: list[Any] = [base.mark_line(interpolate="monotone"), base.mark_point(filled=True, size=size)]
    if marks is not None and not marks.empty:
        layers.append(alt.Chart(marks).mark_rule(color="#d62728", strokeDash=[4, 3]).encode(x="ts:T"))
    if moments is not None and not moments.empty:
        color = alt.Color("kind:N", scale=alt.Scale(domain=MOMENT_KINDS, range=MOMENT_COLORS),
                          legend=alt.Legend(orient="bottom", title=None))
        tooltip = [alt.Tooltip("ts:T", title="when", format="%a %d %b %H:%M"), alt.Tooltip("label:N", title="what")]
        moment = alt.Chart(moments).encode(x="ts:T", color=color, tooltip=tooltip)
        # Moments in the same minute (a fault and the detection it opened) share one label, not two on top of
        # each other.
        together = moments.assign(ts=moments["ts"].dt.floor("min")).groupby("ts", as_index=False).agg(
            kind=("kind", "first"), label=("label", " · ".join))
        layers += [moment.mark_rule(strokeDash=[4, 3], strokeWidth=1.5),
                   alt.Chart(together).mark_text(angle=270, align="right", baseline="bottom", dy=-2, fontSize=10)
                   .encode(x="ts:T", color=color, tooltip=tooltip, text="label:N", y=alt.value(2))]
    chart = alt.layer(*layers).properties(height=height)
    if title:
        chart = chart.properties(title=alt.TitleParams(title, fontSize=13))
    return chart


def owner_label(owner_id: Any) -> str:
    """'Chen Jing (customer #25)' where the API tells this role the owner's name, else 'customer #25'."""
    try:
        answer = fetch("customer_360", owner_id)
    except ApiError:
        return f"customer #{owner_id}"
    name = (answer.get("customer") or {}).get("name") if isinstance(answer, dict) else None
    return f"{name} (customer #{owner_id})" if name else f"customer #{owner_id}"
