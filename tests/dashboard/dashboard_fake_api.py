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

# What RH-000123 reported: its fan stalled 10 minutes ago (detection 3 opened then), and it was cleaned 3 days ago.
EVENTS = {"RH-000123": [
    {"ts": iso(NOW - timedelta(minutes=10)), "seq": 1041, "type": "fault", "code": "E21", "detail": "motor stall"},
    {"ts": iso(NOW - timedelta(days=3)), "seq": 900, "type": "maintenance_done", "code": None, "detail": None},
]}

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


def forecast(days: int) -> dict[str, Any]:
    """GET /fleet/forecast as the API answers it: east has 3 maintenance and 1 trade-in window coming, west 2
    maintenance, and 1 appliance without a region a trade-in."""
    weeks = -(-days // 7)
    return {
        "start": iso(NOW), "end": iso(NOW + timedelta(days=days)), "days": days,
        "week_starts": [iso(NOW + timedelta(days=7 * week)) for week in range(weeks)],
        "regions": [
            {"region": "east", "kind": "maintenance", "devices": 3, "weeks": [2, 1, 0, 0, 0][:weeks]},
            {"region": "east", "kind": "trade_in", "devices": 1, "weeks": [0, 0, 1, 0, 0][:weeks]},
            {"region": "west", "kind": "maintenance", "devices": 2, "weeks": [0, 1, 0, 1, 0][:weeks]},
            {"region": None, "kind": "trade_in", "devices": 1, "weeks": [0, 0, 0, 0, 1][:weeks]},
        ],
        "rules": [
            {"rule_id": "hood-grease-cleaning-rh900", "kind": "maintenance", "devices": 5, "already_open": 1,
             "unprojected": []},
            {"rule_id": "hood-trade-in", "kind": "trade_in", "devices": 2, "already_open": 0,
             "unprojected": ["count"]},
        ],
        "not_forecast": [],
    }


# A device only the dispatch board meets (an order's), so the device and customer pages' lists stay as they are.
OTHER_DEVICES = [
    {"id": "RH-000777", "model": "RH-900", "kind": "range_hood", "owner": None, "purchased_on": "2018-06-01",
     "region": "west", "created_at": iso(NOW - timedelta(days=2000)), "online": True,
     "last_seen": iso(NOW - timedelta(minutes=1)), "last_seq": 77, "missing_seq": 0,
     "latest": {"fan_current_a": 1.1, "run_hours": 2400.0}},
]
TOMORROW_9 = (NOW + timedelta(days=1)).replace(hour=9, minute=0, second=0)

TECHNICIANS = [
    {"id": 1, "name": "Liu Yang", "phone": "+86 139 1111 2222", "email": None, "skills": ["motor", "heating"],
     "region": "east", "timezone": "Asia/Shanghai", "work_start": "08:00:00", "work_end": "17:00:00",
     "work_days": [1, 2, 3, 4, 5], "daily_capacity": 4, "active": True, "open_orders": 1,
     "created_at": iso(NOW - timedelta(days=100))},
    {"id": 2, "name": "Ma Li", "phone": None, "email": None, "skills": ["motor", "cleaning"], "region": "west",
     "timezone": "UTC", "work_start": "08:00:00", "work_end": "17:00:00", "work_days": [1, 2, 3, 4, 5],
     "daily_capacity": 4, "active": True, "open_orders": 1, "created_at": iso(NOW - timedelta(days=90))},
]
# Where each status may go, as the API's service_orders.models.TRANSITIONS says.
TRANSITIONS = {
    "new": ["scheduled", "assigned", "cancelled"], "scheduled": ["assigned", "cancelled"],
    "assigned": ["in_progress", "scheduled", "cancelled"], "in_progress": ["completed", "assigned", "cancelled"],
    "completed": [], "cancelled": [],
}


def order(order_id: int, device_id: str, *, opened_ago: timedelta, left: timedelta, **fields: Any) -> dict[str, Any]:
    """An open order as GET /service-orders answers it, due `left` from now (negative: overdue)."""
    state = "overdue" if left < timedelta(0) else "due_soon" if left <= timedelta(hours=4) else "ok"
    device = next(d for d in DEVICES + OTHER_DEVICES if d["id"] == device_id)
    owner = CUSTOMER if device["owner"] == CUSTOMER["id"] else None
    return {
        "id": order_id, "device_id": device_id, "customer_id": owner and owner["id"], "type": "repair",
        "fault_class": f"{fields.get('type', 'repair')}:{fields['skill']}", "priority": "normal", "status": "new",
        "reason": "", "source": "hotline", "explanation": None, "detection_ids": [],
        "opened_at": iso(NOW - opened_ago), "sla_due_at": iso(NOW + left), "sla_state": state,
        "time_left_s": left.total_seconds(), "escalations": 0, "technician_id": None, "appointment_start": None,
        "appointment_end": None, "completed_at": None, "outcome": None, "parts": [], "cost": None, "rating": None,
        "verification": None, "verify_by": None, "reopened": 0, "region": device["region"],
        "customer_name": owner and owner["name"], "customer_phone": owner and owner["phone"],
        "history": [{"at": iso(NOW - opened_ago), "actor": "engine", "actor_role": "engine", "change": "opened",
                     "from_status": None, "to_status": "new", "detail": {}}],
        **fields,
    }


ORDERS = [
    # In id order, not by urgency: the board sorts by time left itself.
    order(20, "OV-000001", opened_ago=timedelta(days=9), left=timedelta(days=-6), skill="heating",
          status="completed", reason="Oven does not heat", sla_state="met", time_left_s=None),
    order(21, "RH-000123", opened_ago=timedelta(hours=26), left=timedelta(hours=-2), skill="motor",
          priority="urgent", source="rule", reason="Fan motor stalled (E21)", detection_ids=[3], escalations=1,
          explanation=DETECTIONS[0]["explanation"]),
    order(22, "RH-000777", opened_ago=timedelta(days=1), left=timedelta(days=2, hours=4), skill="cleaning",
          type="maintenance", status="in_progress", technician_id=2, reason="Grease filter due for cleaning",
          appointment_start=iso(NOW - timedelta(hours=1)), appointment_end=iso(NOW + timedelta(hours=1))),
    order(23, "OV-000001", opened_ago=timedelta(hours=20, minutes=40), left=timedelta(hours=3, minutes=20),
          skill="heating", priority="high", status="assigned", technician_id=1, reason="Oven heats slowly",
          appointment_start=iso(TOMORROW_9), appointment_end=iso(TOMORROW_9 + timedelta(hours=2))),
]

CALL_TASKS = [
    {"id": 31, "order_id": 21, "customer_id": 7, "customer_name": "Li Wei", "device_id": "RH-000123",
     "phone": "+86 138 0000 0000", "reason": "Your range hood reported a stalled fan motor.",
     "script": "Hello Li Wei, this is CareLoop service calling about your range hood (RH-900). Your range hood "
               "reported a stalled fan motor. We have opened service order 21 and can send a technician: which "
               "day and time suit you?",
     "status": "open", "due_at": iso(NOW - timedelta(minutes=20)),
     "policy_reason": "consent to service calls by phone; 14:00 in Asia/Shanghai is daytime", "outcome": None,
     "attempts": 0, "notes": None, "created_at": iso(NOW - timedelta(hours=1)),
     "updated_at": iso(NOW - timedelta(hours=1))},
    {"id": 32, "order_id": None, "customer_id": 7, "customer_name": "Li Wei", "device_id": "OV-000001",
     "phone": "+86 138 0000 0000", "reason": "Your oven is due for its yearly check.",
     "script": "Hello Li Wei, this is CareLoop service calling about your oven (OV-500).", "status": "open",
     "due_at": iso(NOW + timedelta(hours=3)), "policy_reason": "consent to service calls by phone; not before 09:00",
     "outcome": None, "attempts": 1, "notes": "asked to call in the morning",
     "created_at": iso(NOW - timedelta(hours=5)), "updated_at": iso(NOW - timedelta(hours=2))},
    {"id": 33, "order_id": 22, "customer_id": None, "customer_name": None, "device_id": "RH-000777", "phone": None,
     "reason": "Your range hood's grease filter is due for cleaning.", "script": "Hello,", "status": "blocked",
     "due_at": iso(NOW - timedelta(days=1)), "policy_reason": "the device has no registered owner to call",
     "outcome": None, "attempts": 0, "notes": None, "created_at": iso(NOW - timedelta(days=1)),
     "updated_at": iso(NOW - timedelta(days=1))},
]


def proposals_for(found: dict[str, Any]) -> list[dict[str, Any]]:
    """The technicians with the order's skill, the device's region first, each with a window and why."""
    fitting = sorted((t for t in TECHNICIANS if found["skill"] in t["skills"]),
                     key=lambda t: (t["region"] != found["region"], t["id"]))
    return [
        {"technician_id": t["id"], "name": t["name"], "region": t["region"], "open_orders": t["open_orders"],
         "window_start": iso(TOMORROW_9 + timedelta(days=rank)),
         "window_end": iso(TOMORROW_9 + timedelta(days=rank, hours=2)),
         "reason": f"skill {found['skill']}; home region {t['region']}; {t['open_orders']} open order; free from "
                   f"{TOMORROW_9 + timedelta(days=rank):%a %d %b %H:%M} ({t['timezone']})"}
        for rank, t in enumerate(fitting)
    ]


def telemetry(device_id: str, query: dict[str, str]) -> dict[str, Any]:
    """Ten readings per asked metric, one per bucket, ending now (or at `until`)."""
    device = next(d for d in DEVICES + OTHER_DEVICES if d["id"] == device_id)
    metrics = [query["metric"]] if "metric" in query else list(device["latest"])
    end = datetime.fromisoformat(query["until"]) if "until" in query else NOW
    items = [
        {"ts": iso(end - timedelta(minutes=15 * step)), "metric": metric, "value": 0.5 + step / 10,
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
    # False: answer /whoami 404, as an API from before it existed does.
    whoami: bool = True
    # Each test gets its own copy, as acknowledging changes them.
    detections: list[dict[str, Any]] = field(default_factory=lambda: copy.deepcopy(DETECTIONS))
    orders: list[dict[str, Any]] = field(default_factory=lambda: copy.deepcopy(ORDERS))
    call_tasks: list[dict[str, Any]] = field(default_factory=lambda: copy.deepcopy(CALL_TASKS))
    # The JSON bodies POSTed, by path, in order.
    bodies: list[tuple[str, Any]] = field(default_factory=list)
    # A path here answers 409 with this detail, as the API does when a change does not fit (a taken window).
    refuse: dict[str, str] = field(default_factory=dict)

    def asked(self, path: str, method: str = "GET") -> list[dict[str, str]]:
        return [query for asked_path, query, _, how in self.requests if asked_path == path and how == method]

    def posted(self, path: str) -> list[Any]:
        """The bodies POSTed to `path`, in order."""
        return [body for posted_path, body in self.bodies if posted_path == path]

    def answer(
        self, path: str, query: dict[str, str], authorization: str | None, method: str = "GET", body: Any = None
    ) -> tuple[int, Any]:
        self.requests.append((path, query, authorization, method))
        if method == "POST":
            self.bodies.append((path, body))
        if path == "/health":
            # Public, as a load balancer must be able to ask without a token.
            return 200, {"status": "ok", "database": {"ok": True, "detail": "PostgreSQL 16"},
                         "broker": {"ok": True, "detail": "connected"}}
        if self.status_override:
            return self.status_override, {"detail": "simulated failure"}
        if authorization != f"Bearer {TOKEN}":
            return 401, {"detail": "invalid or missing token"}
        parts = path.strip("/").split("/")
        if path == "/whoami" and self.whoami:
            return 200, {"role": self.role, "name": "Zhang Wei", "technician_id": None}
        allowed = {"/webhooks": ("admin",), "/reports/offers": ("admin", "marketer")}
        if path in allowed:
            if self.role not in allowed[path]:
                return 403, {"detail": f"role {self.role!r} may not do this"}
            return 200, {"items": [], "total": 0}
        if method == "POST":
            if path in self.refuse:
                return 409, {"detail": self.refuse[path]}
            return self.answer_post(parts, body or {})
        if path == "/models":
            return 200, MODELS
        if path == "/fleet/summary":
            return 200, {"devices": 200, "online": 150, "offline": 40, "never_seen": 10,
                         "by_kind": [{"kind": "range_hood", "devices": 120, "online": 100},
                                     {"kind": "oven", "devices": 80, "online": 50}],
                         "missing_seq": 17, "quarantined_24h": 4, "readings_24h": 345678}
        if path == "/fleet/forecast":
            if self.role not in ("admin", "dispatcher", "marketer"):
                return 403, {"detail": f"role {self.role!r} may not do this"}
            return 200, forecast(int(query.get("days", "30")))
        if path == "/devices":
            needle = query.get("q", "").lower()
            items = [
                d for d in DEVICES if needle in d["id"].lower() and query.get("kind") in (None, d["kind"])
            ]
            return 200, {"items": items, "total": len(items)}
        if parts[0] == "devices" and len(parts) >= 2:
            device = next((d for d in DEVICES + OTHER_DEVICES if d["id"] == parts[1]), None)
            if device is None:
                return 404, {"detail": f"no device {parts[1]}"}
            if parts[2:] == ["events"]:
                since = datetime.fromisoformat(query["since"]) if "since" in query else NOW - timedelta(days=1)
                items = [e for e in EVENTS.get(parts[1], []) if datetime.fromisoformat(e["ts"]) >= since]
                return 200, {"items": items, "total": len(items)}
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
                if all(query.get(name) in (None, d[name]) for name in ("status", "rule_id", "device_id", "severity"))
            ]
            items.sort(key=lambda d: (d["opened_at"], d["id"]), reverse=True)
            if query.get("order") == "urgent":
                items.sort(key=lambda d: ["critical", "warning", "info"].index(d["severity"]))
            offset, limit = int(query.get("offset", 0)), int(query.get("limit", 100))
            return 200, {"items": items[offset:offset + limit], "total": len(items)}
        if parts[0] == "detections" and len(parts) == 2:
            found = self.detection(parts[1])
            return (200, found) if found else (404, {"detail": f"no detection {parts[1]}"})
        if parts[0] in ("service-orders", "technicians", "call-tasks"):
            return self.answer_service(parts, query)
        return 404, {"detail": "Not Found"}

    def order(self, order_id: str) -> dict[str, Any] | None:
        return next((o for o in self.orders if str(o["id"]) == order_id), None)

    def answer_service(self, parts: list[str], query: dict[str, str]) -> tuple[int, Any]:
        """GETs of service orders, technicians and call tasks."""
        dispatcher_only = parts[0] == "technicians" or parts[2:] == ["proposals"]
        if dispatcher_only and self.role not in ("admin", "dispatcher"):
            return 403, {"detail": f"role {self.role!r} may not do this; needs one of: admin, dispatcher"}
        if parts == ["service-orders"]:
            wanted = query.get("status")
            items = [
                {key: value for key, value in o.items() if key != "history"} for o in self.orders
                if (wanted is None or o["status"] == wanted
                    or (wanted == "open" and o["status"] not in ("completed", "cancelled")))
                and all(query.get(name) in (None, o[name]) for name in ("region", "skill", "priority"))
                and (query.get("overdue") != "true" or o["sla_state"] == "overdue")
            ]
            return 200, {"items": items, "total": len(items)}
        if parts[0] == "service-orders":
            found = self.order(parts[1])
            if found is None:
                return 404, {"detail": f"no service order {parts[1]}"}
            if parts[2:] == ["proposals"]:
                return 200, proposals_for(found)
            return 200, {**found, "allowed_transitions": TRANSITIONS[found["status"]]}
        if parts == ["technicians"]:
            return 200, {"items": TECHNICIANS, "total": len(TECHNICIANS)}
        if parts == ["call-tasks"]:
            if self.role not in ("admin", "dispatcher", "technician"):
                return 403, {"detail": f"role {self.role!r} may not do this; needs one of: admin, dispatcher, "
                                       "technician"}
            regions = {d["id"]: d["region"] for d in DEVICES + OTHER_DEVICES}
            items = [t for t in self.call_tasks if query.get("status") in (None, t["status"])
                     and query.get("region") in (None, regions[t["device_id"]])]
            return 200, {"items": items, "total": len(items)}
        return 404, {"detail": "Not Found"}

    def detection(self, detection_id: str) -> dict[str, Any] | None:
        return next((d for d in self.detections if str(d["id"]) == detection_id), None)

    def answer_post(self, parts: list[str], body: dict[str, Any]) -> tuple[int, Any]:
        if parts[0] in ("service-orders", "call-tasks"):
            return self.answer_service_post(parts, body)
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

    def answer_service_post(self, parts: list[str], body: dict[str, Any]) -> tuple[int, Any]:
        """Assign, move and complete an order, record a call: the API's rules, in miniature."""
        if self.role not in ("admin", "dispatcher"):
            return 403, {"detail": f"role {self.role!r} may not do this; needs one of: admin, dispatcher"}
        now = iso(datetime.now(UTC))
        if parts[0] == "call-tasks":
            task = next((t for t in self.call_tasks if str(t["id"]) == parts[1]), None)
            if task is None:
                return 404, {"detail": f"no call task {parts[1]}"}
            if task["status"] != "open":
                return 409, {"detail": f"call task {parts[1]} is {task['status']}"}
            again = body["outcome"] in ("no_answer", "call_back")
            retry = body.get("retry_at") or iso(datetime.now(UTC) + timedelta(hours=2))
            task |= {"outcome": body["outcome"], "status": "open" if again else "done",
                     "attempts": task["attempts"] + 1, "due_at": retry if again else task["due_at"],
                     "notes": body.get("notes"), "updated_at": now}
            return 200, task
        found = self.order(parts[1])
        if found is None:
            return 404, {"detail": f"no service order {parts[1]}"}
        before = found["status"]
        if parts[2:] == ["assign"]:
            if before not in ("new", "scheduled", "assigned"):
                return 409, {"detail": f"order {parts[1]} is {before}: only new, scheduled or assigned orders are "
                                       "assigned"}
            window = [p for p in proposals_for(found) if p["technician_id"] == body["technician_id"]][0]
            found |= {"technician_id": body["technician_id"], "status": "assigned",
                      "appointment_start": body.get("start") or window["window_start"],
                      "appointment_end": body.get("end") or window["window_end"]}
        elif parts[2:] == ["status"]:
            if body["status"] not in TRANSITIONS[before]:
                allowed = ", ".join(TRANSITIONS[before]) or "nothing: it is closed"
                return 409, {"detail": f"order {parts[1]} is {before}; it may go to {allowed}, not {body['status']}"}
            found["status"] = body["status"]
        elif parts[2:] == ["complete"]:
            if before != "in_progress":
                return 409, {"detail": f"order {parts[1]} is {before}; only an order in progress is completed"}
            found |= {"status": "completed", "outcome": body["outcome"], "parts": body["parts"],
                      "cost": body["cost"], "rating": body["rating"], "completed_at": now, "sla_state": "met",
                      "time_left_s": None, "verification": "pending" if found["detection_ids"] else "not_needed"}
        else:
            return 404, {"detail": "Not Found"}
        found["history"].append({"at": now, "actor": "Zhang Wei", "actor_role": self.role, "change": parts[2],
                                 "from_status": before, "to_status": found["status"], "detail": body})
        return 200, {**found, "allowed_transitions": TRANSITIONS[found["status"]]}


def serve(api: FakeApi) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the name http.server calls)
            self.respond("GET")

        def do_POST(self) -> None:  # noqa: N802
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.respond("POST", json.loads(raw) if raw else None)

        def respond(self, method: str, sent: Any = None) -> None:
            split = urlsplit(self.path)
            query = {key: values[-1] for key, values in parse_qs(split.query).items()}
            status, body = api.answer(split.path, query, self.headers.get("Authorization"), method, sent)
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
