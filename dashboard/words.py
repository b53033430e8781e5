"""What the API says, in words a person reads: spans of time in their largest sensible unit, instants as dates,
values with their units, fault codes with their meaning. Pure functions, no Streamlit."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

# A year is 365 days, as the rules count it (careloop.durations); a leap day is noise in an appliance's age.
UNITS: tuple[tuple[str, int], ...] = (
    ("year", 365 * 86400), ("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1),
)
# The short units the API writes spans in: `26h`, `3.5d`, `2.52e+03d`, `1y` (a rule's `at_least`, a window).
SHORT_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}
SPAN = re.compile(r"(?<![\w.+-])(\d+(?:\.\d+)?(?:e[+-]?\d+)?)([smhdwy])(?![\w])")
INSTANT = re.compile(r"\b\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?")
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def number_words(value: float) -> str:
    """A number for reading: one decimal below 10 (none when whole), whole above, thousands separated."""
    if not math.isfinite(value):
        return str(value)
    if abs(value) < 10:
        text = f"{value:.1f}"
        return text[:-2] if text.endswith(".0") else text
    return f"{round(value):,}"


def plural(count: float, noun: str) -> str:
    """'1 day', '3 days', '6.9 years': the noun agrees with the number as written."""
    written = number_words(count)
    return f"{written} {noun}" if written in ("1", "-1") else f"{written} {noun}s"


def duration_words(seconds: float) -> str:
    """A span of time in the largest unit it fills at least once: '6.9 years', '3 days', '5 hours', '45 seconds'.
    Negative spans read like positive ones (the sentence around says before or after)."""
    seconds = abs(float(seconds))
    if not math.isfinite(seconds):
        return "forever"
    for noun, size in UNITS:
        count = seconds / size
        # As written, not as computed: 59.97 minutes reads '1 hour', never '60 minutes'.
        if float(number_words(count).replace(",", "")) >= 1 or noun == "second":
            return plural(count, noun)
    raise AssertionError("unreachable")


def span_seconds(text: str) -> float | None:
    """Seconds in a span the API writes (`26h`, `3.5d`, `2.52e+03d`, `1y`, `2w`), or None when it is not one."""
    match = SPAN.fullmatch(text.strip())
    if match is None:
        return None
    return float(match.group(1)) * SHORT_UNITS[match.group(2)]


def parse_instant(text: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def instant_words(value: str | datetime) -> str:
    """'4 Jan 2020' for a midnight in UTC (a date the API keeps as an instant), else '4 Jan 2020 13:05 UTC'."""
    moment = value if isinstance(value, datetime) else parse_instant(value)
    if moment is None:
        return str(value)
    moment = moment.astimezone(UTC)
    day = f"{moment.day} {MONTHS[moment.month - 1]} {moment.year}"
    if (moment.hour, moment.minute, moment.second) == (0, 0, 0):
        return day
    return f"{day} {moment:%H:%M} UTC"


def reason_words(text: str) -> str:
    """An engine's reason with its spans and instants in words:
    '2.52e+03d since purchase (2020-01-04T00:00:00Z), at least 1y' -> '6.9 years since purchase (4 Jan 2020), at
    least 1 year'."""
    text = INSTANT.sub(lambda match: instant_words(match.group(0)), str(text))
    return SPAN.sub(lambda match: duration_words(float(match.group(1)) * SHORT_UNITS[match.group(2)]), text)


def value_words(value: Any, unit: str | None = None) -> str:
    """A value with its unit, rounded for reading ('2.6 A', '812.4 h', '1,250 rpm'); spans and instants in words;
    '–' for nothing."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float):
        if isinstance(value, float) and math.isfinite(value):
            text = f"{value:,.2f}".rstrip("0").rstrip(".")
        else:
            text = f"{value:,}"
        return f"{text} {unit}" if unit else text
    if isinstance(value, str):
        if span_seconds(value) is not None:
            return duration_words(span_seconds(value) or 0)
        if INSTANT.fullmatch(value):
            return instant_words(value)
    if isinstance(value, list):
        return ", ".join(value_words(item, unit) for item in value) or "none"
    return f"{value} {unit}" if unit else str(value)


def code_words(code: str, meanings: Mapping[str, Any]) -> str:
    """A fault code with its meaning from the model's catalog: 'E21 (motor stall)'; 'E99 (not in the catalog)'."""
    known = meanings.get(code)
    meaning = known.get("meaning") if isinstance(known, Mapping) else known
    return f"{code} ({meaning})" if meaning else f"{code} (not in the catalog)"


NUMBER_AFTER = re.compile(
    r"((?:\b(?:is|above|below|at|by|reached|reaches|past|least|most|from|to|level|lowest|highest) |\(|-> ))?"
    r"(?<![\w.])([+-]?\d[\d,]*(?:\.\d+)?)(?=$|[,;)]| since| for| within| throughout| has| is| not| in| and| ->)"
)


def with_unit(text: str, unit: str | None) -> str:
    """A reason about one metric with its unit after each of the metric's values: 'fan_current_a is 2.6, above 2'
    -> 'fan_current_a is 2.6 A, above 2 A'. Counts, spans and rates are left as they are."""
    if not unit:
        return text
    def add_unit(match: re.Match[str]) -> str:
        lead, number = match.group(1), match.group(2)
        return f"{lead}{number} {unit}" if lead else match.group(0)

    return NUMBER_AFTER.sub(add_unit, text)


# ---------------------------------------------------------------- names the API keeps as identifiers

# Units as the catalog writes them, and as people write them.
UNIT_WORDS = {"degC": "°C", "degF": "°F", "degC/min": "°C/min", "m3/h": "m³/h", "count": "", "pct": "%"}
# A metric's name ends with its unit (compressor_current_a, heat_rate_c_per_min); the unit is said by its value.
METRIC_UNIT_SUFFIX = re.compile(r"_(?:a|c|c_per_min|pct|pa|kpa|kw|kwh|w|v|s|min|h|rpm|lpm|m3h|l)$")


def unit_words(unit: str | None) -> str:
    """A unit as people write it: 'degC' -> '°C', 'm3/h' -> 'm³/h'; '' for none (or a plain count)."""
    if not unit:
        return ""
    return UNIT_WORDS.get(unit, unit)


def name_words(name: Any) -> str:
    """An identifier in words: 'air_conditioner' -> 'air conditioner', 'last_seen' -> 'last seen'."""
    return str(name).replace("_", " ").replace("-", " ").strip() if name is not None else "–"


def metric_words(metric: Any) -> str:
    """A metric's name without its unit suffix, in words: 'compressor_current_a' -> 'compressor current',
    'heat_rate_c_per_min' -> 'heat rate', 'run_hours' -> 'run hours'."""
    return name_words(METRIC_UNIT_SUFFIX.sub("", str(metric)))


def key_words(key: Any, *, keep: int = 28) -> str:
    """A long machine key shortened for a table: 'owner-birthday:RH-000025:2026-11-30:offer' ->
    'owner-birthday:RH-000025:…'."""
    text = str(key or "")
    return text if len(text) <= keep else text[:keep].rstrip(":-") + "…"


# ---------------------------------------------------------------- the demand forecast (GET /fleet/forecast)

FORECAST_KINDS = {"maintenance": "Maintenance", "trade_in": "Trade-in"}
NO_REGION = "no region"
FORECAST_EXPLAINED = (
    "Projected from what the rules watch: a trade-in window from each appliance's purchase date and the rule's "
    "age; a maintenance window from the time since its last service, its run hours at the rate they grew over "
    "the last week, or its trend line reaching the rule's level. An appliance counts once per kind, at its "
    "earliest window, and not at all while such a window is already open."
)


def forecast_kind_words(kind: str) -> str:
    """'Trade-in' for `trade_in`; an unknown kind as the API wrote it."""
    return FORECAST_KINDS.get(kind, kind)


def region_words(region: str | None) -> str:
    """A region as written, or 'no region' for appliances registered without one."""
    return region or NO_REGION


def left_out_words(rules: list[dict[str, Any]]) -> str | None:
    """What the forecast could not project, in a sentence ('hood-trade-in: its fault count'), or None."""
    parts = [f"{rule['rule_id']} ({', '.join(rule['unprojected'])})" for rule in rules if rule.get("unprojected")]
    if not parts:
        return None
    return ("Conditions time does not drive are left out (a count of faults, a threshold): "
            + "; ".join(parts) + ". Those rules are projected from their other conditions.")


# ---------------------------------------------------------------- what happened to a device, on its charts

EVENT_TYPE_WORDS = {"fault": "fault", "fault_cleared": "fault cleared", "maintenance_done": "maintenance done",
                    "power_on": "power on", "power_off": "power off"}


def event_words(event: Mapping[str, Any], meanings: Mapping[str, Any]) -> str:
    """A device's event as a chart label: 'fault E21 (motor stall)', 'maintenance done', 'door opened'."""
    kind = str(event.get("type") or "event")
    words = EVENT_TYPE_WORDS.get(kind, kind.replace("_", " "))
    code = event.get("code")
    return f"{words} {code_words(str(code), meanings)}" if code else words
