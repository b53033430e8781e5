"""Each dashboard page renders against a real (tiny) HTTP API, and API failures read clearly."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from dashboard_fake_api import TOKEN, FakeApi
from streamlit.testing.v1 import AppTest

APP = Path(__file__).resolve().parents[2] / "dashboard" / "app.py"
PAGES = ["pages/fleet.py", "pages/device.py", "pages/customers.py", "pages/quarantine.py", "pages/detections.py"]
DETECTIONS = "pages/detections.py"


def open_page(page: str, **query_params: str) -> AppTest:
    """Run the app from its entry file, then show `page` (a path relative to app.py)."""
    at = AppTest.from_file(APP, default_timeout=30)
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


def choose(at: AppTest, label: str, option: str) -> AppTest:
    """Pick `option` in the selectbox labelled `label` and run the page again."""
    next(box for box in at.selectbox if box.label == label).select(option).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_fleet_page_shows_health_badges_counts_and_online_share_chart(fake_api: FakeApi) -> None:
    at = open_page("pages/fleet.py")

    assert at.title[0].value == "Fleet health"
    assert ":green-badge[" in text_of(at) and "API ok" in text_of(at)
    values = metric_values(at)
    assert values["Devices"] == "200"
    assert values["Online"] == "150"
    assert values["Missing seq"] == "17"
    assert values["Quarantined, last 24 h"] == "4"
    assert values["Readings, last 24 h"] == "345,678"
    assert len(charts(at)) == 1
    assert "range_hood: 100 of 120" in text_of(at)
    assert not at.error


def test_device_page_opens_linked_device_with_latest_values_and_metric_charts(fake_api: FakeApi) -> None:
    at = open_page("pages/device.py", device="RH-000123")

    assert at.header[0].value == "RH-000123"
    values = metric_values(at)
    # 2.6 A is above the model's valid maximum of 2 A, so it is flagged.
    assert values["⚠ fan_current_a"] == "2.6 A"
    assert values["run_hours"] == "812.4 h"
    assert values["Missing seq"] == "3"
    assert len(charts(at)) == 2
    asked = fake_api.asked("/devices/RH-000123/telemetry")
    assert {q["metric"] for q in asked} == {"fan_current_a", "run_hours"}
    assert all(q["bucket"] == "15m" and "since" in q for q in asked)
    assert at.page_link[0].proto.query_string == "customer=7"
    assert not at.error


def test_device_page_search_narrows_choice_and_bucket_is_sent(fake_api: FakeApi) -> None:
    at = open_page("pages/device.py")
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
    at = open_page("pages/device.py", device="NOPE-1")

    assert at.warning[0].value == "There is no device 'NOPE-1'."
    assert not at.error


def test_customers_page_shows_the_360_view(fake_api: FakeApi) -> None:
    at = open_page("pages/customers.py")

    assert at.header[0].value == "Li Wei"
    values = metric_values(at)
    assert values["Appliances"] == "2"
    assert values["Online"] == "1"
    consents, appliances = at.dataframe[1].value, at.dataframe[2].value
    assert consents.loc["service", "phone"] == "✅"
    assert consents.loc["marketing", "email"] == "❌"
    assert list(appliances["id"]) == ["RH-000123", "OV-000001"]
    assert [link.proto.query_string for link in at.page_link] == ["device=RH-000123", "device=OV-000001"]
    assert fake_api.asked("/customers/7/360")
    assert not at.error


def test_quarantine_page_charts_reasons_and_filters_messages(fake_api: FakeApi) -> None:
    at = open_page("pages/quarantine.py")

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
    assert list(listing.columns) == ["opened", "severity", "rule", "device", "model", "status", "reason", "id"]
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
    assert list(at.dataframe[0].value["id"]) == [2]
    assert "3 detections match; showing the newest 3, 1 of them warning." in text_of(at)

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
    assert "**usage** · :green[met]  \nrun hours grew by 212.4 since new, at least 180" in text
    assert "**threshold** · :green[met]  \nfan current is 2.6, above 2" in text
    usage_values, threshold_values = (table.value for table in at.table)
    assert usage_values.loc["current", "value"] == "812.4"
    assert usage_values.loc["since_at", "value"] == "–"
    assert threshold_values.loc["latest", "value"] == "2.6"
    assert metric_values(at)["Acknowledged by"] == "dispatcher, 4 h ago"
    assert list(at.dataframe[1].value["action"]) == ["offer"]
    assert [link.proto.query_string for link in at.page_link] == ["device=RH-000123", "customer=7"]
    # Only open detections can be acknowledged.
    assert not at.button
    assert at.query_params["detection"] == "2"
    assert not at.error


def test_detections_page_opens_a_linked_detection_even_outside_the_filters(fake_api: FakeApi) -> None:
    at = open_page(DETECTIONS, detection="1")

    assert at.header[0].value == "#1 · oven-offline"
    assert fake_api.asked("/detections/1")
    text = text_of(at)
    assert "**offline** · :green[met]  \noffline for 26h (since yesterday)" in text
    assert "**offline** · :red[not met]  \nonline, last seen 1m ago, less than 1d" in text
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
    assert not at.button


def test_acknowledged_detection_leaves_the_default_open_list(fake_api: FakeApi) -> None:
    at = open_page(DETECTIONS)
    at.button(key="acknowledge_3").click().run()

    assert at.success
    assert not at.dataframe
    assert at.info[0].value == "Nothing open: no rule has found anything new."
    assert metric_values(at)["Open"] == "0"


def test_acknowledge_refused_for_the_role_shows_the_api_error(fake_api: FakeApi) -> None:
    fake_api.role = "marketer"
    at = open_page(DETECTIONS)
    at.button(key="acknowledge_3").click().run()

    assert not at.exception
    message = at.error[0].value
    assert f"{fake_api.url}/detections/3/acknowledge answered 403 Forbidden" in message
    assert "the token's role may not do this" in message and "role 'marketer' may not do this" in message
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
def test_refused_token_shows_an_error_naming_url_and_status(
    fake_api: FakeApi, monkeypatch: pytest.MonkeyPatch, page: str
) -> None:
    monkeypatch.setenv("CARELOOP_API_TOKEN", "wrong-token")
    at = open_page(page)

    assert len(at.error) == 1
    message = at.error[0].value
    assert f"{fake_api.url}/" in message
    assert "401 Unauthorized" in message
    assert "the token was refused" in message and "CARELOOP_API_TOKEN" in message


def test_missing_token_says_none_is_configured(fake_api: FakeApi, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CARELOOP_API_TOKEN")
    at = open_page("pages/quarantine.py")

    assert "no token is configured" in at.error[0].value
    assert fake_api.requests[-1][2] is None


def test_admin_token_is_used_when_no_api_token_is_set(
    fake_api: FakeApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CARELOOP_API_TOKEN")
    monkeypatch.setenv("CARELOOP_ADMIN_TOKEN", TOKEN)
    at = open_page("pages/quarantine.py")

    assert not at.error
    assert fake_api.requests[-1][2] == f"Bearer {TOKEN}"


def test_unreachable_api_shows_an_error_naming_the_url(
    fake_api: FakeApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free_port = probe.getsockname()[1]
    monkeypatch.setenv("CARELOOP_API_URL", f"http://127.0.0.1:{free_port}")
    at = open_page("pages/fleet.py")

    message = at.error[0].value
    assert f"Cannot reach the CareLoop API at http://127.0.0.1:{free_port}/health" in message
    assert "CARELOOP_API_URL" in message


def test_server_error_shows_status_and_detail(fake_api: FakeApi) -> None:
    fake_api.status_override = 500
    at = open_page("pages/customers.py")

    assert at.error[0].value == (
        f"The CareLoop API at {fake_api.url}/customers answered 500 Internal Server Error: simulated failure"
    )
