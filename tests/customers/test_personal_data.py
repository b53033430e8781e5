"""Personal data over HTTP, against the real database: a customer corrected (PATCH, a 422 naming the field for a
bad value) and erased (DELETE) everywhere CareLoop wrote them, shown by a real pg_dump of the database that holds
neither their e-mail address nor their phone number, while telemetry, orders and offers still count."""

from __future__ import annotations

import datetime as dt
import importlib.util
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from careloop.app import create_app
from careloop.auth import create_token
from careloop.db import fetch_all, fetch_value
from customers import service as customers_service
from customers.models import CustomerUpdate
from offers import service as offers_service
from offers.models import WebhookCreate
from service_orders import service as orders
from service_orders.models import Actor, OrderOpen
from tests.factories import make_customer, make_device

pytestmark = pytest.mark.integration

ADMIN = {"Authorization": "Bearer admin-token-for-customer-tests"}
EMAIL, PHONE = "Erase.Me.7f3k@example.com", "+86 139 1234 5678"
DIGITS = "8613912345678"
NOW = dt.datetime.now(dt.UTC).replace(hour=12, minute=0, second=0, microsecond=0)
CONSENTS = [{"purpose": "marketing", "channel": channel, "granted": True} for channel in ("email", "sms")] + [
    {"purpose": "service", "channel": "phone", "granted": True}]


@pytest.fixture
def client(database, mqtt_url) -> TestClient:
    return TestClient(create_app(database, admin_token=ADMIN["Authorization"].split()[1], mqtt_url=mqtt_url))


def headers(conn, role: str) -> dict:
    token = create_token(conn, role=role, name=f"a {role}")
    conn.commit()
    return {"Authorization": f"Bearer {token}"}


def test_a_customer_is_corrected_field_by_field_and_a_bad_value_is_a_422_naming_it(client, conn) -> None:
    customer = make_customer(conn, email="old@example.com")
    conn.commit()
    desk, path = headers(conn, "dispatcher"), f"/customers/{customer.id}"
    assert client.patch(path, json={"phone": "+86 139 0000 1111"}, headers=headers(conn, "marketer")).status_code == 403
    corrected = client.patch(path, json={"email": "new@example.com", "region": None}, headers=desk)
    assert corrected.status_code == 200
    body = corrected.json()
    assert (body["email"], body["region"], body["name"], body["phone"]) == (
        "new@example.com", None, customer.name, customer.phone)
    assert client.patch(path, json={}, headers=desk).json() == body
    for bad, field in (({"email": "not-an-address"}, "email"), ({"name": None}, "name"), ({"name": ""}, "name"),
                       ({"timezone": "Mars/Olympus"}, "timezone"), ({"birthday": "2999-01-01"}, "birthday"),
                       ({"phone": "call me"}, "phone"), ({"preferred_channel": "fax"}, "preferred_channel"),
                       ({"consents": []}, "consents"), ({"owner": 1}, "owner")):
        refused = client.patch(path, json=bad, headers=desk)
        assert refused.status_code == 422, bad
        assert [m["loc"] for m in refused.json()["detail"]] == [["body", field]], refused.json()
    assert client.patch("/customers/999999", json={"region": "west"}, headers=desk).status_code == 404


def pg_dump_for(server_major: int) -> str | None:
    """A pg_dump that can dump a server of this major version (pg_dump refuses newer servers than itself): the
    machine's, the one the pgserver package ships beside the embedded PostgreSQL, or the one on PATH."""
    spec = importlib.util.find_spec("pgserver")
    candidates = [*Path("/usr/lib/postgresql").glob("*/bin/pg_dump"),
                  *([Path(spec.origin).parent / "pginstall" / "bin" / "pg_dump"] if spec and spec.origin else []),
                  *([Path(found)] if (found := shutil.which("pg_dump")) else [])]
    for candidate in candidates:
        if not candidate.exists():
            continue
        version = subprocess.run([str(candidate), "--version"], capture_output=True, text=True, timeout=30).stdout
        major = re.search(r"\(PostgreSQL\)\s*(\d+)", version)  # "pg_dump (PostgreSQL) 16.2"
        if major and int(major.group(1)) >= server_major:
            return str(candidate)
    return None


def test_an_erased_person_is_in_no_dump_of_the_database_while_telemetry_orders_and_offers_still_count(
    client, conn, database_url
) -> None:
    server_major = int(fetch_value(conn, "SHOW server_version_num")) // 10000
    pg_dump = pg_dump_for(server_major)
    if pg_dump is None:
        pytest.skip(f"no pg_dump of PostgreSQL {server_major} or newer (the machine's under /usr/lib/postgresql, "
                    "the pgserver package's, or on PATH)")
    person = make_customer(conn, name="Erase Me", email=EMAIL, phone=PHONE, timezone="UTC", consents=CONSENTS,
                           preferred_channel="sms")
    hood = make_device(conn, owner=person.id)
    with conn.cursor() as cursor:
        cursor.execute("INSERT INTO telemetry (ts, device_id, metric, value, seq) VALUES (%s, %s, 'run_hours', 1, 1)",
                       (NOW, hood.id))
        for payload, raw in ((f'{{"contact": "{EMAIL.lower()}"}}', None), ("{bad json", f"tel:{DIGITS}".encode()),
                             ('{"nobody": "here"}', None)):
            cursor.execute(
                "INSERT INTO quarantine (topic, device_id, reason, detail, payload, payload_bytes, dedup_key, "
                "payload_raw) VALUES ('careloop/v1/devices/x/events', 'x', 'bad_json', 'not JSON', %s, 10, %s, %s)",
                (payload, payload, raw))
    # an offer by text message (the gateway's body carries the phone), then one by e-mail (the address, the name)
    offers_service.create_webhook(conn, WebhookCreate(name="sms", url="http://127.0.0.1:9/sms", events=["offer.sms"]),
                                  allow_private_network=True)
    by_text = offers_service.issue_offer(conn, template_code="member-cleaning", customer_id=person.id,
                                         device_id=hood.id, key="erase:sms", now=NOW).offer
    customers_service.update_customer(conn, person.id, CustomerUpdate(preferred_channel="email"))
    by_mail = offers_service.issue_offer(conn, template_code="member-cleaning", customer_id=person.id,
                                         device_id=hood.id, key="erase:mail", now=NOW + dt.timedelta(days=8)).offer
    assert (by_text.channel, by_mail.channel) == ("sms", "email")
    order = orders.open_order(conn, OrderOpen(device_id=hood.id, skill="cleaning", type="maintenance",
                                              reason=f"owner asks to be called back on {PHONE}"),
                              actor=Actor(name="Zhang Wei", role="dispatcher"), now=NOW)
    orders.open_call_task(conn, device_id=hood.id, reason="grease filter due", key="erase:call", order_id=order.id,
                          now=NOW)
    customers_service.record_spend(conn, customer_id=person.id, amount=120, source="purchase", key="erase:shop",
                                   at=NOW)
    conn.commit()

    def dump() -> str:
        done = subprocess.run([pg_dump, "--no-owner", "--dbname", database_url], capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout

    # as text, and as the hex a dump writes bytea in (quarantine keeps raw bytes)
    marks = [form for mark in (EMAIL, EMAIL.lower(), PHONE, DIGITS) for form in (mark, mark.encode().hex())]
    before = dump()
    assert {EMAIL, EMAIL.lower(), PHONE, DIGITS.encode().hex()} <= {mark for mark in marks if mark in before}

    assert client.delete(f"/customers/{person.id}", headers=headers(conn, "dispatcher")).status_code == 403
    erased = client.delete(f"/customers/{person.id}", headers=ADMIN)
    assert erased.status_code == 200, erased.text
    assert erased.json()["erased_now"] is True and erased.json()["touched"]["quarantine"] == 2

    after = dump()
    assert [mark for mark in [*marks, "Erase Me"] if mark in after] == []

    # what stays is anonymous and still counts
    assert fetch_value(conn, "SELECT owner_id FROM devices WHERE id = %s", (hood.id,)) is None
    assert fetch_value(conn, "SELECT count(*) FROM telemetry WHERE device_id = %s", (hood.id,)) == 1
    assert fetch_value(conn, "SELECT count(*) FROM quarantine") == 1
    assert fetch_value(conn, "SELECT customer_id FROM service_orders WHERE id = %s", (order.id,)) == person.id
    assert [(o["status"], o["template"]) for o in fetch_all(
        conn, "SELECT o.status, t.code AS template FROM offers o JOIN offer_templates t ON t.id = o.template_id "
              "WHERE customer_id = %s ORDER BY o.id", (person.id,))] == [("blocked", "member-cleaning")] * 2
    assert fetch_value(conn, "SELECT count(*) FROM outbox WHERE status = 'pending'") == 0
    report = offers_service.offers_report(conn)
    assert (report.total.treated, report.total.blocked, report.total.issued) == (2, 2, 0)  # counted, never sent
    stub = client.get(f"/customers/{person.id}", headers=ADMIN).json()
    assert (stub["name"], stub["email"], stub["phone"], stub["consents"]) == ("erased customer", None, None, [])
    assert stub["erased_at"] is not None
    assert client.get("/customers", headers=ADMIN).json()["total"] == 0
    again = client.delete(f"/customers/{person.id}", headers=ADMIN).json()
    assert (again["erased_now"], again["erased_at"], again["touched"]) == (False, erased.json()["erased_at"], {})
    assert client.patch(f"/customers/{person.id}", json={"region": "east"}, headers=ADMIN).status_code == 409
    assert client.delete("/customers/999999", headers=ADMIN).status_code == 404
    later = offers_service.issue_offer(conn, template_code="member-cleaning", customer_id=person.id,
                                       device_id=None, key="erase:later", now=NOW + dt.timedelta(days=30))
    assert (later.kind, later.reason) == ("skipped", "the customer was erased")


def test_a_marketer_sees_no_contact_details_and_cannot_search_by_them(client, conn) -> None:
    customer = make_customer(conn, name="Li Na", email="li.na@example.com", phone="+86 138 0000 1234")
    conn.commit()
    marketer, desk = headers(conn, "marketer"), headers(conn, "dispatcher")
    seen = client.get(f"/customers/{customer.id}", headers=marketer).json()
    assert (seen["name"], seen["email"], seen["phone"], seen["birthday"]) == ("Li Na", "l***@example.com", "***34",
                                                                              None)
    assert client.get(f"/customers/{customer.id}", headers=desk).json()["email"] == "li.na@example.com"
    picture = client.get(f"/customers/{customer.id}/360", headers=marketer)
    assert picture.status_code == 200 and "li.na@" not in picture.text and "0000 1234" not in picture.text
    listed = client.get("/customers", params={"q": "Li"}, headers=marketer).json()
    assert listed["total"] == 1 and "li.na@" not in str(listed)
    assert client.get("/customers", params={"q": "li.na@"}, headers=marketer).json()["total"] == 0
    assert client.get("/customers", params={"q": "li.na@"}, headers=desk).json()["total"] == 1
    assert client.post("/customers", json={"name": "New"}, headers=marketer).status_code == 403
