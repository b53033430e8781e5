"""The new pages against the real API over a seeded database, per role: what is shown, and what each control does.

The dashboard runs in-process (Streamlit's AppTest), the API on a port of its own (conftest.api_url), signed in
through the sign-in form with a token of the role, as a person does."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from streamlit.testing.v1 import AppTest

from careloop.auth import create_token
from dashboard.session import pages_for
from offers import service as offers_service
from offers.models import Redemption
from tests.factories import make_customer, make_device

pytestmark = pytest.mark.integration
APP = Path(__file__).resolve().parents[2] / "dashboard" / "app.py"
OFFERS, RULES, CUSTOMERS = "views/offers.py", "views/rules.py", "views/customers.py"
MARKETING_EMAIL = [{"purpose": "marketing", "channel": "email", "granted": True},
                   {"purpose": "service", "channel": "phone", "granted": True}]


def sign_in(token: str) -> AppTest:
    """The dashboard, signed in through its form with `token`."""
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.text_input(key="sign_in_token").input(token)
    at.button[0].click().run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def open_page(token: str, page: str) -> AppTest:
    at = sign_in(token)
    at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def text_of(at: AppTest) -> str:
    return "\n".join(str(e.value) for kind in ("markdown", "caption", "header", "subheader", "info", "success",
                                                "error", "warning") for e in getattr(at, kind))


def metric_values(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def charts(at: AppTest) -> list:
    return at.get("vega_lite_chart")


def login(database, role: str, name: str) -> str:
    with database.transaction() as conn:
        return create_token(conn, role=role, name=name)


# ---------------------------------------------------------------- offers and campaigns


@pytest.fixture
def campaign(conn) -> dict:
    """Trade-in coupons to 24 consenting owners (some held out at random by the template's 10%), two redeemed; a
    cleaning visit to an owner without consent (blocked); what the report then says."""
    now = dt.datetime.now(dt.UTC)
    issued = []
    for number in range(24):
        owner = make_customer(conn, name=f"Owner {number}", email=f"owner{number}@example.com", timezone="UTC",
                              consents=MARKETING_EMAIL)
        device = make_device(conn, owner=owner.id, purchased_on="2016-03-01")
        outcome = offers_service.issue_offer(conn, template_code="trade-in", customer_id=owner.id,
                                             device_id=device.id, key=f"dashboard:trade-in:{number}", now=now)
        if outcome.offer is not None:
            issued.append((owner, outcome.offer))
    for owner, offer in issued[:2]:
        offers_service.redeem(conn, offer.code, Redemption(customer_id=owner.id, amount=Decimal("900")), now=now)
    silent = make_customer(conn, name="No Consent", email="silent@example.com", timezone="UTC", consents=[])
    hood = make_device(conn, owner=silent.id)
    blocked = offers_service.issue_offer(conn, template_code="member-cleaning", customer_id=silent.id,
                                         device_id=hood.id, key="dashboard:blocked", now=now).offer
    conn.commit()
    assert blocked is not None and blocked.status == "blocked"
    return {"issued": len(issued), "blocked": blocked}


def test_a_marketer_sees_what_each_template_issued_and_its_uplift_against_the_holdout(
    real_api, database, campaign
) -> None:
    at = open_page(login(database, "marketer", "Max Marketer"), OFFERS)

    assert at.title[0].value == "Offers and campaigns"
    values = metric_values(at)
    assert values["Offered"] == str(campaign["issued"] + 1)
    assert values["Redeemed"] == "2"
    assert values["Revenue"] == "1,800.00"
    assert values["Blocked"] == "1"
    # Issued is what the contact policy let out: the blocked offer (and any held) is offered, never issued.
    assert int(values["Issued"]) == int(values["Offered"]) - int(values["Held"]) - 1
    report = next(t.value for t in at.dataframe if "template" in t.value.columns and "offered" in t.value.columns)
    trade_in = report.set_index("template").loc["trade-in"]
    assert (trade_in["offered"], trade_in["redeemed"]) == (campaign["issued"], 2)
    assert trade_in["issued"] == trade_in["offered"] - trade_in["held"] - trade_in["blocked"]
    cleaning = report.set_index("template").loc["member-cleaning"]
    assert (cleaning["offered"], cleaning["blocked"], cleaning["issued"]) == (1, 1, 0)
    # Counts per template as bars, uplift with its interval, and why the contact policy held offers back.
    assert len(charts(at)) == 3
    assert "Uplift against the holdout, with its 95% interval" in text_of(at)
    held = [c for c in charts(at) if "why" in str(c.proto.spec)]
    assert held and "consent" in str(held[0].proto.datasets or held[0].proto.spec)
    assert not at.error


def test_a_marketer_changes_a_template_and_the_api_keeps_it(real_api, database, campaign) -> None:
    at = open_page(login(database, "marketer", "Max Marketer"), OFFERS)
    at.selectbox(key="template_choice").select("consumables").run()
    form = next(number for number in at.number_input if number.label == "Valid for (days)")
    form.set_value(45)
    next(b for b in at.button if b.label == "Save template").click().run()

    assert not at.exception and not at.error
    assert at.success[0].value.startswith("Template consumables is saved")
    admin = {"Authorization": "Bearer admin-token-for-the-dashboard-tests"}
    saved = httpx.get(f"{real_api}/offer-templates/consumables", headers=admin, timeout=10).json()
    assert saved["validity_days"] == 45


def test_a_template_the_api_refuses_is_not_saved_and_says_why(real_api, database, campaign) -> None:
    at = open_page(login(database, "marketer", "Max Marketer"), OFFERS)
    at.selectbox(key="template_choice").select("consumables").run()
    next(t for t in at.text_input if t.label == "Subject").input("{value} off for {password}")
    next(b for b in at.button if b.label == "Save template").click().run()

    assert at.error[0].value.startswith("Not saved: subject: ")
    assert "password" in at.error[0].value
    assert not at.success


def test_a_dispatcher_reads_offers_and_templates_but_changes_no_template_and_sees_no_report(
    real_api, database, campaign
) -> None:
    at = open_page(login(database, "dispatcher", "Dee Dispatcher"), OFFERS)

    assert at.title[0].value == "Offers and campaigns"
    assert "Campaign results" not in [s.value for s in at.subheader]
    assert "Templates are changed by marketers." in text_of(at)
    assert not [b for b in at.button if b.label == "Save template"]
    assert not [box for box in at.selectbox if box.key == "template_choice"]
    assert metric_values(at)["Blocked"] == "1"
    assert not at.error


# ---------------------------------------------------------------- rules


FAN_STALL = {
    "id": "hood-stall",
    "description": "Fan motor stalled",
    "applies_to": {"kind": "range_hood"},
    "when": {"fault": {"codes": ["E21"]}},
    "then": [{"open_service_order": {"type": "repair", "priority": "urgent", "sla": "24h", "skill": "motor"}}],
    "severity": "critical",
}
BIRTHDAY_COUPON = {
    "id": "birthday-coupon-soon",
    "description": "A coupon a week before the owner's birthday",
    "when": {"birthday": {"within": "7d"}},
    "then": [{"offer": {"template": "birthday-coupon"}}],
    "severity": "info",
}


@pytest.fixture
def stalled_hoods(conn, database) -> list[str]:
    """The fan-stall rule, and two hoods whose fans stalled yesterday, one of them restarted two hours later."""
    from careloop.mqtt import events_topic
    from rules.engine import Engine
    from rules.service import create_rule
    from tests.helpers import event, inbound, store

    create_rule(conn, FAN_STALL)
    create_rule(conn, BIRTHDAY_COUPON)
    hoods = [make_device(conn).id for _ in range(2)]
    conn.commit()
    stalled = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0) - dt.timedelta(hours=30)
    messages = [inbound(events_topic(hood), event(1, at=stalled, kind="fault", code="E21"), stalled)
                for hood in hoods]
    messages.append(inbound(events_topic(hoods[0]), event(2, at=stalled + dt.timedelta(hours=2), kind="fault_cleared",
                                                          code="E21"), stalled + dt.timedelta(hours=2)))
    store(database, messages, now=stalled + dt.timedelta(hours=2))
    Engine(database).sweep()
    return hoods


def test_rules_are_listed_with_their_state_and_how_often_they_fired(real_api, database, stalled_hoods) -> None:
    at = open_page(login(database, "dispatcher", "Dee Dispatcher"), RULES)

    assert at.title[0].value == "Rules"
    listing = at.dataframe[0].value.set_index("rule")
    assert listing.loc["hood-stall", "enabled"]
    # The engine ran once, now: the hood whose fan restarted has no open fault to find.
    assert listing.loc["hood-stall", "fired"] == 1
    assert listing.loc["hood-stall", "when"] == "fault"
    assert listing.loc["hood-stall", "then"] == "open service order"
    assert not at.error


def test_a_backtest_over_a_chosen_range_is_drawn(real_api, database, stalled_hoods) -> None:
    at = open_page(login(database, "dispatcher", "Dee Dispatcher"), RULES)
    at.selectbox(key="rule_choice").select("hood-stall").run()
    today = dt.datetime.now(dt.UTC).date()
    at.date_input(key="backtest_range_hood-stall").set_value((today - dt.timedelta(days=2), today))
    next(b for b in at.button if b.label == "Run backtest").click().run()

    assert not at.exception and not at.error
    values = metric_values(at)
    assert values["Devices"] == "2"
    assert int(values["Would have opened"]) >= 2
    assert "evaluated every 1 hour" in text_of(at)
    # Opened and cleared over time, and each device's span.
    assert len(charts(at)) == 2


def test_a_dispatcher_disables_a_fault_rule_and_the_api_keeps_it(real_api, database, stalled_hoods) -> None:
    at = open_page(login(database, "dispatcher", "Dee Dispatcher"), RULES)
    at.selectbox(key="rule_choice").select("hood-stall").run()
    at.button(key="switch_hood-stall").click().run()

    assert at.success[0].value == "Rule hood-stall is now disabled."
    admin = {"Authorization": "Bearer admin-token-for-the-dashboard-tests"}
    stored = httpx.get(f"{real_api}/rules/hood-stall", headers=admin, timeout=10).json()
    assert (stored["enabled"], stored["version"]) == (False, 2)
    assert at.dataframe[0].value.set_index("rule").loc["hood-stall", "enabled"] == False  # noqa: E712


def test_a_marketer_switches_marketing_rules_and_is_offered_no_control_over_fault_rules(
    real_api, database, stalled_hoods
) -> None:
    at = open_page(login(database, "marketer", "Max Marketer"), RULES)
    at.selectbox(key="rule_choice").select("hood-stall").run()

    # The fault rule is a dispatcher's, as the API would say with a 403: no switch, no editor.
    assert not [b for b in at.button if b.key == "switch_hood-stall"]
    assert not [b for b in at.button if b.label == "Validate and save"]
    assert "A fault or maintenance rule: dispatchers change it" in text_of(at)
    # A marketer reads no detections: the list leaves out how often each fired, saying why.
    assert "fired" not in at.dataframe[0].value.columns
    assert ("How often each fired is not shown: your role reads the rules, not the detections they open."
            in text_of(at))
    assert "needs one of" not in text_of(at)

    at.selectbox(key="rule_choice").select("birthday-coupon-soon").run()
    at.button(key="switch_birthday-coupon-soon").click().run()
    assert at.success[0].value == "Rule birthday-coupon-soon is now disabled."


def test_an_edit_the_api_refuses_lists_its_mistakes_and_saves_nothing(real_api, database, stalled_hoods) -> None:
    at = open_page(login(database, "marketer", "Max Marketer"), RULES)
    at.selectbox(key="rule_choice").select("birthday-coupon-soon").run()
    text = at.text_area(key="rule_text_birthday-coupon-soon")
    text.input(text.value.replace("within: 7d", "within: 7x"))
    next(b for b in at.button if b.label == "Validate and save").click().run()

    assert at.error[0].value.startswith("Not saved: when.birthday.within: ")
    admin = {"Authorization": "Bearer admin-token-for-the-dashboard-tests"}
    assert httpx.get(f"{real_api}/rules/birthday-coupon-soon", headers=admin, timeout=10).json()["version"] == 1


def test_a_draft_is_backtested_before_saving_and_nothing_is_saved(real_api, database, stalled_hoods) -> None:
    at = open_page(login(database, "dispatcher", "Dee Dispatcher"), RULES)
    at.selectbox(key="rule_choice").select("hood-stall").run()
    today = dt.datetime.now(dt.UTC).date()
    text = at.text_area(key="rule_text_hood-stall")
    # A code neither hood reported (E31): the draft would have found nothing, where the stored rule finds both hoods.
    text.input(text.value.replace("- E21", "- E31"))
    at.date_input(key="draft_range_hood-stall").set_value((today - dt.timedelta(days=2), today))
    next(b for b in at.button if b.label == "Backtest").click().run()

    assert not at.exception and not at.error, [e.value for e in at.error]
    assert "**Backtest of the draft**, before saving it" in text_of(at)
    assert metric_values(at)["Would have opened"] == "0"
    assert "(the draft, not saved)" in text_of(at)
    assert "Over this range the rule would have opened nothing." in text_of(at)

    text = at.text_area(key="rule_text_hood-stall")
    text.input(text.value.replace("- E31", "- E21"))
    next(b for b in at.button if b.label == "Backtest").click().run()
    assert metric_values(at)["Devices"] == "2"
    # Opened and cleared per day, and each device's span, drawn for the draft.
    assert len(charts(at)) == 2
    admin = {"Authorization": "Bearer admin-token-for-the-dashboard-tests"}
    assert httpx.get(f"{real_api}/rules/hood-stall", headers=admin, timeout=10).json()["version"] == 1


def test_a_drafts_mistakes_are_shown_one_per_field_and_nothing_runs(real_api, database, stalled_hoods) -> None:
    at = open_page(login(database, "marketer", "Max Marketer"), RULES)
    at.selectbox(key="rule_choice").select("birthday-coupon-soon").run()
    text = at.text_area(key="rule_text_birthday-coupon-soon")
    text.input(text.value.replace("within: 7d", "within: 7x").replace("severity: info", "severity: loud"))
    next(b for b in at.button if b.label == "Backtest").click().run()

    errors = sorted(e.value for e in at.error)
    assert len(errors) == 2, errors
    assert errors[0].startswith("Not run: severity: ") and errors[1].startswith("Not run: when.birthday.within: ")
    assert "Backtest of the draft" not in text_of(at)


# ---------------------------------------------------------------- customer 360


def test_customer_360_shows_tier_points_consents_and_one_timeline(real_api, conn, database) -> None:
    owner = make_customer(conn, name="Rosa Diaz", email="rosa@example.com", timezone="UTC", consents=MARKETING_EMAIL)
    hood = make_device(conn, owner=owner.id)
    offers_service.issue_offer(conn, template_code="member-cleaning", customer_id=owner.id, device_id=hood.id,
                               key="dashboard:360", now=dt.datetime.now(dt.UTC))
    conn.commit()
    bought = httpx.post(f"{real_api}/customers/{owner.id}/purchases", json={"amount": "1200", "key": "order-77"},
                        headers={"Authorization": "Bearer admin-token-for-the-dashboard-tests"}, timeout=10)
    assert bought.status_code == 200, bought.text
    at = sign_in(login(database, "dispatcher", "Dee Dispatcher"))
    at.switch_page(CUSTOMERS).run()
    at.text_input[0].input("Rosa").run()

    assert at.header[0].value == "Rosa Diaz"
    values = metric_values(at)
    assert values["Tier"] == "silver"
    assert int(values["Points"].replace(",", "")) > 0
    assert values["Spend, last year"] == "1,200.00"
    assert values["Offers"] == "1"
    consents = next(t.value for t in at.dataframe if t.value.index.name == "purpose")
    assert consents.loc["marketing", "email"] == "given"
    timeline = next(t.value for t in at.dataframe if list(t.value.columns) == ["when", "kind", "what"])
    assert {"offer", "spend"} <= set(timeline["kind"])
    assert len(charts(at)) == 1
    assert not at.error


def test_a_marketer_finds_customers_without_their_phone_or_links_to_devices(real_api, conn, database) -> None:
    owner = make_customer(conn, name="Rosa Diaz", email="rosa@example.com", timezone="UTC", consents=MARKETING_EMAIL)
    make_device(conn, owner=owner.id)
    conn.commit()
    at = sign_in(login(database, "marketer", "Max Marketer"))
    at.switch_page(CUSTOMERS).run()

    assert at.header[0].value == "Rosa Diaz"
    # Contact details are the hotline's: a marketer's page shows none (whatever the API answers).
    assert "+86 138 0000 0000" not in text_of(at) and "rosa@example.com" not in text_of(at)
    # A marketer has no device page, so the appliances are listed without links.
    assert not at.page_link
    # A marketer searches by name alone, and is shown no birthday column of empty values.
    assert at.text_input[0].placeholder == "name"
    listing = next(t.value for t in at.dataframe if "name" in t.value.columns)
    assert "birthday" not in listing.columns
    appliances = next(t.value for t in at.dataframe if "device" in t.value.columns)
    assert {"last seen", "messages missing", "purchased"} <= set(appliances.columns)
    assert not at.error


# ---------------------------------------------------------------- a technician's own orders


def test_a_technician_sees_only_the_orders_assigned_to_them_and_no_assignment_controls(
    real_api, conn, database
) -> None:
    from service_orders import service as orders_service
    from service_orders.models import TechnicianCreate

    owner = make_customer(conn, name="Chen Jie", timezone="UTC")
    hoods = [make_device(conn, owner=owner.id, region="east").id for _ in range(2)]
    always = {"work_days": [1, 2, 3, 4, 5, 6, 7], "work_start": dt.time(0, 0), "work_end": dt.time(23, 59),
              "daily_capacity": 8, "region": "east", "timezone": "UTC", "skills": ["motor"]}
    liu = orders_service.create_technician(conn, TechnicianCreate(name="Liu Yang", **always))
    ma = orders_service.create_technician(conn, TechnicianCreate(name="Ma Li", **always))
    technician = create_token(conn, role="technician", name="Liu Yang", technician_id=liu.id)
    conn.commit()
    admin = {"Authorization": "Bearer admin-token-for-the-dashboard-tests"}
    orders = []
    for hood, who, reason in ((hoods[0], liu, "Fan motor stalled"), (hoods[1], ma, "Fan is noisy")):
        opened = httpx.post(f"{real_api}/service-orders", headers=admin, timeout=10,
                            json={"device_id": hood, "skill": "motor", "reason": reason})
        assert opened.status_code == 201, opened.text
        assigned = httpx.post(f"{real_api}/service-orders/{opened.json()['id']}/assign", headers=admin, timeout=10,
                              json={"technician_id": who.id})
        assert assigned.status_code == 200, assigned.text
        orders.append(opened.json()["id"])

    at = sign_in(technician)

    assert at.title[0].value == "My orders"
    listed = at.dataframe[0].value
    assert list(listed["order"]) == [f"#{orders[0]}"]
    # Their own name (the API told it at sign-in), never "technician 1"; none of the dispatcher's items.
    assert list(listed["technician"]) == ["Liu Yang"]
    assert {m.label: m.value for m in at.metric}["Technician"] == "Liu Yang"
    assert not {"Unassigned", "Calls due now"} & {m.label for m in at.metric}
    assert not {"Region", "Skill"} & {box.label for box in at.selectbox}
    labels = {b.label for b in at.button}
    assert "Start work" in labels
    assert not labels & {"Assign with this window", "Assign, soonest free window", "Reached", "Call back then"}
    assert not at.error


def test_a_technician_with_no_order_is_told_a_dispatcher_assigns_them_on_every_page(real_api, conn) -> None:
    from service_orders import service as orders_service
    from service_orders.models import TechnicianCreate

    make_device(conn, owner=make_customer(conn, name="Chen Jie", timezone="UTC").id)
    always = {"work_days": [1, 2, 3, 4, 5, 6, 7], "work_start": dt.time(0, 0), "work_end": dt.time(23, 59),
              "daily_capacity": 8, "region": "east", "timezone": "UTC", "skills": ["motor"]}
    liu = orders_service.create_technician(conn, TechnicianCreate(name="Liu Yang", **always))
    technician = create_token(conn, role="technician", name="Liu Yang", technician_id=liu.id)
    conn.commit()

    at = sign_in(technician)
    assert [i.value for i in at.info] == [
        "No order is assigned to you yet; a dispatcher assigns orders from the dispatch board."]
    at.switch_page("views/detections.py").run()
    assert "assigned to you" in at.info[0].value
    at.switch_page("views/device.py").run()
    assert at.info[0].value.startswith("No device of an order assigned to you")
    assert not at.error


def test_a_device_shows_its_detections_with_their_reasons(real_api, database, stalled_hoods) -> None:
    at = open_page(login(database, "dispatcher", "Dee Dispatcher"), "views/device.py")
    at.text_input[0].input(stalled_hoods[1]).run()

    assert at.header[0].value == stalled_hoods[1]
    assert "Detections" in [s.value for s in at.subheader]
    detections = next(t.value for t in at.dataframe if "rule" in t.value.columns)
    assert list(detections["rule"]) == ["hood-stall"]
    assert detections["why"][0].startswith("open fault E21")
    assert not at.error


def test_a_devices_chart_draws_its_fault_and_detection_and_lists_its_events(real_api, database, stalled_hoods) -> None:
    from careloop.mqtt import telemetry_topic
    from tests.helpers import inbound, reading, store

    stalled = stalled_hoods[1]  # its fan stalled 30 h ago and the engine opened hood-stall for it
    now = dt.datetime.now(dt.UTC)
    start = now.replace(minute=0, second=0, microsecond=0) - dt.timedelta(hours=36)
    store(database, [inbound(telemetry_topic(stalled), reading(10 + n, at=start + dt.timedelta(hours=3 * n),
                                                                 fan_current_a=0.6), now) for n in range(12)], now=now)
    at = open_page(login(database, "dispatcher", "Dee Dispatcher"), "views/device.py")
    at.text_input[0].input(stalled).run()
    next(box for box in at.selectbox if box.label == "Range").select("7 d").run()
    assert not at.exception and not at.error

    events = next(t.value for t in at.dataframe if "what" in t.value.columns)
    assert list(events["what"]) == ["fault E21 (fan motor stall)"]
    assert "In this range: 1 event, 1 detection opened and 0 cleared" in text_of(at)
    [chart] = charts(at)
    labels = [layer for layer in json.loads(chart.proto.spec)["layer"] if layer["mark"].get("type") == "text"]
    assert labels and labels[0]["encoding"]["text"]["field"] == "label"


@pytest.mark.parametrize("role", ["admin", "dispatcher", "marketer", "technician"])
def test_every_page_of_every_role_reads_what_it_needs_without_an_error(
    real_api, conn, database, stalled_hoods, campaign, role: str
) -> None:
    from service_orders import service as orders_service
    from service_orders.models import TechnicianCreate

    liu = orders_service.create_technician(conn, TechnicianCreate(name="Liu Yang", skills=["motor"], region="east"))
    token = (create_token(conn, role=role, name=f"A {role}", technician_id=liu.id) if role == "technician"
             else create_token(conn, role=role, name=f"A {role}"))
    conn.commit()
    at = sign_in(token)

    for name in pages_for(role):
        at.switch_page(f"views/{name}.py").run()
        assert not at.exception, (name, [e.value for e in at.exception])
        assert not at.error, (name, [e.value for e in at.error])


# ---------------------------------------------------------------- the windows coming (GET /fleet/forecast)

TRADE_IN_AT_FIVE = {"id": "trade-in-at-five", "applies_to": {"kind": "range_hood"}, "severity": "info",
                    "when": {"age": {"at_least": "5y"}}}


@pytest.mark.parametrize("role", ["admin", "dispatcher", "marketer"])
def test_the_fleet_page_counts_the_trade_in_windows_coming_per_region(real_api, conn, database, role) -> None:
    from rules import service as rules_service

    rules_service.create_rule(conn, TRADE_IN_AT_FIVE)
    today = dt.date.today()
    five_years = dt.timedelta(days=5 * 365)
    # Five years old in 3 and 12 days (east, north), in 60 days (outside the 30), and 10 days ago (due already).
    for days, region in ((3, "east"), (12, "north"), (60, "east"), (-10, "east")):
        make_device(conn, purchased_on=(today - five_years + dt.timedelta(days=days)).isoformat(), region=region)
    conn.commit()

    at = open_page(login(database, role, f"A {role}"), "views/fleet.py")

    assert metric_values(at)["Trade-in windows, next 30 days"] == "2"
    table = next(t.value for t in at.dataframe if "Region" in t.value.columns)
    assert table.to_dict("records") == [
        {"Region": "east", "Maintenance": 0, "Trade-in": 1, "Total": 1},
        {"Region": "north", "Maintenance": 0, "Trade-in": 1, "Total": 1},
    ]
    assert "Windows opening per week, by region" in text_of(at)
    assert not at.error
