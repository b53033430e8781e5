"""When the TimescaleDB migrations run, and how the runner says it skipped them."""

from __future__ import annotations

import logging

import psycopg2
import pytest

from careloop import db
from careloop.db import TimescaleState, preloaded_library_names, timescale_available, timescale_files


def state(**overrides) -> TimescaleState:
    values = {"created": False, "installed": True, "preload_libraries": "timescaledb", "loader_running": True}
    return TimescaleState(**(values | overrides))


def test_an_installed_and_preloaded_extension_is_available() -> None:
    assert state().missing() is None


def test_an_extension_listed_but_not_preloaded_is_not_available_and_says_why() -> None:
    listed_only = state(preload_libraries="pg_stat_statements", loader_running=False)
    assert listed_only.missing() == "timescaledb is installed but not in shared_preload_libraries"
    assert state(preload_libraries="", loader_running=False).missing() is not None


def test_an_extension_not_installed_is_not_available() -> None:
    assert state(installed=False).missing() == "the timescaledb extension is not installed on the server"


def test_an_extension_already_created_in_the_database_is_available_whatever_else_is_seen() -> None:
    assert state(created=True, installed=False, preload_libraries=None, loader_running=False).missing() is None


def test_a_role_that_may_not_read_shared_preload_libraries_relies_on_the_loader_setting() -> None:
    assert state(preload_libraries=None, loader_running=True).missing() is None
    assert state(preload_libraries=None, loader_running=False).missing() is not None


@pytest.mark.parametrize(
    ("setting", "names"),
    [
        ("timescaledb", {"timescaledb"}),
        ("pg_stat_statements, timescaledb", {"pg_stat_statements", "timescaledb"}),
        ('"$libdir/timescaledb", auto_explain', {"timescaledb", "auto_explain"}),
        ("'$libdir/timescaledb.so'", {"timescaledb"}),
        ("timescaledb_toolkit", {"timescaledb_toolkit"}),
        ("", set()),
    ],
)
def test_preloaded_library_names_are_read_as_postgresql_lists_them(setting: str, names: set[str]) -> None:
    assert preloaded_library_names(setting) == names


@pytest.mark.integration
def test_plain_postgresql_reports_timescaledb_as_not_available(conn) -> None:
    found = db.timescale_state(conn)
    if found.installed or found.created:
        pytest.skip("this server has TimescaleDB installed")
    assert found.missing() == "the timescaledb extension is not installed on the server"
    assert timescale_available(conn) is False


@pytest.mark.integration
def test_the_migration_runner_skips_the_timescale_steps_with_one_log_line_naming_the_reason(
    empty_database_url, monkeypatch, caplog
) -> None:
    # Whatever the server has: the runner is told the extension is installed but not preloaded, the case where
    # CREATE EXTENSION would end the session with a FATAL error. A new database, so every step is still to run.
    database_url = empty_database_url
    listed_only = TimescaleState(created=False, installed=True, preload_libraries="", loader_running=False)
    monkeypatch.setattr(db, "timescale_state", lambda _conn: listed_only)
    with caplog.at_level(logging.INFO, logger="careloop.db"):
        applied = db.migrate(database_url)
    assert not [version for version in applied if version.startswith("timescale/")]
    skipped = [record.getMessage() for record in caplog.records if "skipping" in record.getMessage()]
    names = ", ".join(path.name for path in timescale_files())
    assert skipped == [f"timescaledb is installed but not in shared_preload_libraries: skipping the TimescaleDB "
                       f"migrations {names}"]
    assert "102_late_data_and_compression.sql" in names
    with psycopg2.connect(database_url) as check, check.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM schema_migrations WHERE version LIKE 'timescale/%'")
        assert cursor.fetchone()[0] == 0
    check.close()
