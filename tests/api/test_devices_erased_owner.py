"""A device cannot be registered to an erased customer: the anonymous stub left by DELETE /customers/{id} owns
nothing."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from careloop.app import create_app
from tests.factories import make_customer

pytestmark = pytest.mark.integration
ADMIN = {"Authorization": "Bearer admin-token-for-device-owners"}


def test_registering_a_device_to_an_erased_customer_is_a_422_naming_the_owner(database, conn) -> None:
    client = TestClient(create_app(database, admin_token=ADMIN["Authorization"].split()[1], mqtt_url=None))
    erased = make_customer(conn, name="Gone Soon")
    present = make_customer(conn, name="Still Here")
    conn.commit()
    assert client.delete(f"/customers/{erased.id}", headers=ADMIN).status_code == 200
    device = {"id": "RH-ERASED-OWNER-1", "model": "RH-900", "purchased_on": "2021-03-01", "region": "east"}
    refused = client.post("/devices", headers=ADMIN, json={**device, "owner": erased.id})
    assert refused.status_code == 422, refused.text
    assert refused.json()["detail"].startswith("owner: ") and "erased" in refused.json()["detail"]
    assert client.get(f"/devices/{device['id']}", headers=ADMIN).status_code == 404
    # the same device goes to a customer who is there, or to nobody
    assert client.post("/devices", headers=ADMIN, json={**device, "owner": present.id}).status_code == 201
    ownerless = client.post("/devices", headers=ADMIN, json={**device, "id": "RH-ERASED-OWNER-2"})
    assert ownerless.status_code == 201 and ownerless.json()["owner"] is None
    unknown = client.post("/devices", headers=ADMIN, json={**device, "id": "RH-ERASED-OWNER-3", "owner": 999999})
    assert unknown.status_code == 422 and "no customer with id 999999" in unknown.json()["detail"]
