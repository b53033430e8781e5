"""A small HTTP client for the CareLoop API, with errors a dispatcher can act on."""

from __future__ import annotations

import os
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from dotenv import dotenv_values

DEFAULT_API_URL = "http://127.0.0.1:8000"
# A developer's shortcut, never a default: with it set, the sign-in page offers a button that signs in with it.
# Nobody is signed in by the environment alone (an admin token there would make everyone who opens the page admin).
DEV_TOKEN_VARIABLE = "CARELOOP_DASHBOARD_DEV_TOKEN"


class ApiError(Exception):
    """The API could not answer; the message names the URL and, when there was one, the status."""

    def __init__(self, message: str, *, url: str, status: int | None = None, detail: str | None = None,
                 problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.url = url
        self.status = status
        # What the API itself said (its `detail`), e.g. why a 409 refused a change.
        self.detail = detail
        # A 422's mistakes one by one, each 'field: why', to show beside each other rather than run together.
        self.problems = problems or ([detail] if detail else [])


@dataclass(frozen=True)
class ApiSettings:
    base_url: str
    dev_token: str | None = None


def load_api_settings(env_file: Path | str = ".env") -> ApiSettings:
    """Where the API is, and the developer's token if one is set: the environment first, then `.env`."""
    file_values = dotenv_values(env_file) if Path(env_file).is_file() else {}

    def lookup(name: str) -> str | None:
        value = os.environ.get(name) or file_values.get(name)
        return value.strip() if value and value.strip() else None

    base_url = (lookup("CARELOOP_API_URL") or DEFAULT_API_URL).rstrip("/")
    return ApiSettings(base_url=base_url, dev_token=lookup(DEV_TOKEN_VARIABLE))


def _detail(response: httpx.Response) -> str:
    """The API's `{"detail": ...}` if it sent one (a validation error's list as 'field: why; ...'), else a short
    piece of the body."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:200].strip()
    if isinstance(body, dict) and "detail" in body:
        detail = body["detail"]
        if isinstance(detail, list) and all(isinstance(item, dict) for item in detail):
            return "; ".join(problem_text(item) for item in detail)
        return str(detail)
    return str(body)[:200]


def _problems(response: httpx.Response) -> list[str]:
    """A validation error's mistakes, one 'field: why' each; empty when the answer is not such a list."""
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        return []
    if isinstance(detail, list) and all(isinstance(item, dict) for item in detail):
        return [problem_text(item) for item in detail]
    return []


def problem_text(problem: dict[str, Any]) -> str:
    """One validation problem: 'then.0.offer.template: field required' (the 'body' prefix left out)."""
    where = [str(part) for part in problem.get("loc") or [] if part != "body"]
    message = str(problem.get("msg") or problem.get("message") or problem)
    return f"{'.'.join(where)}: {message}" if where else message


class ApiClient:
    """Thin wrapper over httpx.Client; every failure becomes an ApiError, never a raw exception."""

    def __init__(
        self,
        base_url: str,
        token: str | None,
        *,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.has_token = token is not None
        headers = {"Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.Client(headers=headers, timeout=timeout, transport=transport)

    def close(self) -> None:
        self._http.close()

    def url_for(self, path: str) -> str:
        return f"{self.base_url}/{path.lstrip('/')}"

    def get(self, path: str, params: dict[str, Any] | None = None, *, accept: tuple[int, ...] = ()) -> Any:
        """GET a JSON document; statuses in `accept` are returned like a 200 (e.g. a 503 /health body)."""
        # Empty filters are left out so the API applies its own defaults.
        query = {key: value for key, value in (params or {}).items() if value not in (None, "")}
        return self._request("GET", path, params=query, accept=accept)

    def post(self, path: str, body: Any = None) -> Any:
        """POST (a JSON body, if any) and return the JSON answer; raises ApiError like `get`."""
        return self._request("POST", path, json=body)

    def put(self, path: str, body: Any) -> Any:
        """PUT a JSON body and return the JSON answer; raises ApiError like `get`."""
        return self._request("PUT", path, json=body)

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        accept: tuple[int, ...] = (),
    ) -> Any:
        url = self.url_for(path)
        if not self.base_url.startswith(("http://", "https://")):
            raise ApiError(
                f"CARELOOP_API_URL must start with http:// or https://, got {self.base_url!r}.", url=url
            )
        try:
            response = self._http.request(method, url, params=params, json=json)
        except httpx.TimeoutException:
            # A change that timed out may still have been made; a reader should look before retrying.
            outcome = " The change may or may not have been made; refresh to see." if method != "GET" else ""
            raise ApiError(
                f"The CareLoop API at {url} did not answer in time. Is it overloaded or stuck?{outcome}", url=url
            ) from None
        except httpx.TransportError as error:
            raise ApiError(
                f"Cannot reach the CareLoop API at {url} ({type(error).__name__}: {error}). "
                "Is `careloop api` running? Set CARELOOP_API_URL if it runs elsewhere.",
                url=url,
            ) from None
        if response.status_code in (401, 403):
            if not self.has_token:
                hint = "you are not signed in; sign in with your token."
            elif response.status_code == 403:
                # 403 is the API knowing who we are and saying no: the role, not the token, is the problem.
                hint = "your role may not do this; sign in with a token of a role that may."
            else:
                hint = "the API does not accept your token (revoked or mistyped); sign out and in again."
            raise ApiError(
                f"The CareLoop API at {url} answered {response.status_code} "
                f"{response.reason_phrase}: {hint} ({_detail(response)})",
                url=url,
                status=response.status_code,
                detail=_detail(response),
            )
        if response.status_code >= 400 and response.status_code not in accept:
            raise ApiError(
                f"The CareLoop API at {url} answered {response.status_code} "
                f"{response.reason_phrase}: {_detail(response)}",
                url=url,
                status=response.status_code,
                detail=_detail(response),
                problems=_problems(response),
            )
        try:
            return response.json()
        except ValueError:
            raise ApiError(
                f"The CareLoop API at {url} answered {response.status_code} with something that is not "
                "JSON. Does CARELOOP_API_URL point at the API (not the dashboard)?",
                url=url,
                status=response.status_code,
            ) from None

    # One method per endpoint the dashboard uses.

    def whoami(self) -> dict[str, Any]:
        """Who the token speaks for: {"role", "name", "technician_id"}; a 404 where the API does not tell."""
        return self.get("/whoami")

    def health(self) -> dict[str, Any]:
        # A degraded API may say so with a 503; its body is still the answer we want to show.
        return self.get("/health", accept=(503,))

    def models(self) -> dict[str, Any]:
        return self.get("/models")

    def fleet_summary(self) -> dict[str, Any]:
        return self.get("/fleet/summary")

    def fleet_forecast(self, *, days: int) -> dict[str, Any]:
        """The maintenance and trade-in windows projected to open in the next `days`, per region, kind and week."""
        return self.get("/fleet/forecast", {"days": days})

    def devices(self, **filters: Any) -> dict[str, Any]:
        """Filters: kind, model, region, online, owner, q, limit, offset."""
        return self.get("/devices", filters)

    def device(self, device_id: str) -> dict[str, Any]:
        return self.get(f"/devices/{quote(device_id, safe='')}")

    def telemetry(self, device_id: str, **filters: Any) -> dict[str, Any]:
        """Filters: metric, since, until, bucket, limit."""
        return self.get(f"/devices/{quote(device_id, safe='')}/telemetry", filters)

    def device_events(self, device_id: str, **filters: Any) -> dict[str, Any]:
        """Filters: since, until, type, limit. Newest first."""
        return self.get(f"/devices/{quote(device_id, safe='')}/events", filters)

    def customers(self, **filters: Any) -> dict[str, Any]:
        return self.get("/customers", filters)

    def customer_360(self, customer_id: int | str) -> dict[str, Any]:
        return self.get(f"/customers/{quote(str(customer_id), safe='')}/360")

    def quarantine(self, **filters: Any) -> dict[str, Any]:
        return self.get("/ingest/quarantine", filters)

    def ingest_stats(self) -> dict[str, Any]:
        return self.get("/ingest/stats")

    def rules(self, **filters: Any) -> dict[str, Any]:
        """Filters: enabled, limit, offset."""
        return self.get("/rules", filters)

    def rule(self, rule_id: str) -> dict[str, Any]:
        """A rule with every version of it."""
        return self.get(f"/rules/{quote(rule_id, safe='')}")

    def update_rule(self, rule_id: str, document: dict[str, Any]) -> dict[str, Any]:
        """Replace a rule's document (its `enabled` switches it); a document the API refuses is a 422 listing why."""
        return self.put(f"/rules/{quote(rule_id, safe='')}", document)

    def backtest_rule(self, rule_id: str, *, start: str, end: str, step: str) -> dict[str, Any]:
        """What the rule would have opened and cleared from `start` to `end` (ISO 8601), evaluated every `step`."""
        return self.post(f"/rules/{quote(rule_id, safe='')}/backtest", {"start": start, "end": end, "step": step})

    def backtest_draft(self, document: dict[str, Any], *, start: str, end: str, step: str) -> dict[str, Any]:
        """What a rule not yet saved would have opened and cleared, as backtest_rule; its mistakes a 422 naming
        each field under `document`."""
        return self.post("/rules/backtest", {"document": document, "start": start, "end": end, "step": step})

    def engine_jobs(self) -> dict[str, Any]:
        return self.get("/engine/jobs")

    # ------------------------------------------------------------ offers

    def offer_templates(self, **filters: Any) -> dict[str, Any]:
        """Filters: active, limit, offset."""
        return self.get("/offer-templates", filters)

    def update_offer_template(self, code: str, template: dict[str, Any]) -> dict[str, Any]:
        """Replace a template (marketers); offers issued before keep their value and words."""
        return self.put(f"/offer-templates/{quote(code, safe='')}", template)

    def offers(self, **filters: Any) -> dict[str, Any]:
        """Filters: customer_id, status, template, rule_id, device_id, limit, offset. Newest first."""
        return self.get("/offers", filters)

    def offers_report(self, **filters: Any) -> dict[str, Any]:
        """Filters: group_by (template, rule, segment), since, until."""
        return self.get("/reports/offers", filters)

    def outbox(self, **filters: Any) -> dict[str, Any]:
        """Filters: status (pending, sent, dead), offer_id, limit, offset."""
        return self.get("/outbox", filters)

    def detections(self, **filters: Any) -> dict[str, Any]:
        """Filters: device_id, status (open, acknowledged, cleared), rule_id, limit, offset. Newest first."""
        return self.get("/detections", filters)

    def detection(self, detection_id: int | str) -> dict[str, Any]:
        return self.get(f"/detections/{quote(str(detection_id), safe='')}")

    def acknowledge_detection(self, detection_id: int | str) -> dict[str, Any]:
        """Say a person has seen it; answers the detection, now acknowledged. Never cached: it changes state."""
        return self.post(f"/detections/{quote(str(detection_id), safe='')}/acknowledge")

    # ------------------------------------------------------------ service orders, technicians, call tasks

    def service_orders(self, **filters: Any) -> dict[str, Any]:
        """Filters: status (open = not completed or cancelled), device_id, customer_id, technician_id, region,
        skill, priority, overdue, limit, offset. Most urgent first."""
        return self.get("/service-orders", filters)

    def service_order(self, order_id: int | str) -> dict[str, Any]:
        """One order with its history and allowed_transitions."""
        return self.get(f"/service-orders/{quote(str(order_id), safe='')}")

    def order_proposals(self, order_id: int | str) -> list[dict[str, Any]]:
        """The best technicians for the order, each with its soonest free window and why."""
        return self.get(f"/service-orders/{quote(str(order_id), safe='')}/proposals")

    def assign_order(
        self, order_id: int | str, technician_id: int, *, start: str | None = None, end: str | None = None
    ) -> dict[str, Any]:
        """Assign a technician with a visit window (ISO 8601 with a zone), or the soonest free one when none is
        given; a window that does not fit is a 409 saying why."""
        body: dict[str, Any] = {"technician_id": technician_id}
        if start is not None or end is not None:
            body |= {"start": start, "end": end}
        return self.post(f"/service-orders/{quote(str(order_id), safe='')}/assign", body)

    def change_order_status(self, order_id: int | str, status: str, *, note: str | None = None) -> dict[str, Any]:
        """Move an order along its lifecycle; a transition that is not allowed is a 409 naming the allowed ones."""
        body: dict[str, Any] = {"status": status}
        if note:
            body["note"] = note
        return self.post(f"/service-orders/{quote(str(order_id), safe='')}/status", body)

    def complete_order(
        self,
        order_id: int | str,
        *,
        outcome: str,
        parts: list[str],
        cost: Decimal | str,
        paid: bool,
        rating: int | None,
    ) -> dict[str, Any]:
        """Record the visit of an order in progress."""
        # The cost goes as text so that 45.10 arrives as 45.10, not as the nearest binary fraction.
        body = {"outcome": outcome, "parts": parts, "cost": str(cost), "paid": paid, "rating": rating}
        return self.post(f"/service-orders/{quote(str(order_id), safe='')}/complete", body)

    def technicians(self, **filters: Any) -> dict[str, Any]:
        """Filters: skill, region, limit, offset."""
        return self.get("/technicians", filters)

    def call_tasks(self, **filters: Any) -> dict[str, Any]:
        """Filters: status (open, blocked, done), device_id, customer_id, order_id, region, limit, offset. Due first."""
        return self.get("/call-tasks", filters)

    def record_call_outcome(
        self, task_id: int | str, outcome: str, *, retry_at: str | None = None, notes: str | None = None
    ) -> dict[str, Any]:
        """Outcome: reached, no_answer, call_back (needs retry_at) or declined; answers the task as it now is."""
        body: dict[str, Any] = {"outcome": outcome}
        if retry_at is not None:
            body["retry_at"] = retry_at
        if notes:
            body["notes"] = notes
        return self.post(f"/call-tasks/{quote(str(task_id), safe='')}/outcome", body)
