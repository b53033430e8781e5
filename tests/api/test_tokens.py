"""Tokens: who they speak for (/whoami), expiry, listing without the token, revocation, and the limit on
refused tokens per address."""

from __future__ import annotations

import datetime as dt

import pytest
from fastapi.testclient import TestClient

from careloop.app import create_app
from careloop.auth import create_token
from careloop.db import execute
from careloop.deps import ApiLimits

pytestmark = pytest.mark.integration
ADMIN = "admin-token-for-tests-0123456789"


@pytest.fixture
def client(database, mqtt_url) -> TestClient:
    return TestClient(create_app(database, admin_token=ADMIN, mqtt_url=mqtt_url))


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def test_whoami_names_the_role_the_person_the_technician_and_the_expiry(client, database) -> None:
    with database.transaction() as conn:
        execute(conn, "INSERT INTO technicians (id, name, region) VALUES (7, 'Zhao Lei', 'east')")
        token = create_token(conn, role="technician", name="zhao.lei", technician_id=7,
                             expires_in=dt.timedelta(days=30))
    answer = client.get("/whoami", headers=bearer(token)).json()
    assert answer["role"] == "technician" and answer["name"] == "zhao.lei" and answer["technician_id"] == 7
    expires = dt.datetime.fromisoformat(answer["expires_at"])
    assert dt.timedelta(days=29) < expires - dt.datetime.now(dt.UTC) <= dt.timedelta(days=30)
    admin = client.get("/whoami", headers=bearer(ADMIN)).json()
    assert admin == {"role": "admin", "name": "admin", "technician_id": None, "customer_id": None,
                     "expires_at": None}


def test_an_expired_token_is_a_401_saying_so(client, database) -> None:
    with database.transaction() as conn:
        token = create_token(conn, role="dispatcher", name="wu.min")
        execute(conn, "UPDATE api_tokens SET expires_at = now() - interval '1 minute'")
    answer = client.get("/whoami", headers=bearer(token))
    assert answer.status_code == 401 and "expired" in answer.json()["detail"]


def test_tokens_are_listed_without_the_token_and_revoked_at_once(client, database) -> None:
    created = client.post("/tokens", json={"role": "marketer", "name": "chen.jie", "expires_in": "7d"},
                          headers=bearer(ADMIN))
    assert created.status_code == 201
    token, token_id = created.json()["token"], created.json()["id"]
    assert client.get("/whoami", headers=bearer(token)).json()["name"] == "chen.jie"
    listed = client.get("/tokens", headers=bearer(ADMIN))
    assert listed.status_code == 200 and token not in listed.text
    assert [item["prefix"] for item in listed.json()["items"]] == [token[:12]]
    assert client.get("/tokens", headers=bearer(token)).status_code == 403
    revoked = client.delete(f"/tokens/{token_id}", headers=bearer(ADMIN))
    assert revoked.status_code == 200 and revoked.json()["revoked_by"] == "admin"
    refused = client.get("/whoami", headers=bearer(token))
    assert refused.status_code == 401 and "revoked" in refused.json()["detail"]
    assert client.delete("/tokens/424242", headers=bearer(ADMIN)).status_code == 404


def test_a_token_for_an_unknown_technician_or_a_lifetime_out_of_bounds_is_a_422_naming_the_field(client) -> None:
    unknown = client.post("/tokens", json={"role": "technician", "name": "x", "technician_id": 999},
                          headers=bearer(ADMIN))
    assert unknown.status_code == 422 and "technician_id" in str(unknown.json()["detail"])
    forever = client.post("/tokens", json={"role": "dispatcher", "name": "x", "expires_in": "20000d"},
                          headers=bearer(ADMIN))
    assert forever.status_code == 422 and "expires_in" in str(forever.json()["detail"])


def test_an_address_that_sends_too_many_refused_tokens_gets_429_with_retry_after(database, mqtt_url) -> None:
    client = TestClient(create_app(database, admin_token=ADMIN, mqtt_url=mqtt_url,
                                   limits=ApiLimits(auth_failures_per_minute=5)))
    for _ in range(5):
        assert client.get("/whoami", headers=bearer("cl_guess_" + "x" * 20)).status_code == 401
    blocked = client.get("/whoami", headers=bearer("cl_guess_" + "y" * 20))
    assert blocked.status_code == 429 and int(blocked.headers["Retry-After"]) >= 1
    # someone else's guesses from the same address (a proxy, an office) do not lock out a valid token
    assert client.get("/whoami", headers=bearer(ADMIN)).status_code == 200
    assert client.get("/health").status_code == 200
