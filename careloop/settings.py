"""One Settings object, read once from the environment and `.env`."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING, Literal
from urllib.parse import urlsplit

import psycopg2.extensions
from pydantic import AnyHttpUrl, AnyUrl, Field, FilePath, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from careloop.partitions import Partition

if TYPE_CHECKING:
    from careloop.db import SessionLimits

ENV_PREFIX = "CARELOOP_"


class ConfigError(Exception):
    """A configuration value is wrong; the message names the variable."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_file=".env", extra="ignore")

    database_url: str | None = None
    mqtt_url: AnyUrl | None = None
    # the broker's credential issuer (user careloop-admin), for the API and `careloop simulate`; README "Broker
    # identity". Unset: the embedded mosquitto's, where one runs for CARELOOP_HOME.
    mqtt_admin_url: AnyUrl | None = None
    # TLS (README "TLS"): the CA that signed the broker's certificate, for mqtts:// URLs (unset: the system's
    # trusted CAs); the API's certificate and key, which make `careloop api` serve HTTPS.
    mqtt_ca: FilePath | None = None
    api_tls_cert: FilePath | None = None
    api_tls_key: FilePath | None = None
    home: Path = Path(".careloop")
    admin_token: SecretStr | None = None
    api_url: AnyHttpUrl = AnyHttpUrl("http://127.0.0.1:8000")
    # read by careloop.embedded itself; declared here so a wrong value fails at start with one clear line
    embedded_broker: Literal["auto", "mosquitto", "amqtt"] = "auto"
    # Bounds on how long the API waits for the database, so an outage is a quick 503 and never a hang.
    # 0 switches one off (PostgreSQL's and libpq's own meaning of 0).
    db_connect_timeout_s: int = Field(default=3, ge=0, le=3600)  # libpq waits at least 2 s
    db_statement_timeout_s: float = Field(default=10, ge=0, le=86_400)
    db_lock_timeout_s: float = Field(default=5, ge=0, le=86_400)
    db_idle_in_transaction_timeout_s: float = Field(default=60, ge=0, le=86_400)
    # What the API bounds per client (careloop.deps.ApiLimits; README, HTTP API: Tokens and limits).
    auth_failures_per_minute: int = Field(default=20, ge=1, le=100_000)
    redemptions_per_minute: int = Field(default=30, ge=1, le=100_000)
    backtests_per_role: int = Field(default=2, ge=1, le=64)
    backtest_timeout_s: float = Field(default=30, gt=0, le=3600)
    # Requests one API process works on at once; past it a request is answered 503 at once (careloop.app.Admission).
    api_requests_in_progress: int = Field(default=32, ge=1, le=100_000)
    # ... and of those, from one client (its token, or its address); past it a 429 at once. Fewer than the
    # process's database connections (10), so one client's slow requests cannot hold them all.
    api_requests_in_progress_per_client: int = Field(default=8, ge=1, le=100_000)
    # The share of the fleet this engine evaluates, `I/N` (`careloop engine --partition`); unset: the whole fleet.
    engine_partition: Partition | None = None

    @field_validator("database_url")
    @classmethod
    def _libpq_url(cls, url: str | None) -> str | None:
        # libpq's own parser: it accepts what psycopg2 will, socket directories (`?host=/path`) included.
        if url is None:
            return None
        if not url.startswith(("postgresql://", "postgres://")):
            raise ValueError("must start with postgresql://, e.g. postgresql://careloop@127.0.0.1:5432/careloop")
        try:
            psycopg2.extensions.parse_dsn(url)
        except psycopg2.ProgrammingError as error:
            raise ValueError(f"not a valid PostgreSQL URL: {error}") from None
        return url

    @field_validator("mqtt_url", "mqtt_admin_url")
    @classmethod
    def _mqtt_scheme(cls, url: AnyUrl | None) -> AnyUrl | None:
        if url is not None and url.scheme not in ("mqtt", "mqtts", "tcp", "ssl"):
            raise ValueError("must start with mqtt:// or mqtts://, e.g. mqtt://user:pass@127.0.0.1:1883")
        return url

    @field_validator("engine_partition", mode="before")
    @classmethod
    def _partition(cls, text: object) -> object:
        if isinstance(text, str):
            return Partition.parse(text) if text.strip() else None  # set but empty: the whole fleet
        return text

    @field_validator("admin_token")
    @classmethod
    def _token_length(cls, token: SecretStr | None) -> SecretStr | None:
        if token is not None and len(token.get_secret_value()) < 8:
            raise ValueError("must be at least 8 characters")
        return token

    def session_limits(self) -> SessionLimits:
        """The database timeouts for the API's connections."""
        from careloop.db import SessionLimits  # here: careloop.db loads numpy, which most commands never need

        return SessionLimits(
            connect_timeout_s=self.db_connect_timeout_s,
            statement_timeout_s=self.db_statement_timeout_s,
            lock_timeout_s=self.db_lock_timeout_s,
            idle_in_transaction_timeout_s=self.db_idle_in_transaction_timeout_s,
        )


def load_settings(**overrides: object) -> Settings:
    """Read the settings, turning a validation error into one line naming the variable."""
    try:
        return Settings(**overrides)
    except ValidationError as error:
        first = error.errors()[0]
        variable = ENV_PREFIX + str(first["loc"][0]).upper() if first["loc"] else ENV_PREFIX
        raise ConfigError(f"{variable}: {first['msg']}") from None


@functools.cache
def get_settings() -> Settings:
    return load_settings()


def redact_url(url: str) -> str:
    """The URL with its password replaced, for log lines."""
    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@", 1)
    return url
