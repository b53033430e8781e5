"""The test template stays clonable while something (TimescaleDB's scheduler, here a plain session) sits in it."""

from __future__ import annotations

import uuid
from urllib.parse import urlsplit, urlunsplit

import psycopg2
import pytest
from psycopg2 import sql

from tests.conftest import _admin_connection, _clone, _close_template, _drop_database

pytestmark = pytest.mark.integration


def test_a_session_left_in_the_template_neither_blocks_a_clone_nor_gets_back_in(database_server_url) -> None:
    admin = _admin_connection(database_server_url)
    template = f"careloop_test_tpl_{uuid.uuid4().hex[:10]}"
    clone = f"careloop_test_{uuid.uuid4().hex[:12]}"
    template_url = urlunsplit(urlsplit(database_server_url)._replace(path=f"/{template}"))
    try:
        with admin.cursor() as cursor:
            cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(template)))
        squatter = psycopg2.connect(template_url)  # as a background worker connected to the template would be
        _close_template(admin, template)
        _clone(admin, clone, template, timeout_s=10)
        with pytest.raises(psycopg2.OperationalError, match="not currently accepting connections"):
            psycopg2.connect(template_url)
        assert squatter.closed or _was_ended(squatter)
    finally:
        _drop_database(admin, clone)
        _drop_database(admin, template)  # a template must be unmarked before it can be dropped
        admin.close()


def _was_ended(connection) -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return False
    except psycopg2.OperationalError:
        return True
