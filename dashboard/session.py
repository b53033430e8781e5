"""Who is signed in: their token, name and role, kept in the browser session; and what each role may see and do."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import streamlit as st

from dashboard.client import ApiClient, ApiError

USER_KEY = "careloop_user"
ROLES = ("admin", "dispatcher", "marketer", "technician")

# What each role may press. The API checks every change again (a 403 with its reason); these only keep controls
# that would be refused off the page, so nobody is offered what they may not do.
ABILITIES: dict[str, frozenset[str]] = {
    "assign_orders": frozenset({"admin", "dispatcher"}),
    "work_calls": frozenset({"admin", "dispatcher"}),
    "move_orders": frozenset({"admin", "dispatcher", "technician"}),
    "acknowledge_detections": frozenset({"admin", "dispatcher", "technician"}),
    "edit_offer_templates": frozenset({"admin", "marketer"}),
    "read_offer_report": frozenset({"admin", "marketer"}),
    "read_offers": frozenset({"admin", "dispatcher", "marketer"}),
    "switch_rules": frozenset({"admin", "dispatcher", "marketer"}),
    # A customer's phone and e-mail are for the hotline; marketing reaches people only through the contact policy.
    "read_contact_details": frozenset({"admin", "dispatcher", "technician"}),
}

# The pages each role finds in the sidebar, by their file under views/, as the API's permission table lets the
# role read them. A technician works their own orders (and sees their devices and detections); a marketer has no
# dispatch board, and reads neither devices nor detections.
PAGES_BY_ROLE: dict[str, tuple[str, ...]] = {
    "admin": ("fleet", "device", "quarantine", "customers", "dispatch", "detections", "offers", "rules"),
    "dispatcher": ("dispatch", "fleet", "device", "quarantine", "customers", "detections", "offers", "rules"),
    "marketer": ("offers", "customers", "rules", "fleet"),
    "technician": ("dispatch", "device", "detections"),
}


@dataclass(frozen=True)
class User:
    token: str
    role: str
    name: str
    technician_id: int | None = None
    expires_at: str | None = None
    # False when the API could not say who the token is (no /whoami) and the role was found by what it may read.
    told_by_api: bool = True

    @property
    def label(self) -> str:
        return f"{self.name} · {self.role}"


def current_user() -> User | None:
    saved = st.session_state.get(USER_KEY)
    return User(**saved) if isinstance(saved, dict) else None


def current_token() -> str | None:
    user = current_user()
    return user.token if user else None


def can(ability: str) -> bool:
    """Whether the signed-in person's role may do this (see ABILITIES)."""
    user = current_user()
    return user is not None and user.role in ABILITIES[ability]


def pages_for(role: str) -> tuple[str, ...]:
    return PAGES_BY_ROLE.get(role, ("fleet",))


def sign_out() -> None:
    st.session_state.pop(USER_KEY, None)


def _answers(client: ApiClient, path: str, params: dict[str, Any] | None = None) -> bool:
    """Whether the token may read `path`: True on 200, False on 403; anything else is raised."""
    try:
        client.get(path, params)
    except ApiError as error:
        if error.status == 403:
            return False
        raise
    return True


def role_by_what_it_may_read(client: ApiClient) -> str:
    """The role of a token, found by which reads the API allows it: each role's one telling endpoint."""
    if _answers(client, "/webhooks", {"limit": 1}):
        return "admin"
    if _answers(client, "/technicians", {"limit": 1}):
        return "dispatcher"
    if _answers(client, "/reports/offers"):
        return "marketer"
    if _answers(client, "/call-tasks", {"limit": 1}):
        return "technician"
    return "reader"


def identify(base_url: str, token: str) -> User:
    """Who `token` speaks for, asked of the API (GET /whoami); where the API does not tell (404), the role is found
    by what the token may read. Raises ApiError (a 401 for a token the API does not know)."""
    client = ApiClient(base_url, token)
    try:
        try:
            who = client.whoami()
        except ApiError as error:
            if error.status not in (404, 405):
                raise
            # Any read tells a refused token (401) before the role is guessed.
            client.get("/rules", {"limit": 1})
            role = role_by_what_it_may_read(client)
            return User(token=token, role=role, name=f"signed in as {role}", told_by_api=False)
        role = str(who.get("role") or "reader")
        technician = who.get("technician_id")
        return User(token=token, role=role, name=str(who.get("name") or role),
                    technician_id=int(technician) if technician is not None else None,
                    expires_at=who.get("expires_at"))
    finally:
        client.close()


def sign_in(base_url: str, token: str) -> User:
    """Check the token with the API and keep who it is for this browser session; raises ApiError."""
    user = identify(base_url, token.strip())
    st.session_state[USER_KEY] = asdict(user)
    return user
