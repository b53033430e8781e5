"""The permission table, asserted over every route the app serves: each role, with its own and with others' ids.

The routes come from the app itself, so a route added without an entry in careloop.auth.PERMISSIONS fails here
(and is refused to everyone until it has one)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pytest
from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient

from careloop.app import create_app
from careloop.auth import access_to, create_token
from careloop.db import fetch_all, fetch_value
from careloop.mqtt import events_topic
from offers import service as offers_service
from rules.engine import Engine
from tests.factories import make_customer, make_device
from tests.helpers import event, inbound, store

pytestmark = pytest.mark.integration
ADMIN_TOKEN = "admin-token-for-the-matrix-0123456789"
ROLES = ("admin", "dispatcher", "marketer", "technician", "technician-without-technician", "customer")
# Words only the foreign customer, device and technician carry: none may appear in a technician's or the own
# customer's answer (nor the foreign customer's offer code: World.foreign_code).
FOREIGN_MARKERS = ("Foreign Owner", "foreign.owner@example.com", "+86 131 9999 0000", "RH-FOREIGN", "Ma Foreign")
OWN_MARKERS = ("Own Owner", "own.owner@example.com", "+86 137 1111 0000", "RH-OWN", "Liu Own")
# Contact details of both customers: none may appear in a marketer's answer (customers/ masks them).
CONTACT_DETAILS = ("own.owner@example.com", "+86 137 1111 0000", "foreign.owner@example.com", "+86 131 9999 0000",
                   "1980-05-17")
UNKNOWN = "999999"
FAN_STALL = {
    "id": "hood-stall",
    "applies_to": {"kind": "range_hood"},
    "when": {"fault": {"codes": ["E21"]}},
    "then": [{"open_service_order": {"type": "repair", "priority": "urgent", "sla": "24h", "skill": "motor"}}],
    "severity": "critical",
}


def app_operations(app) -> list[tuple[str, str]]:
    """Every (method, path template) the app answers; HEAD goes with GET."""
    return sorted({(method, route.path) for route in iter_route_contexts(app.routes)
                   for method in (route.methods or ()) if method != "HEAD"})


class RecordingBrokerAccounts:
    """The broker's side of device credentials, kept in memory: the matrix is about who may ask."""

    def __init__(self) -> None:
        self.passwords: dict[str, str] = {}

    def set_device_passwords(self, passwords: dict[str, str]) -> None:
        self.passwords.update(passwords)


def test_every_route_of_the_app_has_an_entry_in_the_permission_table() -> None:
    app = create_app(None, admin_token=None, mqtt_url=None)
    missing = [f"{method} {path}" for method, path in app_operations(app) if access_to(method, path) is None]
    assert not missing, f"routes with no entry in careloop.auth.PERMISSIONS (refused to everyone): {missing}"


@dataclass
class World:
    client: TestClient
    headers: dict[str, dict[str, str]]
    own: dict[str, str]
    foreign: dict[str, str]

    @property
    def foreign_code(self) -> str:
        return self.foreign["code"]


# Operations whose empty body would be refused before the handler narrows (422): a body that reaches it, so that
# another's object is probed for real.
BODIES = {("POST", "/offers/{code}/redeem"): lambda values: {"customer_id": int(values["customer_id"])}}


@pytest.fixture
def world(database, conn) -> World:
    """Two customers with a device and an offer each, each device with an order: the own one assigned to the
    technician whose token is tested, the foreign one to another; a detection on each device. The own customer's
    token is the customer token tested."""
    client = TestClient(create_app(database, admin_token=ADMIN_TOKEN, mqtt_url=None,
                                   broker_accounts=RecordingBrokerAccounts()))
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    own_owner = make_customer(conn, name="Own Owner", email="own.owner@example.com", phone="+86 137 1111 0000")
    foreign_owner = make_customer(conn, name="Foreign Owner", email="foreign.owner@example.com",
                                  phone="+86 131 9999 0000")
    make_device(conn, id="RH-OWN-1", owner=own_owner.id)
    make_device(conn, id="RH-FOREIGN-2", owner=foreign_owner.id)
    conn.commit()
    technicians = {}
    for name in ("Liu Own", "Ma Foreign"):
        answer = client.post("/technicians", headers=admin, json={
            "name": name, "skills": ["motor"], "region": "east", "timezone": "UTC", "work_days": [1, 2, 3, 4, 5, 6, 7],
            "work_start": "00:00", "work_end": "23:59", "daily_capacity": 8})
        assert answer.status_code == 201, answer.text
        technicians[name] = answer.json()["id"]
    assert client.post("/rules", json=FAN_STALL, headers=admin).status_code == 201
    now = dt.datetime.now(dt.UTC)
    for device_id in ("RH-OWN-1", "RH-FOREIGN-2"):
        store(database, [inbound(events_topic(device_id), event(1, at=now - dt.timedelta(minutes=5), kind="fault",
                                                                 code="E21"), now)], now=now)
    Engine(database).sweep()
    ids: dict[str, dict[str, str]] = {}
    for side, device_id, customer, technician in (("own", "RH-OWN-1", own_owner, "Liu Own"),
                                                  ("foreign", "RH-FOREIGN-2", foreign_owner, "Ma Foreign")):
        order = client.post("/service-orders", headers=admin,
                            json={"device_id": device_id, "skill": "motor", "reason": "fan stalls"})
        assert order.status_code == 201, order.text
        assigned = client.post(f"/service-orders/{order.json()['id']}/assign", headers=admin,
                               json={"technician_id": technicians[technician]})
        assert assigned.status_code == 200, assigned.text
        detection_id = fetch_value(conn, "SELECT id FROM detections WHERE device_id = %s", (device_id,))
        assert detection_id is not None
        offer = offers_service.issue_offer(conn, template_code="member-cleaning", customer_id=customer.id,
                                           device_id=device_id, key=f"matrix:{side}", now=now).offer
        ids[side] = {
            "device_id": device_id, "customer_id": str(customer.id), "order_id": str(order.json()["id"]),
            "detection_id": str(detection_id), "technician_id": str(technicians[technician]), "code": offer.code,
        }
    conn.commit()
    with database.transaction() as writer:
        headers = {
            role: {"Authorization": f"Bearer {create_token(writer, role=role, name=f'{role} person')}"}
            for role in ("dispatcher", "marketer")
        }
        headers["technician"] = {"Authorization": "Bearer " + create_token(
            writer, role="technician", name="Liu Own", technician_id=int(ids["own"]["technician_id"]))}
        headers["technician-without-technician"] = {"Authorization": "Bearer " + create_token(
            writer, role="technician", name="nobody in particular")}
        headers["customer"] = {"Authorization": "Bearer " + create_token(
            writer, role="customer", name="own owner's app", customer_id=int(ids["own"]["customer_id"]))}
    headers["admin"] = admin
    # Ids that are not objects of anyone's (rules, tokens): the same on both sides. Deletions always get an id
    # that does not exist, so the matrix changes nothing it later reads.
    shared = {"rule_id": "hood-stall", "task_id": UNKNOWN, "token_id": UNKNOWN,
              "endpoint_id": UNKNOWN, "token": "no-such-unsubscribe-token"}
    return World(client, headers, {**ids["own"], **shared}, {**ids["foreign"], **shared})


def concrete(path: str, values: dict[str, str], method: str) -> str:
    """The path with each parameter replaced by its value (an id that exists nowhere for a deletion)."""
    filled = path
    while "{" in filled:
        name = filled[filled.index("{") + 1 : filled.index("}")]
        assert name in values, f"the matrix has no value for path parameter {name!r} of {path}: add one to World"
        filled = filled.replace("{" + name + "}", UNKNOWN if method == "DELETE" else values[name], 1)
    return filled


def is_table_refusal(answer) -> bool:
    """A 403 from the permission table (not one a handler gives about what a document does)."""
    if answer.status_code != 403:
        return False
    detail = str(answer.json().get("detail", ""))
    return "needs one of" in detail or "permission table" in detail


def test_every_route_answers_each_role_as_the_permission_table_says(world: World) -> None:
    client = world.client
    failures: list[str] = []
    operations = app_operations(client.app)
    for method, path in operations:
        access = access_to(method, path)
        if access is None:
            continue  # the test above names it
        for role in ROLES:
            for side, values in (("own", world.own), ("foreign", world.foreign)):
                url = concrete(path, values, method)
                # a list asked about the other side's objects must not answer them either
                params = ({"device_id": values["device_id"], "customer_id": values["customer_id"]}
                          if method == "GET" and "{" not in path else None)
                body = {} if method in ("POST", "PUT", "PATCH") else None
                if (method, path) in BODIES:
                    body = BODIES[method, path](values)
                headers = world.headers[role]
                answer = client.request(method, url, headers=headers, params=params, json=body)
                what = f"{role} {method} {url} ({side})"
                token_role = "technician" if role.startswith("technician") else role
                # a customer's operation that names an object: theirs or a 404, whether the table checks it (a
                # device, themselves) or the handler narrows it ("own": an offer's code)
                scoped = ((access.technician not in (None, "own") and token_role == "technician")
                          or (access.customer is not None and "{" in path and token_role == "customer"))
                if answer.status_code >= 500:
                    failures.append(f"{what}: {answer.status_code} {answer.text[:200]}")
                elif access.public:
                    if answer.status_code in (401, 403):
                        failures.append(f"{what}: public, answered {answer.status_code}")
                elif not access.admits(token_role):
                    if not is_table_refusal(answer):
                        failures.append(f"{what}: expected the table's 403, got {answer.status_code} "
                                        f"{answer.text[:200]}")
                elif scoped and (side == "foreign" or role == "technician-without-technician"):
                    if answer.status_code != 404:
                        failures.append(f"{what}: expected 404 for another's object, got {answer.status_code} "
                                        f"{answer.text[:200]}")
                elif answer.status_code == 401 or is_table_refusal(answer):
                    failures.append(f"{what}: admitted by the table, answered {answer.status_code} "
                                    f"{answer.text[:200]}")
                elif scoped and method == "GET" and answer.status_code != 200:
                    failures.append(f"{what}: their own object, answered {answer.status_code} {answer.text[:200]}")
                if role == "marketer":
                    shown = [detail for detail in CONTACT_DETAILS if detail in answer.text]
                    if shown:
                        failures.append(f"{what}: a marketer was shown contact details {shown}")
                if token_role in ("technician", "customer"):
                    markers = (FOREIGN_MARKERS + (world.foreign_code,) if role in ("technician", "customer")
                               else FOREIGN_MARKERS + OWN_MARKERS)
                    # a refusal may repeat the id it was asked about: that is the caller's, not data
                    echoed = url if answer.status_code in (403, 404) else ""
                    leaked = [marker for marker in markers if marker in answer.text and marker not in echoed]
                    if leaked:
                        failures.append(f"{what}: answered another's data {leaked}")
    assert len(operations) > 40
    assert not failures, f"{len(failures)} answers against the permission table:\n" + "\n".join(failures)


def test_a_technician_sees_their_own_order_device_detection_and_customer(world: World) -> None:
    client, own, headers = world.client, world.own, world.headers["technician"]
    devices = client.get("/devices", headers=headers).json()
    assert [device["id"] for device in devices["items"]] == ["RH-OWN-1"] and devices["total"] == 1
    detections = client.get("/detections", headers=headers).json()
    assert [detection["device_id"] for detection in detections["items"]] == ["RH-OWN-1"]
    orders = client.get("/service-orders", headers=headers).json()
    assert [order["device_id"] for order in orders["items"]] == ["RH-OWN-1"]
    customer = client.get(f"/customers/{own['customer_id']}", headers=headers)
    assert customer.status_code == 200 and customer.json()["phone"] == "+86 137 1111 0000"
    # for the visit, who to ask for and the number to call: nothing else of the person
    assert (customer.json()["email"], customer.json()["birthday"], customer.json()["consents"]) == (None, None, [])
    acknowledged = client.post(f"/detections/{own['detection_id']}/acknowledge", headers=headers)
    assert acknowledged.status_code == 200 and acknowledged.json()["acknowledged_by"] == "Liu Own"
    foreign = client.post(f"/detections/{world.foreign['detection_id']}/acknowledge", headers=headers)
    assert foreign.status_code == 404
    assert client.get("/customers", headers=headers).status_code == 403
    assert client.get(f"/customers/{own['customer_id']}/360", headers=headers).status_code == 403
    assert client.get("/ingest/quarantine", headers=headers).status_code == 403
    assert client.post("/rules/hood-stall/backtest", headers=headers, json={
        "start": "2026-01-01T00:00:00Z", "end": "2026-01-02T00:00:00Z"}).status_code == 403


def test_once_the_visit_is_over_the_technician_no_longer_sees_the_customer_device_or_detection(world: World) -> None:
    client, own, headers = world.client, world.own, world.headers["technician"]
    started = client.post(f"/service-orders/{own['order_id']}/status", headers=headers, json={"status": "in_progress"})
    assert started.status_code == 200, started.text
    done = client.post(f"/service-orders/{own['order_id']}/complete", headers=headers,
                       json={"outcome": "cleaned the filter"})
    assert done.status_code == 200, done.text
    assert client.get(f"/service-orders/{own['order_id']}", headers=headers).status_code == 200  # their own work
    for path in (f"/customers/{own['customer_id']}", f"/devices/{own['device_id']}",
                 f"/detections/{own['detection_id']}"):
        assert client.get(path, headers=headers).status_code == 404, path
    assert client.get("/devices", headers=headers).json()["total"] == 0


def test_a_technician_token_naming_no_technician_sees_nothing(world: World) -> None:
    client, headers = world.client, world.headers["technician-without-technician"]
    for path in ("/devices", "/detections", "/service-orders", "/call-tasks"):
        answer = client.get(path, headers=headers)
        assert answer.status_code == 200 and answer.json()["items"] == [], path
    assert client.get(f"/devices/{world.own['device_id']}", headers=headers).status_code == 404


MARKETING_RULE = {
    "id": "member-cleaning-offer",
    "applies_to": {"kind": "range_hood"},
    "when": {"age": {"at_least": "1y"}},
    "then": [{"offer": {"template": "member-cleaning"}}],
}


def test_a_marketer_writes_only_rules_whose_actions_are_all_offers_and_a_dispatcher_only_the_others(
    world: World,
) -> None:
    client, marketer, dispatcher = world.client, world.headers["marketer"], world.headers["dispatcher"]
    template = client.post("/offer-templates", headers=marketer, json={
        "code": "member-cleaning", "name": "Member cleaning", "category": "service", "value_kind": "percent",
        "value": "10", "validity_days": 30, "channels": ["email"], "subject": "{value} off a cleaning",
        "reason": "your {appliance} is due for cleaning", "message": "Hello {name}: code {code} until {expires}."})
    assert template.status_code in (201, 409), template.text  # the offers migration may ship it already
    disabled = client.put("/rules/hood-stall", headers=marketer, json={**FAN_STALL, "enabled": False})
    assert disabled.status_code == 403 and "fault or maintenance rule" in disabled.json()["detail"]
    # nor may a marketer turn the fault rule into an offer rule: as stored, it opens service orders
    taken = client.put("/rules/hood-stall", headers=marketer,
                       json={**FAN_STALL, "then": [{"offer": {"template": "member-cleaning"}}]})
    assert taken.status_code == 403 and "as stored" in taken.json()["detail"], taken.text
    calling = client.post("/rules", headers=marketer, json={
        **MARKETING_RULE, "id": "calls", "then": [{"call_customer": {"reason": "say hello"}}]})
    assert calling.status_code == 403 and "call_customer" in calling.json()["detail"]
    created = client.post("/rules", headers=marketer, json=MARKETING_RULE)
    assert created.status_code == 201, created.text
    off = {**MARKETING_RULE, "enabled": False}
    assert client.put(f"/rules/{MARKETING_RULE['id']}", headers=marketer, json=off).status_code == 200
    refused = client.put(f"/rules/{MARKETING_RULE['id']}", headers=dispatcher, json=off)
    assert refused.status_code == 403 and "marketing rule" in refused.json()["detail"]
    assert client.put("/rules/hood-stall", headers=dispatcher,
                      json={**FAN_STALL, "enabled": False}).status_code == 200


def test_each_rule_version_records_the_person_who_wrote_it(world: World, conn) -> None:
    world.client.put("/rules/hood-stall", headers=world.headers["dispatcher"], json={**FAN_STALL, "enabled": False})
    assert fetch_value(conn, "SELECT changed_by FROM rules WHERE id = 'hood-stall'") == "dispatcher person"
    versions = fetch_all(conn, "SELECT version, changed_by FROM rule_versions WHERE rule_id = 'hood-stall' "
                               "ORDER BY version")
    assert [(row["version"], row["changed_by"]) for row in versions][-2:] == [(1, "admin"),
                                                                               (2, "dispatcher person")]
