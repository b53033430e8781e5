"""The dashboard's settings and formatting helpers, without any server."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from dashboard.client import DEFAULT_API_URL, ApiClient, ApiError, ApiSettings, load_api_settings
from dashboard.ui import format_value, time_ago


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in ("CARELOOP_API_URL", "CARELOOP_API_TOKEN", "CARELOOP_ADMIN_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_settings_default_to_local_api_without_token(clean_env: Path) -> None:
    settings = load_api_settings()
    assert (settings.base_url, settings.token) == (DEFAULT_API_URL, None)


def test_api_token_wins_over_admin_token_and_environment_over_dotenv(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (clean_env / ".env").write_text("CARELOOP_API_URL=http://api.example:9000/\nCARELOOP_ADMIN_TOKEN=from-file\n")
    assert load_api_settings() == ApiSettings("http://api.example:9000", "from-file")

    monkeypatch.setenv("CARELOOP_ADMIN_TOKEN", "admin-env")
    assert load_api_settings().token == "admin-env"
    monkeypatch.setenv("CARELOOP_API_TOKEN", "api-env")
    assert load_api_settings().token == "api-env"


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
    with pytest.raises(ApiError, match="403 Forbidden: the token's role may not do this") as raised:
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
