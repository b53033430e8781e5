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
