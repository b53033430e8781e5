"""Cached reads from the API for the pages, and the one place API errors are shown."""

from __future__ import annotations

from typing import Any, NoReturn

import streamlit as st

from dashboard.client import ApiClient, ApiError, load_api_settings
from dashboard.session import current_token

# Short enough that a dispatcher sees a fault within seconds, long enough that several people
# looking at the same page share one request.
TTL_SECONDS = 15


@st.cache_resource(show_spinner=False)
def _client_for(base_url: str, token: str | None) -> ApiClient:
    # One connection pool per API and token, shared by every session of this server.
    return ApiClient(base_url, token)


def get_client() -> ApiClient:
    """The shared client for the API the environment points at, sending the signed-in person's token."""
    return _client_for(load_api_settings().base_url, current_token())


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def _cached_call(base_url: str, token: str | None, method: str, args: tuple, kwargs: tuple) -> Any:
    # base_url and token are part of the key so that changing either never serves stale answers.
    # Errors are raised, and Streamlit does not cache raised errors: a recovered API is seen at once.
    return getattr(_client_for(base_url, token), method)(*args, **dict(kwargs))


def fetch(method: str, *args: Any, **kwargs: Any) -> Any:
    """Call `ApiClient.<method>` through the cache; raises ApiError."""
    if not callable(getattr(ApiClient, method, None)):
        raise AttributeError(f"ApiClient has no method {method!r}")
    # The token is part of the key: one person's answers (a technician's own orders) never reach another.
    return _cached_call(load_api_settings().base_url, current_token(), method, args, tuple(sorted(kwargs.items())))


def change(method: str, *args: Any, **kwargs: Any) -> Any:
    """Call an `ApiClient.<method>` that changes something: never cached, and every cached answer is forgotten
    afterwards so the pages read the new state; raises ApiError."""
    try:
        return getattr(get_client(), method)(*args, **kwargs)
    finally:
        # Also after a failure: a 409 says the state moved on, and a timeout may have changed it anyway.
        clear_cache()


def show_api_error(error: ApiError) -> None:
    """The error in the page. A 409 is the API refusing a change for a reason the person can act on (the order
    moved on, the window is taken), so its reason is what is shown, not the URL and status."""
    if error.status == 409 and error.detail:
        st.error(f"Not done: {error.detail}", icon=":material/block:")
    else:
        st.error(str(error), icon=":material/cloud_off:")


def stop_with(error: ApiError) -> NoReturn:
    """Show the error in the page and end this run: a page without its data has nothing more to say."""
    show_api_error(error)
    st.stop()
    raise AssertionError("unreachable")  # st.stop raises; this keeps type checkers honest


def fetch_or_stop(method: str, *args: Any, **kwargs: Any) -> Any:
    """Like fetch, but an API error is shown in the page and the page stops there."""
    try:
        return fetch(method, *args, **kwargs)
    except ApiError as error:
        stop_with(error)


def clear_cache() -> None:
    """Forget every cached answer, for the Refresh button."""
    _cached_call.clear()
