"""Rules: the list with their state and how often each fired; switch one on or off, edit it with the API's
validation messages, and backtest it over a chosen range with the result drawn before anything changes."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from typing import Any

import altair as alt
import pandas as pd
import streamlit as st
import yaml

from dashboard.client import ApiError
from dashboard.data import change, fetch, fetch_or_stop, get_client, show_api_error
from dashboard.session import can, current_user
from dashboard.ui import plain, time_ago
from dashboard.words import duration_words, instant_words, plural

STEPS = {"15 minutes": "15m", "1 hour": "1h", "6 hours": "6h", "1 day": "1d"}
# The API evaluates at most this many steps per backtest; the page says so before asking.
MAX_STEPS = 2000
DETECTIONS_COUNTED = 1000
SAVED_KEY = "rules_saved"
BACKTEST_KEY = "rules_backtest"
DRAFT_KEY = "rules_draft_backtest"
ALL_STATES = "all rules"


def condition_kinds(condition: Any) -> list[str]:
    """The condition kinds a rule's `when` uses, in order, without repeats: ['all', 'usage', 'threshold']."""
    kinds: list[str] = []
    if isinstance(condition, dict):
        for kind, spec in condition.items():
            kinds.append(kind)
            children = spec if isinstance(spec, list) else (spec.get("conditions") if isinstance(spec, dict) else [])
            for child in children or []:
                kinds.extend(condition_kinds(child))
    return list(dict.fromkeys(kinds))


def actions_of(document: dict[str, Any]) -> str:
    names = [next(iter(action)) for action in document.get("then") or [] if isinstance(action, dict) and action]
    return ", ".join(name.replace("_", " ") for name in names) or "none"


def applies_to(document: dict[str, Any]) -> str:
    target = document.get("applies_to") or {}
    # Kinds read as words ('range hood'); model codes keep their hyphens (RH-900).
    return (", ".join(str(value).replace("_", " ") for value in target.values()) if isinstance(target, dict) and target
            else "every device")


def is_marketing_rule(document: dict[str, Any]) -> bool:
    """A rule whose actions are all offers: the marketers'. Every other one is a fault or maintenance rule, the
    dispatchers' (the API decides the same way and says so with a 403)."""
    kinds = [next(iter(action)) for action in document.get("then") or [] if isinstance(action, dict) and action]
    return bool(kinds) and all(kind == "offer" for kind in kinds)


def may_write(document: dict[str, Any]) -> bool:
    """Whether the signed-in person's role may change this rule."""
    user = current_user()
    if user is None or not can("switch_rules"):
        return False
    if user.role == "marketer":
        return is_marketing_rule(document)
    if user.role == "dispatcher":
        return not is_marketing_rule(document)
    return True


def fired_counts() -> tuple[Counter[str], str | None]:
    """Detections per rule among the newest DETECTIONS_COUNTED; a role that may not read detections gets why."""
    try:
        listing = fetch("detections", limit=DETECTIONS_COUNTED)
    except ApiError as error:
        if error.status == 403:
            # Said for the person, not as the API's permission table: the role reads rules, not what they found.
            return Counter(), "your role reads the rules, not the detections they open"
        raise
    return Counter(str(d.get("rule_id")) for d in listing.get("items") or []), None


st.title("Rules")
if message := st.session_state.pop(SAVED_KEY, None):
    st.success(message, icon=":material/check_circle:")

rules: list[dict[str, Any]] = fetch_or_stop("rules", limit=1000).get("items", [])
try:
    fired, fired_refused = fired_counts()
except ApiError as error:
    fired, fired_refused = Counter(), str(error)

with st.container(horizontal=True, vertical_alignment="bottom"):
    st.metric("Rules", len(rules), border=True)
    st.metric("Enabled", sum(1 for r in rules if r.get("enabled")), border=True)
    st.metric("Built in", sum(1 for r in rules if r.get("builtin")), border=True,
              help="From the catalog that ships with CareLoop (rules/catalog).")
    state = st.segmented_control("Show", [ALL_STATES, "enabled", "disabled"], default=ALL_STATES, required=True,
                                 key="rules_state") or ALL_STATES

shown = [r for r in rules if state == ALL_STATES or bool(r.get("enabled")) == (state == "enabled")]
if not shown:
    st.info("No rule here yet." if not rules else f"No {state} rule.")
    st.stop()
table = pd.DataFrame([
    {"rule": r["id"], "enabled": bool(r.get("enabled")), "description": (r.get("document") or {}).get("description"),
     "severity": (r.get("document") or {}).get("severity"), "applies to": applies_to(r.get("document") or {}),
     "when": ", ".join(condition_kinds((r.get("document") or {}).get("when"))),
     "then": actions_of(r.get("document") or {}), "fired": fired.get(r["id"], 0), "version": r.get("version"),
     "changed": time_ago(r.get("updated_at"))}
    for r in shown
])
if fired_refused:
    table = table.drop(columns=["fired"])
st.dataframe(table, hide_index=True, column_config={
    "enabled": st.column_config.CheckboxColumn("enabled"),
    "description": st.column_config.TextColumn(width="large"),
    "fired": st.column_config.ProgressColumn(
        "fired", format="%d", min_value=0, max_value=max(1, max(fired.values(), default=1)),
        help=f"Detections it opened, among the newest {DETECTIONS_COUNTED:,}."),
})
if fired_refused:
    st.caption(f"How often each fired is not shown: {fired_refused}.")

by_id = {r["id"]: r for r in shown}
rule_id = st.selectbox("Open a rule", list(by_id), key="rule_choice",
                       format_func=lambda key: f"{key} · {(by_id[key].get('document') or {}).get('description') or ''}")
rule = by_id[rule_id]
document: dict[str, Any] = dict(rule.get("document") or {})

st.header(rule_id)
with st.container(horizontal=True):
    st.badge("enabled" if rule.get("enabled") else "disabled", color="green" if rule.get("enabled") else "gray")
    st.badge(f"version {rule.get('version')}", color="gray")
    if rule.get("builtin"):
        st.badge("built in", color="blue")
    if document.get("severity"):
        st.badge(str(document["severity"]), color="orange")
kinds = ", ".join(condition_kinds(document.get("when")))
st.markdown(f"{plain(document.get('description') or '')}  \n**When** {plain(kinds)} · **then** "
            f"{plain(actions_of(document))} · **applies to** {plain(applies_to(document))}")


def show_mistakes(error: ApiError, outcome: str, icon: str) -> None:
    """The API's 422, one message per field ('Not saved: when.threshold.above: ...'); anything else as an error."""
    if error.status != 422:
        show_api_error(error)
        return
    for problem in error.problems:
        # A draft's mistakes are located under the request's `document`; the person edits the document itself.
        st.error(f"{outcome}: {problem.removeprefix('document.')}", icon=icon)


def save(new_document: dict[str, Any], done: str) -> None:
    try:
        change("update_rule", rule_id, new_document)
    except ApiError as error:
        show_mistakes(error, "Not saved", ":material/edit_off:")
        return
    st.session_state[SAVED_KEY] = done
    st.rerun()


writable = may_write(document)
if writable:
    switched_on = not rule.get("enabled")
    if st.button("Enable" if switched_on else "Disable", key=f"switch_{rule_id}",
                 icon=":material/toggle_on:" if switched_on else ":material/toggle_off:",
                 type="primary" if switched_on else "secondary",
                 help="The previous version is kept; the engine follows within a minute."):
        save({**document, "enabled": switched_on},
             f"Rule {rule_id} is now {'enabled' if switched_on else 'disabled'}.")
elif not can("switch_rules"):
    st.caption("Your role reads rules; dispatchers and marketers change them.")
elif is_marketing_rule(document):
    st.caption("A marketing rule (its actions are all offers): marketers change it.")
else:
    st.caption("A fault or maintenance rule: dispatchers change it; marketers change rules whose actions are all "
               "offers.")


# ---------------------------------------------------------------- backtest


def draw_backtest(result: dict[str, Any], *, key: str = "stored") -> None:
    """What the rule would have opened and cleared: counts, opened and cleared per day, each device's span. `key`
    tells two results on one page apart (the stored rule's and the draft's)."""
    transitions = pd.DataFrame(result.get("transitions") or [], columns=["change", "device_id", "opened_at", "at"])
    with st.container(horizontal=True):
        st.metric("Would have opened", result.get("opened", 0), border=True)
        st.metric("Cleared", result.get("cleared", 0), border=True)
        st.metric("Devices", result.get("devices", 0), border=True)
    start, end = result.get("start"), result.get("end")
    version = result.get("version")
    st.caption(f"{plain(instant_words(start))} to {plain(instant_words(end))}, evaluated every "
               f"{duration_words(step_seconds(str(result.get('step'))))} "
               f"({'the draft, not saved' if version == 0 else f'version {version}'}). Nothing was opened.")
    if transitions.empty:
        st.info("Over this range the rule would have opened nothing.", icon=":material/search_off:")
        return
    transitions["at"] = pd.to_datetime(transitions["at"], utc=True, format="ISO8601")
    transitions["opened_at"] = pd.to_datetime(transitions["opened_at"], utc=True, format="ISO8601")
    span_days = (pd.Timestamp(end) - pd.Timestamp(start)).total_seconds() / 86400 if start and end else 1
    unit = "yearmonthdatehours" if span_days <= 3 else "yearmonthdate"
    st.altair_chart(alt.Chart(transitions).mark_bar().encode(
        x=alt.X(f"{unit}(at):T", title=None), y=alt.Y("count():Q", title="detections"),
        color=alt.Color("change:N", scale=alt.Scale(domain=["opened", "cleared"], range=["#d62728", "#2ca02c"]),
                        legend=alt.Legend(orient="bottom", title=None)),
        xOffset="change:N", tooltip=[alt.Tooltip(f"{unit}(at):T", title="when"), "change:N", "count():Q"],
    ).properties(title="Opened and cleared over the range", height=220), key=f"backtest_over_time_{key}")
    # Each device's detection from its opening to its clearing (or the end of the range, still open).
    spans = transitions[transitions["change"] == "opened"][["device_id", "opened_at"]].copy()
    cleared = transitions[transitions["change"] == "cleared"].set_index(["device_id", "opened_at"])["at"]
    spans["until"] = [cleared.get((row.device_id, row.opened_at), pd.Timestamp(end)) for row in spans.itertuples()]
    spans["still open"] = [(row.device_id, row.opened_at) not in cleared.index for row in spans.itertuples()]
    devices = list(dict.fromkeys(spans["device_id"]))[:40]
    spans = spans[spans["device_id"].isin(devices)]
    st.altair_chart(alt.Chart(spans).mark_bar(height=10).encode(
        x=alt.X("opened_at:T", title=None), x2="until:T", y=alt.Y("device_id:N", title=None, sort=devices),
        color=alt.Color("still open:N", scale=alt.Scale(domain=[True, False], range=["#d62728", "#fd8d3c"]),
                        legend=alt.Legend(orient="bottom", title="still open at the end")),
        tooltip=["device_id:N", alt.Tooltip("opened_at:T", format="%d %b %H:%M"),
                 alt.Tooltip("until:T", format="%d %b %H:%M")],
    ).properties(title=f"Each device's detection ({plural(len(devices), 'device')} shown)",
                 height=max(120, 22 * len(devices))), key=f"backtest_spans_{key}")


def step_seconds(step: str) -> int:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
    try:
        return int(step[:-1]) * units[step[-1]]
    except (KeyError, ValueError, IndexError):
        return 0


def backtest_window(chosen_range: Any, step_label: str) -> tuple[str, str, str] | None:
    """The chosen dates as the API's start, end and step; None (saying why) past the API's evaluations."""
    # A range being picked has one date yet: it is a range of that one day.
    dates = list(chosen_range) if isinstance(chosen_range, tuple | list) else [chosen_range]
    first, last = dates[0], dates[-1]
    start = dt.datetime.combine(first, dt.time(0), tzinfo=dt.UTC)
    end = min(dt.datetime.combine(last, dt.time(0), tzinfo=dt.UTC) + dt.timedelta(days=1), dt.datetime.now(dt.UTC))
    step = STEPS[step_label]
    if (end - start).total_seconds() / step_seconds(step) > MAX_STEPS:
        st.error(f"That is more than {MAX_STEPS:,} evaluations: take a longer step or a shorter range.")
        return None
    return start.isoformat(), end.isoformat(), step


def run_backtest(replay: Any, window: tuple[str, str, str]) -> dict[str, Any] | None:
    """`replay(start=, end=, step=)` on the API, with a spinner; its refusals shown, field by field."""
    start, end, step = window
    try:
        with st.spinner("Replaying history…"):
            return replay(start=start, end=end, step=step)
    except ApiError as error:
        if error.status == 429 and error.detail:
            st.error(f"Not run: {error.detail}", icon=":material/block:")
        else:
            show_mistakes(error, "Not run", ":material/block:")
    return None


st.subheader("Backtest")
st.caption("Replays the stored rule over stored history: what it would have opened and cleared, and when.")
today = dt.datetime.now(dt.UTC).date()
with st.form(f"backtest_{rule_id}", border=False), st.container(horizontal=True, vertical_alignment="bottom"):
    chosen_range = st.date_input("From, to (UTC)", (today - dt.timedelta(days=7), today), max_value=today,
                                 width=260, key=f"backtest_range_{rule_id}")
    step_label = st.selectbox("Evaluate every", list(STEPS), index=1, width=160, key=f"backtest_step_{rule_id}")
    run = st.form_submit_button("Run backtest", type="primary", icon=":material/history:")
if run and (window := backtest_window(chosen_range, step_label)):
    answer = run_backtest(lambda **when: get_client().backtest_rule(rule_id, **when), window)
    if answer is not None:
        st.session_state[BACKTEST_KEY] = {"rule": rule_id, "result": answer}
kept = st.session_state.get(BACKTEST_KEY)
if kept and kept.get("rule") == rule_id:
    draw_backtest(kept["result"])


# ---------------------------------------------------------------- edit


if writable:
    st.subheader("Edit")
    with st.form(f"edit_{rule_id}"):
        text = st.text_area("The rule as YAML", yaml.safe_dump(document, sort_keys=False, allow_unicode=True),
                            height=320, key=f"rule_text_{rule_id}")
        with st.container(horizontal=True, vertical_alignment="bottom"):
            draft_range = st.date_input("Backtest from, to (UTC)", (today - dt.timedelta(days=7), today),
                                        max_value=today, width=260, key=f"draft_range_{rule_id}")
            draft_step = st.selectbox("Evaluate every", list(STEPS), index=1, width=160, key=f"draft_step_{rule_id}")
            try_draft = st.form_submit_button("Backtest", icon=":material/history:",
                                              help="Replay this text over stored history before saving it.")
            save_draft = st.form_submit_button("Validate and save", icon=":material/save:", type="primary")
    edited: Any = None
    if try_draft or save_draft:
        outcome = "Not run" if try_draft else "Not saved"
        try:
            edited = yaml.safe_load(text)
        except yaml.YAMLError as error:
            st.error(f"{outcome}: this is not YAML ({error}).", icon=":material/edit_off:")
        else:
            if not isinstance(edited, dict):
                st.error(f"{outcome}: a rule is a mapping (id, when, then, ...).", icon=":material/edit_off:")
                edited = None
    if try_draft and edited is not None and (window := backtest_window(draft_range, draft_step)):
        answer = run_backtest(lambda **when: get_client().backtest_draft(edited, **when), window)
        st.session_state[DRAFT_KEY] = {"rule": rule_id, "result": answer} if answer is not None else None
    if save_draft and edited is not None:
        save(edited, f"Rule {rule_id} is saved as a new version; the previous one is kept.")
    tried = st.session_state.get(DRAFT_KEY)
    if tried and tried.get("rule") == rule_id:
        st.markdown("**Backtest of the draft**, before saving it")
        draw_backtest(tried["result"], key="draft")
    st.caption("The API checks the document against the models catalog and lists every mistake with the field it "
               "is in. Backtest replays the text as it stands, before anything is saved.")
