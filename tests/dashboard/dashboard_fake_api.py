"""A real, tiny HTTP server answering like the CareLoop API, for the dashboard tests."""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

TOKEN = "test-token-123"
NOW = datetime.now(UTC).replace(microsecond=0)


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


MODELS = {
    "items": [
        {
            "code": "RH-900", "kind": "range_hood", "name": "Range hood 900", "expected_life_years": 10,
            "maintenance": {"run_hours": 180, "days": 180},
            "metrics": {
                "fan_current_a": {"unit": "A", "min": 0, "max": 2, "counter": False,
                                  "description": "Fan current"},
                "run_hours": {"unit": "h", "min": 0, "max": None, "counter": True,
                              "description": "Run hours"},
            },
            "fault_codes": {"E21": {"meaning": "motor stall", "severity": "critical", "skill": "motor"}},
        },
        {
            "code": "OV-500", "kind": "oven", "name": "Oven 500", "expected_life_years": 12,
            "maintenance": {}, "metrics": {"cavity_temp_c": {"unit": "°C", "min": 0, "max": 300,
                                                             "counter": False, "description": "Cavity"}},
            "fault_codes": {},
        },
    ],
    "total": 2,
}

DEVICES = [
    {"id": "RH-000123", "model": "RH-900", "kind": "range_hood", "owner": 7, "purchased_on": "2020-03-01",
     "region": "east", "created_at": iso(NOW - timedelta(days=900)), "online": True,
     "last_seen": iso(NOW - timedelta(minutes=2)), "last_seq": 1042, "missing_seq": 3,
     "latest": {"fan_current_a": 2.6, "run_hours": 812.4}},
    {"id": "OV-000001", "model": "OV-500", "kind": "oven", "owner": 7, "purchased_on": "2019-01-10",
     "region": "east", "created_at": iso(NOW - timedelta(days=1500)), "online": False,
     "last_seen": None, "last_seq": None, "missing_seq": 0, "latest": {}},
]

CUSTOMER = {
    "id": 7, "name": "Li Wei", "phone": "+86 138 0000 0000", "email": "li.wei@example.com",
    "birthday": "1980-05-17", "timezone": "Asia/Shanghai", "region": "east",
    "consents": [
        {"purpose": "service", "channel": "phone", "granted": True},
        {"purpose": "marketing", "channel": "email", "granted": False},
    ],
}

QUARANTINE = [
    {"id": 11, "received_at": iso(NOW - timedelta(minutes=5)), "topic": "careloop/v1/devices/XX-1/telemetry",
     "device_id": "XX-1", "reason": "unknown_device", "detail": "no device XX-1", "payload": {"seq": 1}},
    {"id": 12, "received_at": iso(NOW - timedelta(minutes=9)),
     "topic": "careloop/v1/devices/RH-000123/telemetry", "device_id": "RH-000123", "reason": "bad_json",
     "detail": "Expecting value", "payload": "{not json"},
]


RULES = {
    "items": [
        {"id": "hood-fan-stall", "version": 1, "enabled": True, "builtin": True,
         "document": {"id": "hood-fan-stall", "description": "Fan motor stalled (E21)", "severity": "critical",
                      "when": {"fault": {"codes": ["E21"]}}}},
        {"id": "hood-grease-cleaning-rh900", "version": 2, "enabled": True, "builtin": True,
         "document": {"id": "hood-grease-cleaning-rh900", "severity": "warning",
                      "description": "Grease filter due for cleaning after 180 running hours (RH-900)"}},
        {"id": "oven-offline", "version": 1, "enabled": True, "builtin": True,
         "document": {"id": "oven-offline", "description": "Oven offline for a day", "severity": "info"}},
    ],
    "total": 3,
}


def explanation(rule: str, device_id: str, model: str, at: datetime, condition: dict[str, Any]) -> dict[str, Any]:
    """An explanation the way the rule engine writes one: a header, the reason, the condition tree."""
    return {"rule": rule, "device_id": device_id, "model": model, "at": iso(at), "met": condition["met"],
            "reason": condition["reason"], "condition": condition}


FAN_STALL = {"condition": "fault", "met": True, "reason": "open fault E21 (fan motor stall)",
             "codes": ["E21"], "open_codes": ["E21"]}
GREASE = {
    "condition": "all", "met": True, "reason": "all 2 conditions hold",
    "conditions": [
        {"condition": "usage", "met": True, "reason": "run hours grew by 212.4 since new, at least 180",
         "metric": "run_hours", "since": "maintenance_done", "at_least": 180,
         "values": {"current": 812.4, "at_since": 600.0, "since_at": None, "growth": 212.4}},
        {"condition": "threshold", "met": True, "reason": "fan current is 2.6, above 2",
         "metric": "fan_current_a", "above": 2, "for": "0s", "values": {"latest": 2.6}},
    ],
}
OFFLINE = {"condition": "offline", "met": True, "reason": "offline for 26h (since yesterday)", "for": "1d",
           "values": {"online": False, "offline_since": iso(NOW - timedelta(hours=30)), "last_seen": None}}

DETECTIONS = [
    {"id": 3, "rule_id": "hood-fan-stall", "rule_version": 1, "device_id": "RH-000123", "model": "RH-900",
     "owner_id": 7, "severity": "critical", "status": "open", "opened_at": iso(NOW - timedelta(minutes=10)),
     "cleared_at": None, "acknowledged_at": None, "acknowledged_by": None, "dedup_key": "hood-fan-stall:RH-000123:1",
     "explanation": explanation("hood-fan-stall", "RH-000123", "RH-900", NOW - timedelta(minutes=10), FAN_STALL),
     "clear_explanation": None,
     "actions": [
         {"action": "open_service_order", "params": {"type": "repair", "priority": "urgent", "sla": "24h"},
          "key": "hood-fan-stall:RH-000123:1:0:open_service_order", "status": "pending"},
         {"action": "call_customer", "params": {"reason": "your range hood reported a stalled fan motor"},
          "key": "hood-fan-stall:RH-000123:1:1:call_customer", "status": "pending"},
     ]},
    {"id": 2, "rule_id": "hood-grease-cleaning-rh900", "rule_version": 2, "device_id": "RH-000123",
     "model": "RH-900", "owner_id": 7, "severity": "warning", "status": "acknowledged",
     "opened_at": iso(NOW - timedelta(hours=5)), "cleared_at": None,
     "acknowledged_at": iso(NOW - timedelta(hours=4)), "acknowledged_by": "dispatcher",
     "dedup_key": "hood-grease-cleaning-rh900:RH-000123:1",
     "explanation": explanation("hood-grease-cleaning-rh900", "RH-000123", "RH-900", NOW - timedelta(hours=5),
                                GREASE),
     "clear_explanation": None,
     "actions": [{"action": "offer", "params": {"template": "member-cleaning"},
                  "key": "hood-grease-cleaning-rh900:RH-000123:1:0:offer", "status": "pending"}]},
    {"id": 1, "rule_id": "oven-offline", "rule_version": 1, "device_id": "OV-000001", "model": "OV-500",
     "owner_id": 7, "severity": "info", "status": "cleared", "opened_at": iso(NOW - timedelta(days=2)),
     "cleared_at": iso(NOW - timedelta(days=1)), "acknowledged_at": None, "acknowledged_by": None,
     "dedup_key": "oven-offline:OV-000001:1",
     "explanation": explanation("oven-offline", "OV-000001", "OV-500", NOW - timedelta(days=2), OFFLINE),
     "clear_explanation": {"rule": "oven-offline", "device_id": "OV-000001", "met": False,
                           "reason": "online, last seen 1m ago, less than 1d",
                           "condition": {"condition": "offline", "met": False,
                                         "reason": "online, last seen 1m ago, less than 1d"}},
     "actions": []},
]


def telemetry(device_id: str, query: dict[str, str]) -> dict[str, Any]:
    """Ten readings per asked metric, one per bucket, ending now."""
    device = next(d for d in DEVICES if d["id"] == device_id)
    metrics = [query["metric"]] if "metric" in query else list(device["latest"])
    items = [
        {"ts": iso(NOW - timedelta(minutes=15 * step)), "metric": metric, "value": 0.5 + step / 10,
         "bucket": query.get("bucket")}
        for metric in metrics if metric in device["latest"]
        for step in range(10)
    ]
    return {"items": items}


@dataclass
class FakeApi:
    """What the fake answers and what it was asked; tests change `status_override` to simulate failures."""

    url: str
    requests: list[tuple[str, dict[str, str], str | None, str]] = field(default_factory=list)
    status_override: int | None = None
    # The role the token stands for; the API lets only some roles acknowledge.
    role: str = "dispatcher"
    # Each test gets its own copy, as acknowledging changes them.
    detections: list[dict[str, Any]] = field(default_factory=lambda: copy.deepcopy(DETECTIONS))

    def asked(self, path: str, method: str = "GET") -> list[dict[str, str]]:
        return [query for asked_path, query, _, how in self.requests if asked_path == path and how == method]

    def answer(
        self, path: str, query: dict[str, str], authorization: str | None, method: str = "GET"
    ) -> tuple[int, Any]:
        self.requests.append((path, query, authorization, method))
        if path == "/health":
            # Public, as a load balancer must be able to ask without a token.
            return 200, {"status": "ok", "database": {"ok": True, "detail": "PostgreSQL 16"},
                         "broker": {"ok": True, "detail": "connected"}}
        if self.status_override:
            return self.status_override, {"detail": "simulated failure"}
        if authorization != f"Bearer {TOKEN}":
            return 401, {"detail": "invalid or missing token"}
        parts = path.strip("/").split("/")
        if method == "POST":
            return self.answer_post(parts)
        if path == "/models":
            return 200, MODELS
        if path == "/fleet/summary":
            return 200, {"devices": 200, "online": 150, "offline": 40, "never_seen": 10,
                         "by_kind": [{"kind": "range_hood", "devices": 120, "online": 100},
                                     {"kind": "oven", "devices": 80, "online": 50}],
                         "missing_seq": 17, "quarantined_24h": 4, "readings_24h": 345678}
        if path == "/devices":
            needle = query.get("q", "").lower()
            items = [
                d for d in DEVICES if needle in d["id"].lower() and query.get("kind") in (None, d["kind"])
            ]
            return 200, {"items": items, "total": len(items)}
        if parts[0] == "devices" and len(parts) >= 2:
            device = next((d for d in DEVICES if d["id"] == parts[1]), None)
            if device is None:
                return 404, {"detail": f"no device {parts[1]}"}
            return 200, telemetry(parts[1], query) if parts[2:] == ["telemetry"] else device
        if path == "/customers":
            return 200, {"items": [CUSTOMER], "total": 1}
        if parts[0] == "customers" and parts[2:] == ["360"]:
            if parts[1] != "7":
                return 404, {"detail": f"no customer {parts[1]}"}
            return 200, {"customer": CUSTOMER, "devices": DEVICES, "consents": CUSTOMER["consents"]}
        if path == "/ingest/stats":
            return 200, {"quarantine_by_reason": [{"reason": "unknown_device", "count": 3},
                                                  {"reason": "bad_json", "count": 1}], "missing_seq": 17}
        if path == "/ingest/quarantine":
            items = [q for q in QUARANTINE if query.get("reason") in (None, q["reason"])]
            return 200, {"items": items, "total": len(items)}
        if path == "/rules":
            return 200, RULES
        if path == "/detections":
            items = [
                d for d in self.detections
                if all(query.get(name) in (None, d[name]) for name in ("status", "rule_id", "device_id"))
            ]
            offset, limit = int(query.get("offset", 0)), int(query.get("limit", 100))
            return 200, {"items": items[offset:offset + limit], "total": len(items)}
        if parts[0] == "detections" and len(parts) == 2:
            found = self.detection(parts[1])
            return (200, found) if found else (404, {"detail": f"no detection {parts[1]}"})
        return 404, {"detail": "Not Found"}

    def detection(self, detection_id: str) -> dict[str, Any] | None:
        return next((d for d in self.detections if str(d["id"]) == detection_id), None)

    def answer_post(self, parts: list[str]) -> tuple[int, Any]:
        if parts[0] == "detections" and parts[2:] == ["acknowledge"]:
            if self.role not in ("admin", "dispatcher", "technician"):
                return 403, {"detail": f"role {self.role!r} may not do this; needs one of: admin, dispatcher, "
                                       "technician"}
            detection = self.detection(parts[1])
            if detection is None:
                return 404, {"detail": f"no detection {parts[1]}"}
            if detection["status"] == "cleared":
                return 409, {"detail": f"detection {parts[1]} cleared; nothing to acknowledge"}
            if detection["status"] == "open":
                detection |= {"status": "acknowledged", "acknowledged_at": iso(datetime.now(UTC)),
                              "acknowledged_by": self.role}
            return 200, detection
        return 404, {"detail": "Not Found"}


def serve(api: FakeApi) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the name http.server calls)
            self.respond("GET")

        def do_POST(self) -> None:  # noqa: N802
            # Bodies are read so the connection stays usable; no endpoint here needs one.
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.respond("POST")

        def respond(self, method: str) -> None:
            split = urlsplit(self.path)
            query = {key: values[-1] for key, values in parse_qs(split.query).items()}
            status, body = api.answer(split.path, query, self.headers.get("Authorization"), method)
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass  # keep test output quiet

    return Handler


@contextmanager
def running_fake_api() -> Iterator[FakeApi]:
    """A fake API on a free port of 127.0.0.1, stopped on exit."""
    api = FakeApi(url="")
    server = ThreadingHTTPServer(("127.0.0.1", 0), serve(api))
    api.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield api
    finally:
        server.shutdown()
        server.server_close()
