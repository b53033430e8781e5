"""Limits: rule documents' size, backtests' window, concurrency and time, coupon redemptions per token."""

from __future__ import annotations

import asyncio
import json

import pytest
from fastapi import HTTPException
from fastapi.testclient import TestClient

from careloop.app import create_app
from careloop.deps import ApiLimits, ExpensiveWork, rate_limited
from rules.specs import MAX_RULE_ACTIONS, MAX_RULE_BYTES, MAX_RULE_CONDITIONS, MAX_RULE_DEPTH

pytestmark = pytest.mark.integration
ADMIN = {"Authorization": "Bearer admin-token-for-the-limits-0123456789"}
STALL = {"fault": {"codes": ["E21"]}}
RULE = {"id": "hood-big", "applies_to": {"kind": "range_hood"}, "when": STALL}


@pytest.fixture
def client(database) -> TestClient:
    return TestClient(create_app(database, admin_token=ADMIN["Authorization"].split()[1], mqtt_url=None))


def nested(depth: int) -> dict:
    condition: dict = STALL
    for _ in range(depth):
        condition = {"all": [condition]}
    return condition


@pytest.mark.parametrize(
    ("document", "limit", "loc"),
    [
        ({**RULE, "when": {"any": [STALL] * (MAX_RULE_CONDITIONS + 1)}}, "MAX_RULE_CONDITIONS", ["when"]),
        ({**RULE, "when": nested(MAX_RULE_DEPTH + 1)}, "MAX_RULE_DEPTH", ["when", *["all", 0] * MAX_RULE_DEPTH]),
        ({**RULE, "then": [{"call_customer": {"reason": "x"}}] * (MAX_RULE_ACTIONS + 1)}, "MAX_RULE_ACTIONS",
         ["then"]),
        ({**RULE, "description": "x" * MAX_RULE_BYTES}, "MAX_RULE_BYTES", []),
    ],
)
def test_a_rule_beyond_a_size_limit_is_a_422_naming_the_limit(client, document, limit, loc) -> None:
    answer = client.post("/rules", content=json.dumps(document), headers={**ADMIN, "Content-Type": "application/json"})
    assert answer.status_code == 422, answer.text
    [error] = answer.json()["detail"]
    assert limit in error["msg"] and error["loc"] == loc


def test_a_rule_within_the_limits_is_taken(client) -> None:
    document = {**RULE, "when": nested(MAX_RULE_DEPTH)}
    assert client.post("/rules", json=document, headers=ADMIN).status_code == 201


def test_a_backtest_over_more_than_366_days_is_a_422_naming_the_limit(client) -> None:
    assert client.post("/rules", json=RULE, headers=ADMIN).status_code == 201
    answer = client.post("/rules/hood-big/backtest", headers=ADMIN,
                         json={"start": "2024-01-01T00:00:00Z", "end": "2025-06-01T00:00:00Z", "step": "1d"})
    assert answer.status_code == 422 and "MAX_BACKTEST_WINDOW" in answer.text


def test_backtests_run_at_most_per_role_at_once_and_the_rest_are_a_429(database) -> None:
    work = ExpensiveWork(database.dsn, per_role=2)
    with work.slot("dispatcher"), work.slot("dispatcher"):
        with pytest.raises(HTTPException) as refused, work.slot("dispatcher"):
            pass
        assert refused.value.status_code == 429 and refused.value.headers["Retry-After"] == "5"
        assert "2 backtests of role 'dispatcher'" in refused.value.detail
        with work.slot("marketer"):  # another role keeps its own share
            pass
    with work.slot("dispatcher"):  # freed again
        pass


def test_a_backtest_past_its_time_limit_is_a_422_saying_so(database) -> None:
    work = ExpensiveWork(database.dsn, per_role=1, timeout_s=0.2)

    def sleepy(conn) -> None:
        with conn.cursor() as cursor:
            cursor.execute("SELECT pg_sleep(2)")

    with pytest.raises(HTTPException) as refused:
        asyncio.run(work.run("dispatcher", sleepy))
    assert refused.value.status_code == 422 and "time limit of 0.2s" in refused.value.detail
    work.close()


def test_coupon_redemptions_are_limited_per_token_with_retry_after(database) -> None:
    client = TestClient(create_app(database, admin_token=ADMIN["Authorization"].split()[1], mqtt_url=None,
                                   limits=ApiLimits(redemptions_per_minute=3)))
    answers = [client.post("/offers/NO-SUCH-CODE/redeem", headers=ADMIN, json={}).status_code for _ in range(4)]
    assert answers[:3] != [429] * 3 and answers[3] == 429
    limited = client.post("/offers/NO-SUCH-CODE/redeem", headers=ADMIN, json={})
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1


def test_the_rate_limited_dependency_counts_per_token_and_answers_429(database) -> None:
    app = create_app(database, admin_token=ADMIN["Authorization"].split()[1], mqtt_url=None,
                     limits=ApiLimits(redemptions_per_minute=2))

    @app.get("/limited-for-the-test", dependencies=[rate_limited("redeem")])
    def limited() -> dict:
        return {}

    client = TestClient(app)
    assert [client.get("/limited-for-the-test", headers=ADMIN).status_code for _ in range(3)] == [200, 200, 429]
