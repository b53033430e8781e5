"""Each dashboard page renders against a real (tiny) HTTP API, and API failures read clearly."""

from __future__ import annotations

import json
import socket
from datetime import UTC, datetime, time, timedelta
from pathlib import Path

import pytest
from dashboard_fake_api import NOW as NOW_FAKE
from dashboard_fake_api import TOKEN, FakeApi, proposals_for
from streamlit.testing.v1 import AppTest

from dashboard.session import USER_KEY

APP = Path(__file__).resolve().parents[2] / "dashboard" / "app.py"
PAGES = ["views/fleet.py", "views/device.py", "views/customers.py", "views/quarantine.py", "views/detections.py",
         "views/dispatch.py"]
NAMES = {"admin": "admin", "dispatcher": "Zhang Wei", "marketer": "Max Marketer", "technician": "Liu Yang"}
DETECTIONS = "views/detections.py"
DISPATCH = "views/dispatch.py"


def signed_in(role: str = "admin", token: str = TOKEN, technician_id: int | None = None) -> AppTest:
    """The app with a person of `role` signed in (as the sign-in form leaves them), not yet run."""
    at = AppTest.from_file(APP, default_timeout=30)
    at.session_state[USER_KEY] = {"token": token, "role": role, "name": NAMES[role], "technician_id": technician_id,
                                  "expires_at": None, "told_by_api": True}
    return at


def open_page(page: str, *, role: str = "admin", token: str = TOKEN, technician_id: int | None = None,
              **query_params: str) -> AppTest:
    """Run the app from its entry file, signed in as `role`, then show `page` (a path relative to app.py)."""
    at = signed_in(role, token, technician_id)
    at.run()
    at.query_params.update(query_params)
    at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def charts(at: AppTest) -> list:
    return at.get("vega_lite_chart")


def metric_values(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def text_of(at: AppTest) -> str:
    return "\n".join(str(e.value) for kind in ("markdown", "caption", "header") for e in getattr(at, kind))


def chart_rows(chart) -> list[dict]:
    """The rows a chart draws (Streamlit ships them beside the spec, as Arrow)."""
    import pyarrow as pa

    [dataset] = list(chart.proto.datasets) or [chart.proto]
    return pa.ipc.open_stream(dataset.data.data).read_pandas().to_dict("records")


def chart_rows_of_layer(chart, mark: str) -> list[dict]:
    """The rows a layered chart's layer of this mark draws (each layer names its dataset)."""
    import pyarrow as pa

    spec = json.loads(chart.proto.spec)
    layer = next(layer for layer in spec["layer"]
                 if (layer["mark"]["type"] if isinstance(layer["mark"], dict) else layer["mark"]) == mark)
    name = layer["data"]["name"]
    dataset = next(d for d in chart.proto.datasets if d.name == name)
    return pa.ipc.open_stream(dataset.data.data).read_pandas().to_dict("records")


def choose(at: AppTest, label: str, option: str) -> AppTest:
    """Pick `option` in the selectbox labelled `label` and run the page again."""
    next(box for box in at.selectbox if box.label == label).select(option).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_fleet_page_shows_health_badges_counts_and_online_share_chart(fake_api: FakeApi) -> None:
    at = open_page("views/fleet.py")

    assert at.title[0].value == "Fleet health"
    assert ":green-badge[" in text_of(at) and "API ok" in text_of(at)
    values = metric_values(at)
    assert values["Devices"] == "200"
    assert values["Online"] == "150"
    assert values["Messages missing"] == "17"
    assert values["Quarantined, last 24 h"] == "4"
    assert values["Readings, last 24 h"] == "345,678"
    # The online share by kind, what the rules found (open detections by model and severity, and per day), and
    # the windows coming per week.
    assert len(charts(at)) == 4
    assert "range hood: 100 of 120" in text_of(at)
    assert "**Open detections by model and severity** (2)" in text_of(at)
    assert not at.error


@pytest.mark.parametrize("role", ["admin", "dispatcher", "marketer"])
def test_fleet_page_shows_the_windows_coming_per_region_as_a_table_and_a_weekly_chart(
    fake_api: FakeApi, role: str
) -> None:
    fake_api.role = role
    at = open_page("views/fleet.py", role=role)

    assert fake_api.asked("/fleet/forecast") == [{"days": "30"}]
    assert "Coming in the next 30 days" in [h.value for h in at.subheader]
    values = metric_values(at)
    assert values["Maintenance windows, next 30 days"] == "5"
    assert values["Trade-in windows, next 30 days"] == "2"
    table = at.dataframe[0].value
    assert table.to_dict("records") == [
        {"Region": "east", "Maintenance": 3, "Trade-in": 1, "Total": 4},
        {"Region": "west", "Maintenance": 2, "Trade-in": 0, "Total": 2},
        {"Region": "no region", "Maintenance": 0, "Trade-in": 1, "Total": 1},
    ]
    weekly = json.loads(charts(at)[-1].proto.spec)
    assert weekly["encoding"]["row"]["field"] == "region"
    drawn = chart_rows(charts(at)[-1])
    assert sum(point["devices"] for point in drawn) == 7
    assert {point["week"] for point in drawn} >= {f"{(NOW_FAKE + timedelta(days=7 * w)):%d %b}" for w in range(5)}
    assert "hood-trade-in (count)" in text_of(at)
    assert not at.error


def test_fleet_page_says_plainly_when_nothing_is_coming(fake_api: FakeApi, monkeypatch: pytest.MonkeyPatch) -> None:
    import dashboard_fake_api

    monkeypatch.setattr(dashboard_fake_api, "forecast", lambda days: {
        "start": "", "end": "", "days": days, "week_starts": [], "regions": [], "rules": [], "not_forecast": []})
    at = open_page("views/fleet.py")
    assert "No maintenance or trade-in window is projected to open in the next 30 days." in [i.value for i in at.info]


def test_device_page_opens_linked_device_with_latest_values_and_metric_charts(fake_api: FakeApi) -> None:
    at = open_page("views/device.py", device="RH-000123")

    assert at.header[0].value == "RH-000123"
    values = metric_values(at)
    # 2.6 A is above the model's valid maximum of 2 A, so it is flagged.
    assert values["⚠ fan current"] == "2.6 A"
    assert values["run hours"] == "812.4 h"
    assert values["Messages missing"] == "3"
    assert len(charts(at)) == 2
    asked = fake_api.asked("/devices/RH-000123/telemetry")
    assert {q["metric"] for q in asked} == {"fan_current_a", "run_hours"}
    # The range's bucket first; the readings span only 2 h 15 min of the 24 h, so the bucket follows their span.
    assert [q["bucket"] for q in asked] == ["15m", "1m", "15m", "1m"]
    assert all("since" in q for q in asked)
    assert at.page_link[0].proto.query_string == "customer=7"
    assert not at.error


@pytest.mark.parametrize("role", ["admin", "dispatcher", "technician"])
def test_device_charts_draw_its_events_and_detections_labelled_and_list_its_events(
    fake_api: FakeApi, role: str
) -> None:
    fake_api.role = role
    at = open_page("views/device.py", role=role, technician_id=1 if role == "technician" else None,
                   device="RH-000123")

    asked = fake_api.asked("/devices/RH-000123/events")
    assert asked and all("since" in q and "until" not in q for q in asked)  # up to now
    spec = json.loads(charts(at)[0].proto.spec)
    kinds = [layer["mark"]["type"] if isinstance(layer["mark"], dict) else layer["mark"] for layer in spec["layer"]]
    assert kinds[-2:] == ["rule", "text"]
    drawn = {(row["kind"], row["label"]) for row in chart_rows_of_layer(charts(at)[0], "rule")}
    # The fault of 10 minutes ago and the fan-stall detection it opened, within the chart's span (its readings'
    # last 2 h 15 min); the grease detection of 5 h ago is in the range but before the chart; the cleaning 3 days
    # ago is out of the 24 h.
    assert drawn == {("event", "fault E21 (motor stall)"), ("detection opened", "hood-fan-stall opened")}
    # The fault and the detection it opened, in the same minute, share one label rather than overprint.
    labels = [row["label"] for row in chart_rows_of_layer(charts(at)[0], "text")]
    assert labels == ["fault E21 (motor stall) · hood-fan-stall opened"]
    assert "In this range: 1 event, 2 detections opened and 0 cleared" in text_of(at)
    events = next(t.value for t in at.dataframe if "what" in t.value.columns)
    assert list(events["what"]) == ["fault E21 (motor stall)"]
    assert not at.error


def test_device_page_takes_a_range_of_dates_and_a_bucket_that_fits_it(fake_api: FakeApi) -> None:
    at = open_page("views/device.py", device="RH-000123")
    next(box for box in at.selectbox if box.label == "Range").select("dates…").run()
    today = NOW_FAKE.date()
    at.date_input(key="device_dates").set_value((today - timedelta(days=90), today)).run()
    assert not at.exception

    first_day = (today - timedelta(days=90)).isoformat()
    # The 90 days in daily buckets (bucket_for: ~150 points at most), then, the readings spanning hours, their span.
    asked = next(q for q in fake_api.asked("/devices/RH-000123/telemetry") if q["since"].startswith(first_day))
    assert asked["bucket"] == "1d"
    events = fake_api.asked("/devices/RH-000123/events")[-1]
    assert events["since"].startswith((today - timedelta(days=90)).isoformat())
    assert asked["until"] == events["until"]  # whole days end where they end
    whats = list(next(t.value for t in at.dataframe if "what" in t.value.columns)["what"])
    assert whats == ["fault E21 (motor stall)", "maintenance done"]


def test_device_page_search_narrows_choice_and_bucket_is_sent(fake_api: FakeApi) -> None:
    at = open_page("views/device.py")
    at.text_input[0].input("OV").run()

    device_box = next(box for box in at.selectbox if box.label == "Device")
    assert device_box.options == ["OV-000001 · OV-500 · offline"]
    assert at.header[0].value == "OV-000001"
    assert fake_api.asked("/devices")[-1]["q"] == "OV"

    next(box for box in at.selectbox if box.label == "Bucket").select("1h").run()
    assert not at.exception
    assert fake_api.asked("/devices/OV-000001/telemetry")[-1]["bucket"] == "1h"
    # The oven has never reported: its metric is listed, with no chart and a plain note.
    assert "No readings in this range." in text_of(at)
    assert not charts(at)


def test_device_page_warns_about_an_unknown_device(fake_api: FakeApi) -> None:
    at = open_page("views/device.py", device="NOPE-1")

    assert at.warning[0].value == "There is no device 'NOPE-1'."
    assert not at.error


def test_customers_page_shows_the_360_view(fake_api: FakeApi) -> None:
    at = open_page("views/customers.py")

    assert at.header[0].value == "Li Wei"
    values = metric_values(at)
    assert values["Appliances"] == "2"
    assert next(m for m in at.metric if m.label == "Appliances").delta == "1 online"
    consents, appliances = at.dataframe[1].value, at.dataframe[2].value
    assert consents.loc["service", "phone"] == "given"
    assert consents.loc["marketing", "email"] == "withdrawn"
    assert list(appliances["device"]) == ["RH-000123", "OV-000001"]
    assert list(appliances["kind"]) == ["range hood", "oven"]
    assert [link.proto.query_string for link in at.page_link] == ["device=RH-000123", "device=OV-000001"]
    assert fake_api.asked("/customers/7/360")
    assert not at.error


def test_quarantine_page_charts_reasons_and_filters_messages(fake_api: FakeApi) -> None:
    at = open_page("views/quarantine.py")

    assert metric_values(at)["Quarantined"] == "4"
    assert len(charts(at)) == 1
    assert len(at.dataframe[0].value) == 2

    next(box for box in at.selectbox if box.label == "Reason").select("bad_json").run()
    assert not at.exception
    assert fake_api.asked("/ingest/quarantine")[-1]["reason"] == "bad_json"
    assert list(at.dataframe[0].value["reason"]) == ["bad_json"]
    # A payload that is not JSON is shown as the text that arrived.
    assert at.code[0].value == "{not json"


def test_detections_page_lists_open_detections_with_counts(fake_api: FakeApi) -> None:
    at = open_page(DETECTIONS)

    assert at.title[0].value == "Detections"
    values = metric_values(at)
    assert (values["Open"], values["Acknowledged"], values["Critical open"]) == ("1", "1", "1")
    listing = at.dataframe[0].value
    assert list(listing.columns) == ["severity", "kind", "opened", "rule", "device", "model", "status", "reason",
                                     "id"]
    assert listing.iloc[0][["severity", "rule", "device", "model", "status", "reason"]].tolist() == [
        "critical", "hood-fan-stall", "RH-000123", "RH-900", "open", "open fault E21 (fan motor stall)"
    ]
    assert len(listing) == 1
    # Open is the default: dispatchers start from what nobody has seen yet.
    assert fake_api.asked("/detections")[-1]["status"] == "open"
    assert not at.error


def test_detections_page_filters_by_status_severity_rule_and_device(fake_api: FakeApi) -> None:
    at = open_page(DETECTIONS)

    choose(at, "Status", "all statuses")
    assert "status" not in fake_api.asked("/detections")[-1]
    assert list(at.dataframe[0].value["status"]) == ["open", "acknowledged", "cleared"]

    choose(at, "Status", "cleared")
    assert fake_api.asked("/detections")[-1]["status"] == "cleared"
    assert list(at.dataframe[0].value["rule"]) == ["oven-offline"]

    choose(at, "Status", "all statuses")
    choose(at, "Severity", "warning")
    assert fake_api.asked("/detections")[-1]["severity"] == "warning"
    assert list(at.dataframe[0].value["id"]) == [2]
    assert "1 detection matches. Most urgent first" in text_of(at)

    choose(at, "Severity", "all severities")
    choose(at, "Rule", "hood-fan-stall")
    assert fake_api.asked("/detections")[-1]["rule_id"] == "hood-fan-stall"
    assert list(at.dataframe[0].value["id"]) == [3]

    choose(at, "Rule", "all rules")
    at.text_input[0].input(" OV-000001 ").run()
    assert fake_api.asked("/detections")[-1]["device_id"] == "OV-000001"
    assert list(at.dataframe[0].value["device"]) == ["OV-000001"]

    at.text_input[0].input("NOPE-1").run()
    assert not at.dataframe
    assert at.info[0].value == "No detection matches these filters."
    assert not at.error


def test_detections_page_explains_the_selected_detection(fake_api: FakeApi) -> None:
    at = open_page(DETECTIONS)
    choose(at, "Status", "all statuses")
    choose(at, "Inspect a detection", "2")

    assert at.header[0].value == "#2 · hood-grease-cleaning-rh900"
    text = text_of(at)
    assert "Grease filter due for cleaning after 180 running hours (RH-900)" in text
    # The reason in words, then every condition of the tree with its verdict and its own reason.
    assert "**all 2 conditions hold**" in text
    # Values carry their metric's unit (from the model's catalog).
    assert "**usage** · :green[met]  \nrun hours grew by 212.4 h since new, at least 180 h" in text
    assert "**threshold** · :green[met]  \nfan current is 2.6 A, above 2 A" in text
    usage_values, threshold_values = (table.value for table in at.table)
    assert usage_values.loc["current", "value"] == "812.4 h"
    assert usage_values.loc["since at", "value"] == "–"
    assert threshold_values.loc["latest", "value"] == "2.6 A"
    assert metric_values(at)["Acknowledged by"] == "dispatcher, 4 h ago"
    assert list(at.dataframe[1].value["action"]) == ["offer"]
    assert [link.proto.query_string for link in at.page_link] == ["device=RH-000123", "customer=7"]
    # Only open detections can be acknowledged.
    assert not at.main.button
    assert at.query_params["detection"] == "2"
    assert not at.error


def test_detections_page_opens_a_linked_detection_even_outside_the_filters(fake_api: FakeApi) -> None:
    at = open_page(DETECTIONS, detection="1")

    assert at.header[0].value == "#1 · oven-offline"
    assert fake_api.asked("/detections/1")
    text = text_of(at)
    # Spans in words, in their largest sensible unit.
    assert "**offline** · :green[met]  \noffline for 1.1 days (since yesterday)" in text
    assert "**offline** · :red[not met]  \nonline, last seen 1 minute ago, less than 1 day" in text
    assert "for: 1 day" in text
    assert metric_values(at)["Cleared"] == "1 d ago"
    assert "The rule asks for no action." in text


def test_detections_page_warns_about_an_unknown_linked_detection(fake_api: FakeApi) -> None:
    at = open_page(DETECTIONS, detection="99")

    assert at.warning[0].value == "There is no detection #99."
    assert at.header[0].value == "#3 · hood-fan-stall"
    assert not at.error


def test_acknowledge_posts_and_the_listing_shows_the_new_status(fake_api: FakeApi) -> None:
    at = open_page(DETECTIONS)
    choose(at, "Status", "all statuses")
    assert at.dataframe[0].value.set_index("id").loc[3, "status"] == "open"

    at.button(key="acknowledge_3").click().run()

    assert not at.exception and not at.error
    assert len(fake_api.asked("/detections/3/acknowledge", method="POST")) == 1
    assert at.success[0].value == "Detection #3 (hood-fan-stall on RH-000123) is now acknowledged by dispatcher."
    # The cache was cleared: the list, the counts and the details read the new state.
    assert at.dataframe[0].value.set_index("id").loc[3, "status"] == "acknowledged"
    values = metric_values(at)
    assert (values["Open"], values["Acknowledged"], values["Critical open"]) == ("0", "2", "0")
    assert values["Acknowledged by"].startswith("dispatcher, ")
    assert not at.main.button


def test_acknowledged_detection_leaves_the_default_open_list(fake_api: FakeApi) -> None:
    at = open_page(DETECTIONS)
    at.button(key="acknowledge_3").click().run()

    assert at.success
    assert not at.dataframe
    assert at.info[0].value == "Nothing open: no rule has found anything new."
    assert metric_values(at)["Open"] == "0"


def test_a_marketer_has_no_detections_or_device_pages_which_the_api_does_not_let_them_read(
    fake_api: FakeApi,
) -> None:
    fake_api.role = "marketer"
    at = signed_in("marketer").run()

    for page in (DETECTIONS, "views/device.py", "views/quarantine.py", DISPATCH):
        with pytest.raises(ValueError, match="Could not find a navigation page"):
            at.switch_page(page)
    assert not fake_api.asked("/detections")


def test_acknowledge_refused_by_the_api_shows_its_reason(fake_api: FakeApi) -> None:
    # The dashboard thinks the role may; the API, which decides, says no (a role changed since sign-in).
    fake_api.role = "marketer"
    at = open_page(DETECTIONS, role="dispatcher")
    at.button(key="acknowledge_3").click().run()

    assert not at.exception
    message = at.error[0].value
    assert f"{fake_api.url}/detections/3/acknowledge answered 403 Forbidden" in message
    assert "your role may not do this" in message and "role 'marketer' may not do this" in message
    assert not at.success
    assert fake_api.detection("3")["status"] == "open"


def test_detections_page_shows_a_server_error_instead_of_a_traceback(fake_api: FakeApi) -> None:
    fake_api.status_override = 500
    at = open_page(DETECTIONS)

    assert at.error[0].value == (
        f"The CareLoop API at {fake_api.url}/detections answered 500 Internal Server Error: simulated failure"
    )
    assert not at.dataframe


@pytest.mark.parametrize("page", PAGES)
def test_a_token_the_api_no_longer_accepts_shows_an_error_naming_url_and_status(fake_api: FakeApi, page: str) -> None:
    at = open_page(page, token="revoked-token")

    assert len(at.error) == 1
    message = at.error[0].value
    assert f"{fake_api.url}/" in message
    assert "401 Unauthorized" in message
    assert "the API does not accept your token" in message and "sign out and in again" in message


def test_signed_out_the_sign_in_form_is_all_there_is(fake_api: FakeApi, monkeypatch: pytest.MonkeyPatch) -> None:
    # Tokens in the environment sign nobody in: whoever opens the page sees the sign-in form.
    monkeypatch.setenv("CARELOOP_API_TOKEN", TOKEN)
    monkeypatch.setenv("CARELOOP_ADMIN_TOKEN", TOKEN)
    at = AppTest.from_file(APP, default_timeout=30).run()

    assert at.title[0].value == "Sign in to CareLoop"
    assert at.text_input(key="sign_in_token").proto.type == at.text_input(key="sign_in_token").proto.PASSWORD
    assert not [b for b in at.button if b.key == "dev_sign_in"]
    assert not at.sidebar.button
    # Nothing but the health check may have been asked; nothing was asked with a token.
    assert all(authorization is None for _path, _query, authorization, _method in fake_api.requests)


def test_signing_in_with_a_token_shows_who_and_the_role(fake_api: FakeApi) -> None:
    at = AppTest.from_file(APP, default_timeout=30).run()
    at.text_input(key="sign_in_token").input(f"  {TOKEN} ")
    at.button[0].click().run()
    assert not at.exception, [e.value for e in at.exception]

    # A dispatcher lands on the queue.
    assert at.title[0].value == "Dispatch board"
    assert "**Zhang Wei**" in [m.value for m in at.sidebar.markdown]
    assert fake_api.asked("/whoami")
    assert fake_api.requests[-1][2] == f"Bearer {TOKEN}"

    at.button(key="sign_out").click().run()
    assert at.title[0].value == "Sign in to CareLoop"


def test_a_token_the_api_does_not_know_is_refused_at_sign_in(fake_api: FakeApi) -> None:
    at = AppTest.from_file(APP, default_timeout=30).run()
    at.text_input(key="sign_in_token").input("cl_disp_typo")
    at.button[0].click().run()

    assert at.error[0].value.startswith("The API does not know this token")
    assert at.title[0].value == "Sign in to CareLoop"


def test_the_developer_token_is_a_labelled_button_not_a_default(
    fake_api: FakeApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CARELOOP_DASHBOARD_DEV_TOKEN", TOKEN)
    at = AppTest.from_file(APP, default_timeout=30).run()

    assert at.title[0].value == "Sign in to CareLoop"
    assert "CARELOOP_DASHBOARD_DEV_TOKEN" in text_of(at)
    at.button(key="dev_sign_in").click().run()
    assert at.title[0].value == "Dispatch board"


def test_without_whoami_the_role_is_found_by_what_the_token_may_read(fake_api: FakeApi) -> None:
    fake_api.whoami = False
    fake_api.role = "dispatcher"
    at = AppTest.from_file(APP, default_timeout=30).run()
    at.text_input(key="sign_in_token").input(TOKEN)
    at.button[0].click().run()

    assert at.session_state[USER_KEY]["role"] == "dispatcher"
    assert not at.session_state[USER_KEY]["told_by_api"]


def test_unreachable_api_shows_an_error_naming_the_url(
    fake_api: FakeApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free_port = probe.getsockname()[1]
    monkeypatch.setenv("CARELOOP_API_URL", f"http://127.0.0.1:{free_port}")
    at = open_page("views/fleet.py")

    message = at.error[0].value
    assert f"Cannot reach the CareLoop API at http://127.0.0.1:{free_port}/health" in message
    assert "CARELOOP_API_URL" in message


def test_server_error_shows_status_and_detail(fake_api: FakeApi) -> None:
    fake_api.status_override = 500
    at = open_page("views/customers.py")

    assert at.error[0].value == (
        f"The CareLoop API at {fake_api.url}/customers answered 500 Internal Server Error: simulated failure"
    )


# ---------------------------------------------------------------- dispatch board


def orders_table(at: AppTest):
    return at.dataframe[0].value


def calls_table(at: AppTest):
    return at.dataframe[1].value


def click(at: AppTest, key: str) -> AppTest:
    at.button(key=key).click().run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_dispatch_board_lists_open_orders_most_urgent_first_with_time_left_and_overdue_marked(
    fake_api: FakeApi,
) -> None:
    at = open_page(DISPATCH)

    assert at.title[0].value == "Dispatch board"
    orders = orders_table(at)
    # The fake answers in id order; the board puts the least time left first, and leaves out the completed #20.
    assert list(orders["order"]) == ["#21", "#23", "#22"]
    assert list(orders["SLA"]) == ["overdue", "due soon", "ok"]
    assert list(orders["time left"]) == ["overdue by 2 h", "3 h 20 min left", "2 d 4 h left"]
    assert list(orders["technician"]) == ["–", "Liu Yang", "Ma Li"]
    assert list(orders["status"]) == ["new", "assigned", "in progress"]
    values = metric_values(at)
    assert (values["Open orders"], values["Overdue"], values["Due soon"], values["Unassigned"]) == ("3", "1", "1", "1")
    assert fake_api.asked("/service-orders")[-1]["status"] == "open"
    # The unfiltered queue and the list the filters' choices come from are one request, not two.
    assert len(fake_api.asked("/service-orders")) == 1

    calls = calls_table(at)
    # Open calls, the one callable now first; the blocked one is apart, with the contact policy's reason.
    assert list(calls["call"]) == ["#31", "#32"]
    # Due 20 min before the fake's clock started; minutes pass while the tests run.
    assert calls["due"][0].startswith("due now (for ") and calls["due"][1].startswith("in 2 h")
    assert list(calls["phone"]) == ["+86 138 0000 0000"] * 2
    assert values["Calls due now"] == "1"
    assert "refreshes by itself every 30 s" in text_of(at)
    assert at.dataframe[-1].value["why not"][0] == "the device has no registered owner to call"
    assert not at.error


def test_dispatch_board_filters_by_region_skill_and_priority(fake_api: FakeApi) -> None:
    at = open_page(DISPATCH)

    choose(at, "Region", "west")
    assert fake_api.asked("/service-orders")[-1]["region"] == "west"
    assert fake_api.asked("/call-tasks")[-1]["region"] == "west"
    assert list(orders_table(at)["order"]) == ["#22"]
    # West's one call is blocked by the contact policy: nothing to call.
    assert "No open calls." in [i.value for i in at.info]

    choose(at, "Region", "all regions")
    choose(at, "Priority", "urgent")
    assert fake_api.asked("/service-orders")[-1]["priority"] == "urgent"
    assert list(orders_table(at)["order"]) == ["#21"]
    # Priority is an order's: the call about order 21 stays, the call about no order goes.
    assert list(calls_table(at)["call"]) == ["#31"]

    choose(at, "Priority", "all priorities")
    choose(at, "Skill", "heating")
    assert fake_api.asked("/service-orders")[-1]["skill"] == "heating"
    assert list(orders_table(at)["order"]) == ["#23"]
    assert not at.error


def test_opening_an_order_shows_device_owner_explanation_telemetry_and_proposed_technicians(
    fake_api: FakeApi,
) -> None:
    at = open_page(DISPATCH)

    assert at.header[0].value == "Order #21 · Fan motor stalled (E21)"
    # The picker names what never changes, so a label cannot drift away from the chosen order as time passes.
    assert at.selectbox(key="order_choice").options == [
        "#21 · RH-000123 · Fan motor stalled (E21)", "#23 · OV-000001 · Oven heats slowly",
        "#22 · RH-000777 · Grease filter due for cleaning"]
    assert metric_values(at)["SLA"] == "overdue by 2 h"
    assert at.query_params["order"] == "21"
    text = text_of(at)
    assert "**Owner** Li Wei · **Phone** +86 138 0000 0000" in text
    assert [link.proto.query_string for link in at.page_link] == ["device=RH-000123", "customer=7", "detection=3"]
    # The detection's explanation, drawn as on the Detections page.
    assert "**open fault E21 (fan motor stall)**" in text
    assert "**fault** · :green[met]  \nopen fault E21 (fan motor stall)" in text

    # One chart per metric, from either side of the opening (26 h ago), not from the last day.
    assert len(charts(at)) == 2
    asked = fake_api.asked("/devices/RH-000123/telemetry")[-1]
    order = fake_api.order("21")
    opened = datetime.fromisoformat(order["opened_at"].replace("Z", "+00:00"))
    since, until = (datetime.fromisoformat(asked[name]) for name in ("since", "until"))
    assert abs(since - (opened - timedelta(hours=6))) < timedelta(minutes=1)
    assert abs(until - (opened + timedelta(hours=6))) < timedelta(minutes=2)
    assert "metric" not in asked and asked["bucket"] == "5m"

    proposals = at.dataframe[2].value
    assert list(proposals["technician"]) == ["Liu Yang", "Ma Li"]
    assert proposals["why"][0].startswith("skill motor; home region east")
    buttons = {b.label for b in at.button}
    # A new order may be scheduled or cancelled (assigned is the assign buttons); completing is not offered.
    assert {"Assign with this window", "Assign, soonest free window", "Mark scheduled", "Cancel order"} <= buttons
    assert not buttons & {"Start work", "Back to assigned", "Complete order"}
    assert not at.error


def test_assigning_a_proposed_technician_posts_them_with_their_window(fake_api: FakeApi) -> None:
    at = open_page(DISPATCH)
    at.selectbox(key="technician_21").select(2).run()
    click(at, "assign_window_21")

    window = proposals_for(fake_api.order("21"))[1]
    assert fake_api.posted("/service-orders/21/assign") == [
        {"technician_id": 2, "start": window["window_start"], "end": window["window_end"]}
    ]
    assert at.success[0].value.startswith("Order #21 is assigned to Ma Li, visit ")
    # The cache was cleared: the queue reads the new state.
    row = orders_table(at).set_index("order").loc["#21"]
    assert (row["technician"], row["status"]) == ("Ma Li", "assigned")
    assert metric_values(at)["Unassigned"] == "0"
    assert not at.error


def test_assigning_the_soonest_window_sends_only_the_technician(fake_api: FakeApi) -> None:
    at = open_page(DISPATCH)
    click(at, "assign_soonest_21")

    assert fake_api.posted("/service-orders/21/assign") == [{"technician_id": 1}]
    assert at.success[0].value.startswith("Order #21 is assigned to Liu Yang")


def test_a_refused_assignment_shows_the_apis_reason(fake_api: FakeApi) -> None:
    reason = "technician 1 cannot take 2026-12-01 09:00 UTC: overlaps order 23 (09:00 to 11:00)"
    fake_api.refuse["/service-orders/21/assign"] = reason
    at = open_page(DISPATCH)
    click(at, "assign_window_21")

    assert [e.value for e in at.error] == [f"Not done: {reason}"]
    assert not at.success
    assert fake_api.order("21")["status"] == "new"


def test_lifecycle_buttons_are_the_allowed_transitions_and_move_the_order(fake_api: FakeApi) -> None:
    at = open_page(DISPATCH, order="23")

    assert at.header[0].value == "Order #23 · Oven heats slowly"
    labels = {b.label for b in at.button}
    assert {"Start work", "Mark scheduled", "Cancel order"} <= labels
    assert "Back to assigned" not in labels and "Complete order" not in labels

    at.text_input(key="note_23").input("technician on the way")
    click(at, "move_23_in_progress")

    assert fake_api.posted("/service-orders/23/status") == [{"status": "in_progress", "note": "technician on the way"}]
    assert at.success[0].value == "Order #23 is now in progress."
    # In progress, it may be completed: the form is there now, and going back to assigned.
    labels = {b.label for b in at.button}
    assert {"Complete order", "Back to assigned", "Cancel order"} <= labels
    history = next(table.value for table in at.dataframe if "change" in table.value.columns)
    assert history["change"].tolist() == ["opened", "status"]
    assert history["who"].tolist()[-1] == "Zhang Wei (dispatcher)"


def test_a_transition_the_order_has_left_shows_the_apis_reason(fake_api: FakeApi) -> None:
    at = open_page(DISPATCH, order="23")
    # Someone else started the work meanwhile; this page still offers what was allowed when it read the order.
    fake_api.order("23")["status"] = "in_progress"
    click(at, "move_23_scheduled")

    assert at.error[0].value == "Not done: order 23 is in_progress; it may go to completed, assigned, cancelled, " \
                                "not scheduled"


def test_completing_an_order_in_progress_posts_outcome_parts_cost_paid_and_rating(fake_api: FakeApi) -> None:
    at = open_page(DISPATCH, order="22")

    at.text_area[0].input("Cleaned the grease filter, replaced a seal")
    next(t for t in at.text_input if t.label == "Parts used").input("grease filter, seal ,")
    at.number_input[0].set_value(45.5)
    at.checkbox[0].check()
    next(box for box in at.selectbox if box.label == "Customer's rating").select(4)
    next(b for b in at.button if b.label == "Complete order").click().run()
    assert not at.exception, [e.value for e in at.exception]

    assert fake_api.posted("/service-orders/22/complete") == [{
        "outcome": "Cleaned the grease filter, replaced a seal", "parts": ["grease filter", "seal"],
        "cost": "45.50", "paid": True, "rating": 4,
    }]
    assert at.success[0].value == "Order #22 is completed."
    assert "#22" not in list(orders_table(at)["order"])


def test_recording_that_the_customer_was_reached_closes_the_call(fake_api: FakeApi) -> None:
    at = open_page(DISPATCH)
    assert "Hello Li Wei, this is CareLoop service calling about your range hood" in at.info[0].value
    text = text_of(at)
    assert "### Call Li Wei · +86 138 0000 0000" in text
    assert "consent to service calls by phone; 14:00 in Asia/Shanghai is daytime" in text

    at.text_input(key="call_notes_31").input("Wednesday morning suits")
    click(at, "call_31_reached")

    assert fake_api.posted("/call-tasks/31/outcome") == [{"outcome": "reached", "notes": "Wednesday morning suits"}]
    assert at.success[0].value == "Call #31 to Li Wei: reached; the call is done."
    assert list(calls_table(at)["call"]) == ["#32"]


def test_a_call_back_is_recorded_for_the_chosen_time(fake_api: FakeApi) -> None:
    at = open_page(DISPATCH)
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).date()
    at.date_input(key="call_back_day_31").set_value(tomorrow)
    at.time_input(key="call_back_time_31").set_value(time(10, 30))
    click(at, "call_31_call_back")

    assert fake_api.posted("/call-tasks/31/outcome") == [
        {"outcome": "call_back", "retry_at": f"{tomorrow.isoformat()}T10:30:00+00:00"}
    ]
    assert at.success[0].value == (
        f"Call #31 to Li Wei: call back; call again {tomorrow:%a %d %b} 10:30."
    )
    # Still open, now due tomorrow: the other call is first.
    assert list(calls_table(at)["call"]) == ["#32", "#31"]


def test_a_marketer_has_no_dispatch_board(fake_api: FakeApi) -> None:
    fake_api.role = "marketer"
    at = signed_in("marketer").run()

    # The page is not in a marketer's navigation at all: there is nothing to switch to.
    with pytest.raises(ValueError, match="Could not find a navigation page"):
        at.switch_page(DISPATCH)
    assert not fake_api.asked("/service-orders")
    assert not {b.label for b in at.button} & {"Assign with this window", "Assign, soonest free window", "Reached"}


def test_a_dispatcher_sees_the_board_a_technician_their_orders_without_assigning_or_calling(
    fake_api: FakeApi,
) -> None:
    at = open_page(DISPATCH, role="dispatcher")
    assert at.title[0].value == "Dispatch board"
    assert {"Assign with this window", "Reached"} <= {b.label for b in at.button}

    fake_api.role = "technician"
    asked_for_technicians = len(fake_api.asked("/technicians"))
    at = open_page(DISPATCH, role="technician")
    assert at.title[0].value == "My orders"
    at.selectbox(key="order_choice").select("23").run()
    labels = {b.label for b in at.button}
    assert "Start work" in labels
    assert not labels & {"Assign with this window", "Assign, soonest free window", "Reached", "Call back then"}
    assert len(fake_api.asked("/technicians")) == asked_for_technicians
    assert not at.error


def test_dispatch_board_shows_a_server_error_instead_of_a_traceback(fake_api: FakeApi) -> None:
    fake_api.status_override = 500
    at = open_page(DISPATCH)

    assert at.error[0].value == (
        f"The CareLoop API at {fake_api.url}/technicians answered 500 Internal Server Error: simulated failure"
    )
    assert not at.dataframe



def test_a_technician_sees_their_own_name_and_no_dispatcher_items(fake_api: FakeApi) -> None:
    fake_api.role = "technician"
    fake_api.orders = [o for o in fake_api.orders if o.get("technician_id") == 1]
    at = open_page(DISPATCH, role="technician", technician_id=1)

    orders = at.dataframe[0].value
    assert set(orders["technician"]) == {"Liu Yang"}
    assert "Unassigned" not in metric_values(at) and "Calls due now" not in metric_values(at)
    assert not {"Region", "Skill"} & {box.label for box in at.selectbox}
    assert "Calls to make" not in [s.value for s in at.subheader]
    assert metric_values(at)["Technician"] == "Liu Yang"
    assert not at.error


def test_a_technician_without_orders_is_told_a_dispatcher_assigns_them(fake_api: FakeApi) -> None:
    fake_api.role = "technician"
    fake_api.orders = []
    at = open_page(DISPATCH, role="technician", technician_id=1)
    assert [i.value for i in at.info] == [
        "No order is assigned to you yet; a dispatcher assigns orders from the dispatch board."]


def test_dispatch_board_puts_the_due_time_beside_the_time_left(fake_api: FakeApi) -> None:
    at = open_page(DISPATCH, role="dispatcher")
    assert list(at.dataframe[0].value.columns)[:3] == ["SLA", "time left", "due"]


def test_telemetry_charts_draw_a_point_on_every_reading_and_plain_axis_numbers(fake_api: FakeApi) -> None:
    at = open_page("views/device.py", device="RH-000123")
    spec = json.loads(charts(at)[0].proto.spec)
    marks = {layer["mark"]["type"] if isinstance(layer["mark"], dict) else layer["mark"] for layer in spec["layer"]}
    assert {"line", "point"} <= marks
    assert spec["layer"][0]["encoding"]["y"]["axis"]["format"] == ",~r"


def test_a_fault_is_never_pushed_off_the_detections_list_by_hundreds_of_reminders(fake_api: FakeApi) -> None:
    fault = next(d for d in fake_api.detections if d["rule_id"] == "hood-fan-stall")
    reminder = next(d for d in fake_api.detections if d["rule_id"] == "oven-offline")
    newer = datetime.fromisoformat(fault["opened_at"]) + timedelta(minutes=1)
    # 250 reminders newer than the fault: the newest 200 of all are reminders only.
    reminders = [{**reminder, "id": 100 + n, "status": "open", "cleared_at": None, "actions": [],
                  "opened_at": (newer + timedelta(seconds=n)).isoformat()} for n in range(250)]
    fake_api.detections = reminders + [fault]
    at = open_page(DETECTIONS)

    listing = at.dataframe[0].value
    assert listing.iloc[0][["severity", "kind", "rule"]].tolist() == ["critical", "service", "hood-fan-stall"]
    # One request for the list, most urgent first, and one count of the critical ones: none per rule.
    listings = [q for q in fake_api.asked("/detections") if q.get("limit") == "200"]
    assert len(listings) == 1 and listings[0]["order"] == "urgent"
    assert not any(q.get("rule_id") for q in fake_api.asked("/detections"))
    assert metric_values(at)["Critical open"] == "1"
    choose(at, "Kind", "service")
    assert list(at.dataframe[0].value["rule"]) == ["hood-fan-stall"]


def test_a_technician_with_nothing_assigned_is_told_what_their_detections_are(fake_api: FakeApi) -> None:
    fake_api.role = "technician"
    fake_api.detections = []
    at = open_page(DETECTIONS, role="technician", technician_id=1)
    assert "assigned to you" in at.info[0].value
    assert "no rule has found" not in at.info[0].value
