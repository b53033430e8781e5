"""Small formatting helpers shared by the pages."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pandas as pd
import streamlit as st


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
