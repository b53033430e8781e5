"""The dashboard's settings and formatting helpers, without any server."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pandas as pd
import pytest

from dashboard.client import DEFAULT_API_URL, ApiClient, ApiError, ApiSettings, load_api_settings
from dashboard.ui import bucket_for, duration_text, format_value, telemetry_chart, time_ago, time_left


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in ("CARELOOP_API_URL", "CARELOOP_API_TOKEN", "CARELOOP_ADMIN_TOKEN", "CARELOOP_DASHBOARD_DEV_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_settings_default_to_local_api_without_a_developer_token(clean_env: Path) -> None:
    settings = load_api_settings()
    assert (settings.base_url, settings.dev_token) == (DEFAULT_API_URL, None)


def test_api_and_admin_tokens_in_the_environment_are_not_the_dashboards(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (clean_env / ".env").write_text("CARELOOP_API_URL=http://api.example:9000/\nCARELOOP_ADMIN_TOKEN=from-file\n")
    monkeypatch.setenv("CARELOOP_API_TOKEN", "api-env")
    assert load_api_settings() == ApiSettings("http://api.example:9000", None)

    monkeypatch.setenv("CARELOOP_DASHBOARD_DEV_TOKEN", "dev-env")
    assert load_api_settings().dev_token == "dev-env"


def test_url_without_scheme_is_refused_naming_the_variable() -> None:
    with pytest.raises(ApiError, match="CARELOOP_API_URL must start with http:// or https://"):
        ApiClient("api:8000", "token").get("/health")


def test_post_sends_the_token_and_returns_the_answer() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"id": 3, "status": "acknowledged"})

    client = ApiClient("http://api", "token", transport=httpx.MockTransport(handler))
    assert client.acknowledge_detection(3) == {"id": 3, "status": "acknowledged"}
    assert (seen[0].method, seen[0].url.path) == ("POST", "/detections/3/acknowledge")
    assert seen[0].headers["Authorization"] == "Bearer token"


def test_forbidden_post_blames_the_role_not_the_token() -> None:
    transport = httpx.MockTransport(lambda _: httpx.Response(403, json={"detail": "role 'marketer' may not do this"}))
    with pytest.raises(ApiError, match="403 Forbidden: your role may not do this") as raised:
        ApiClient("http://api", "token", transport=transport).acknowledge_detection(3)
    assert raised.value.status == 403
    assert "role 'marketer' may not do this" in str(raised.value)


def test_timed_out_post_says_the_change_may_have_been_made() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    with pytest.raises(ApiError, match="did not answer in time.*may or may not have been made"):
        ApiClient("http://api", "token", transport=httpx.MockTransport(handler)).acknowledge_detection(3)


def test_conflict_on_post_carries_the_status_and_detail() -> None:
    transport = httpx.MockTransport(lambda _: httpx.Response(409, json={"detail": "detection 3 cleared"}))
    with pytest.raises(ApiError, match="409 Conflict: detection 3 cleared") as raised:
        ApiClient("http://api", "token", transport=transport).acknowledge_detection(3)
    assert raised.value.status == 409


@pytest.mark.parametrize(
    ("seconds_before", "expected"),
    [(5, "5 s ago"), (125, "2 min ago"), (7300, "2 h ago"), (3 * 86400 + 10, "3 d ago"), (-30, "just now")],
)
def test_time_ago_reads_like_a_person(seconds_before: int, expected: str) -> None:
    now = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
    moment = datetime.fromtimestamp(now.timestamp() - seconds_before, UTC)
    assert time_ago(moment.isoformat().replace("+00:00", "Z"), now=now) == expected


def test_time_ago_of_nothing_is_never() -> None:
    assert time_ago(None) == "never"


@pytest.mark.parametrize(
    ("value", "unit", "expected"),
    [(2.6, "A", "2.6 A"), (812.40, "h", "812.4 h"), (3.0, None, "3"), (12345, None, "12,345"),
     (None, "A", "–")],
)
def test_format_value_rounds_and_adds_the_unit(value: object, unit: str | None, expected: str) -> None:
    assert format_value(value, unit) == expected


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [(12000, "3 h 20 min left"), (-7200, "overdue by 2 h"), (-7260, "overdue by 2 h 1 min"),
     (187200, "2 d 4 h left"), (2 * 86400 + 300, "2 d left"), (45 * 60, "45 min left"), (30, "30 s left"),
     (None, "–")],
)
def test_time_left_reads_like_a_person(seconds: float | None, expected: str) -> None:
    assert time_left(seconds) == expected


def test_duration_text_keeps_two_neighbouring_units() -> None:
    assert duration_text(3 * 86400 + 5 * 3600 + 59 * 60) == "3 d 5 h"
    assert duration_text(-3600) == "1 h"


def test_service_order_changes_post_what_the_api_expects() -> None:
    seen: list[tuple[str, str, bytes]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.method, request.url.path, request.content))
        return httpx.Response(200, json={})

    client = ApiClient("http://api", "token", transport=httpx.MockTransport(handler))
    client.assign_order(21, 2, start="2026-12-01T09:00:00+00:00", end="2026-12-01T11:00:00+00:00")
    client.assign_order(21, 2)
    client.change_order_status(21, "in_progress", note=None)
    client.complete_order(21, outcome="fixed", parts=["fan"], cost="45.50", paid=True, rating=None)
    client.record_call_outcome(31, "call_back", retry_at="2026-12-01T10:30:00+00:00", notes="evening")
    bodies = [(method, path, json.loads(body)) for method, path, body in seen]
    assert bodies == [
        ("POST", "/service-orders/21/assign",
         {"technician_id": 2, "start": "2026-12-01T09:00:00+00:00", "end": "2026-12-01T11:00:00+00:00"}),
        ("POST", "/service-orders/21/assign", {"technician_id": 2}),
        ("POST", "/service-orders/21/status", {"status": "in_progress"}),
        ("POST", "/service-orders/21/complete",
         {"outcome": "fixed", "parts": ["fan"], "cost": "45.50", "paid": True, "rating": None}),
        ("POST", "/call-tasks/31/outcome",
         {"outcome": "call_back", "retry_at": "2026-12-01T10:30:00+00:00", "notes": "evening"}),
    ]


def test_conflict_keeps_the_apis_own_words_apart() -> None:
    reason = "technician 1 cannot take 2026-12-01 09:00 UTC: overlaps order 23"
    transport = httpx.MockTransport(lambda _: httpx.Response(409, json={"detail": reason}))
    with pytest.raises(ApiError) as raised:
        ApiClient("http://api", "token", transport=transport).assign_order(21, 1)
    assert (raised.value.status, raised.value.detail) == (409, reason)


def test_a_single_reading_is_drawn_as_a_point_on_a_padded_axis() -> None:
    one = pd.DataFrame({"ts": [pd.Timestamp("2026-11-30T19:10:00Z")], "value": [4490.774545]})
    spec = telemetry_chart(one, unit="rpm").to_dict()
    marks = [layer["mark"]["type"] for layer in spec["layer"]]
    assert marks == ["line", "point"]
    y = spec["layer"][0]["encoding"]["y"]
    low, high = y["scale"]["domain"]
    assert low < 4490.774545 < high
    assert y["axis"]["format"] == ",~r"


def test_the_bucket_follows_the_span_of_the_readings() -> None:
    assert bucket_for(5 * 60) is None  # a few minutes: every reading
    assert bucket_for(2 * 3600) == "1m"
    assert bucket_for(24 * 3600) == "15m"
    assert bucket_for(30 * 86400) == "6h"
