"""Fixtures of the dashboard tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import streamlit as st
from dashboard_fake_api import FakeApi, running_fake_api


@pytest.fixture
def fake_api(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeApi]:
    """The fake API running, with the dashboard's environment pointing at it and empty caches."""
    with running_fake_api() as api:
        # No .env of the developer's may leak into the test.
        monkeypatch.chdir(tmp_path)
        monkeypatch.setenv("CARELOOP_API_URL", api.url)
        for variable in ("CARELOOP_API_TOKEN", "CARELOOP_ADMIN_TOKEN", "CARELOOP_DASHBOARD_DEV_TOKEN"):
            monkeypatch.delenv(variable, raising=False)
        st.cache_data.clear()
        st.cache_resource.clear()
        yield api
    st.cache_data.clear()
    st.cache_resource.clear()


ADMIN_TOKEN = "admin-token-for-the-dashboard-tests"


@pytest.fixture
def api_url(database) -> Iterator[str]:
    """The real API on a port of its own, in this process, over the test's database."""
    import threading

    import uvicorn

    from careloop.app import create_app
    from careloop.embedded import free_port, wait_for_port

    port = free_port(None)
    server = uvicorn.Server(uvicorn.Config(create_app(database, admin_token=ADMIN_TOKEN, mqtt_url=None), port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for_port(port, timeout_s=60)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def real_api(api_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[str]:
    """The dashboard's environment pointing at the real API, with empty caches and no token of its own."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CARELOOP_API_URL", api_url)
    for variable in ("CARELOOP_API_TOKEN", "CARELOOP_ADMIN_TOKEN", "CARELOOP_DASHBOARD_DEV_TOKEN"):
        monkeypatch.delenv(variable, raising=False)
    st.cache_data.clear()
    st.cache_resource.clear()
    yield api_url
    st.cache_data.clear()
    st.cache_resource.clear()
