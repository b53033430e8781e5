"""Hostile input to every operation of the API: never a 5xx, and a 422 naming the place where one is due.

The operations, their parameters and their body fields come from the app's own OpenAPI schema, so an endpoint
added later is covered without touching this file. Each parameter and each body field gets, one at a time:
NUL (raw `%00` and JSON `\\u0000`), lone surrogates, dates in year 1 and 9999, numbers beyond int64, wrong
types, huge and deep values; each body also gets whole-document attacks (50,000-deep JSON and YAML, an alias
bomb, invalid UTF-8, YAML scalars the loader chokes on).

Why a generator of our own rather than schemathesis (which installs and runs against the ASGI app): these
values are the point, and schemathesis draws from what the schema allows (or, in negative mode, from random
violations of it); in a 37-second run of 100 examples per operation it found the NUL case and none of the rest.
The catalogue below is deterministic, covers every parameter with every attack, and runs in a few seconds.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import psycopg2
import pytest
from fastapi.testclient import TestClient
from psycopg2 import sql

from careloop.app import create_app
from careloop.db import Database
from careloop.inputs import MAX_DOCUMENT_DEPTH
from tests.factories import make_customer, make_device

pytestmark = pytest.mark.integration
ADMIN_TOKEN = "admin-token-for-tests"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
DEEP = 50_000
RULE = {
    "id": "hostile-grease",
    "description": "grease filter due",
    "applies_to": {"kind": "range_hood"},
    "when": {"usage": {"metric": "run_hours", "since": "maintenance_done", "at_least": 180}},
    "then": [{"call_customer": {"reason": "grease filter due"}}],
    "severity": "warning",
    "cooldown": "30d",
}
# Valid bodies to vary one field of; an operation not named here gets one built from its schema.
BASE_BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("post", "/customers"): {"name": "Wang Fang", "timezone": "Asia/Shanghai", "region": "east",
                             "consents": [{"purpose": "service", "channel": "phone", "granted": True}]},
    ("post", "/devices"): {"id": "RH-HOSTILE", "model": "RH-900", "purchased_on": "2020-03-01", "region": "east"},
    ("post", "/rules"): RULE,
    ("put", "/rules/{rule_id}"): RULE,
    ("post", "/rules/{rule_id}/backtest"): {"start": "2026-01-01T00:00:00Z", "end": "2026-01-02T00:00:00Z"},
}


# --- the attacks ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Attack:
    """A hostile value; `refused` says the API must answer 422 naming the place (else: anything but 5xx)."""

    label: str
    value: str  # parameters: the text sent (already percent-encoded where `encoded`); bodies: raw JSON text
    refused: bool = False
    encoded: bool = False
    only_for: frozenset[str] = field(default_factory=frozenset)  # schema types it must be refused for


INT_TYPES = frozenset({"integer"})
DATE_TYPES = frozenset({"date-time", "date"})
EXTREME_DATES = ["0001-01-01T00:00:00", "0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999999",
                 "9999-12-31T23:59:59-12:00", "0001-01-01", "9999-12-31"]
BEYOND_INT64 = [str(2**63), str(2**64), str(-(2**63) - 1), "1" + "0" * 30, "9" * 5000]

PARAMETER_ATTACKS = [
    Attack("raw NUL", "%00", refused=True, encoded=True),
    Attack("NUL inside", "a%00b", refused=True, encoded=True),
    Attack("NUL-only key and value", "%00%00", refused=True, encoded=True),
    Attack("surrogate as CESU bytes", "%ED%A0%80", encoded=True),
    Attack("invalid UTF-8", "%FF%FE", encoded=True),
    Attack("overlong NUL", "%C0%80", encoded=True),
    Attack("percent alone", "%", encoded=True),
    *[Attack(f"date {text}", text, refused=True, only_for=DATE_TYPES) for text in EXTREME_DATES],
    Attack("February 30th", "2026-02-30"),
    *[Attack(f"int {text[:12]}", text, refused=True, only_for=INT_TYPES) for text in BEYOND_INT64],
    *[Attack(f"value {text!r}", text) for text in
      ["", " ", "-1", "0", "1.5", "1e400", "NaN", "-inf", "true", "null", "[]", "{}", "../..", "\t\n", "ü€😀"]],
    Attack("8k characters", "x" * 8_000),  # h11, under uvicorn, refuses longer request lines anyway
]

JSON_FIELD_ATTACKS = [
    Attack("JSON \\u0000", json.dumps("\x00"), refused=True),
    Attack("JSON NUL inside", json.dumps("a\x00b"), refused=True),
    Attack("lone high surrogate", '"\\ud800"', refused=True),
    Attack("lone low surrogate inside", '"x\\udfffy"', refused=True),
    Attack("deep list", "[" * DEEP + "]" * DEEP, refused=True),
    Attack("deep object", '{"a":' * DEEP + "1" + "}" * DEEP, refused=True),
    Attack("NUL key in an object", '{"\\u0000": 1}', refused=True),
    *[Attack(f"date {text}", json.dumps(text)) for text in EXTREME_DATES],
    *[Attack(f"int {text[:12]}", text) for text in BEYOND_INT64],
    *[Attack(f"value {text[:20]}", text) for text in
      ["null", "true", "1.5", "-1", "0", "1e400", "NaN", "-Infinity", "[]", "{}", '""', '"ü€😀"',
       '"\\ud83d\\ude00"', json.dumps("x" * 100_000), "[" + ",".join(["1"] * 10_000) + "]"]],
]

DEEP_YAML_FLOW = "[" * DEEP + "]" * DEEP
DEEP_YAML_BLOCK = "- " * DEEP + "x"
# Deep past any limit, yet within a rule document's 16,384 bytes: what the YAML reader is protected from, where a
# document of 50,000 levels is refused by its size before it is read.
SHALLOW_ENOUGH = 3_000
DEEP_SMALL_YAML_FLOW = "[" * SHALLOW_ENOUGH + "]" * SHALLOW_ENOUGH
DEEP_SMALL_YAML_BLOCK = "- " * SHALLOW_ENOUGH + "x"
ALIAS_BOMB = "a: &a [x,x,x,x,x,x,x,x,x,x]\n" + "".join(
    f"{chr(98 + level)}: &{chr(98 + level)} [{','.join([f'*{chr(97 + level)}'] * 10)}]\n" for level in range(8)
)


@dataclass(frozen=True)
class BodyAttack:
    label: str
    content: bytes
    content_type: str
    refused: bool = False


def document_attacks(yaml_accepted: bool) -> list[BodyAttack]:
    """Attacks on the body as a whole."""
    json_type = "application/json"
    attacks = [
        BodyAttack("50,000-deep JSON list", ("[" * DEEP + "]" * DEEP).encode(), json_type, refused=True),
        BodyAttack("50,000-deep JSON object", ('{"a":' * DEEP + "1" + "}" * DEEP).encode(), json_type, refused=True),
        BodyAttack("deep JSON list, no content type", ("[" * DEEP).encode(), "", refused=True),
        BodyAttack("just over the depth limit", ("[" * (MAX_DOCUMENT_DEPTH + 1) + "]" * (MAX_DOCUMENT_DEPTH + 1))
                   .encode(), json_type, refused=True),
        BodyAttack("invalid UTF-8", b'{"name": "\xff\xfe"}', json_type, refused=True),
        BodyAttack("UTF-8-encoded surrogate", b'{"name": "\xed\xa0\x80"}', json_type, refused=True),
        BodyAttack("UTF-16 JSON with a NUL", json.dumps({"id": "a\x00"}).encode("utf-16"), json_type, refused=True),
        BodyAttack("UTF-16 JSON", json.dumps({"a": 1}).encode("utf-16"), json_type, refused=True),
        BodyAttack("UTF-32 JSON", json.dumps({"a": 1}).encode("utf-32"), json_type, refused=True),
        BodyAttack("UTF-16 sent as text/plain", json.dumps({"a": 1}).encode("utf-16"), "text/plain", refused=True),
        BodyAttack("a 5000-digit number", b'{"id": ' + b"9" * 5000 + b"}", json_type, refused=True),
        BodyAttack("empty", b"", json_type),
        BodyAttack("not JSON", b"{nope", json_type),
        BodyAttack("a JSON string", b'"\\u0000"', json_type, refused=True),
        BodyAttack("null", b"null", json_type),
        BodyAttack("a list", b"[1, 2]", json_type),
        BodyAttack("1e400", b"1e400", json_type),
        BodyAttack("text/plain", b"id: x", "text/plain"),
        BodyAttack("a form", b"name=a%00b", "application/x-www-form-urlencoded", refused=True),
        BodyAttack("too large", b'{"id": "' + b"x" * (1 << 21) + b'"}', json_type),
    ]
    if yaml_accepted:
        yaml_type = "application/yaml"
        attacks += [
            BodyAttack("3,000-deep YAML flow", DEEP_SMALL_YAML_FLOW.encode(), yaml_type, refused=True),
            BodyAttack("3,000-deep YAML block", DEEP_SMALL_YAML_BLOCK.encode(), yaml_type, refused=True),
            BodyAttack("deep YAML sent as JSON", DEEP_SMALL_YAML_BLOCK.encode(), "application/json", refused=True),
            BodyAttack("YAML alias bomb", ALIAS_BOMB.encode(), yaml_type, refused=True),
            BodyAttack("YAML NUL escape", b'id: "a\\0b"\nwhen: {fault: {codes: [E21]}}', yaml_type, refused=True),
            BodyAttack("YAML surrogate escape", b'id: x\ndescription: "\\ud800"', yaml_type, refused=True),
            BodyAttack("YAML month 13", b"id: x\nstarts: 2001-13-45", yaml_type, refused=True),
            BodyAttack("YAML bad float tag", b"id: x\nseverity: !!float abc", yaml_type, refused=True),
            BodyAttack("YAML 5000-digit int", b"id: x\ncooldown: " + b"9" * 5000, yaml_type, refused=True),
            BodyAttack("YAML invalid UTF-8", b"id: \xff\xfe", yaml_type),
            BodyAttack("UTF-16 sent as YAML", json.dumps({"a": 1}).encode("utf-16"), yaml_type),
            BodyAttack("YAML python tag", b"id: !!python/object:os.system x", yaml_type),
            BodyAttack("YAML unhashable key", b"? [a]\n: 1", yaml_type),
            BodyAttack("YAML scalar", b"just text", yaml_type),
            BodyAttack("YAML tabs", b"id:\t\tx\n\t- y", yaml_type),
        ]
    return attacks


# --- the schema -------------------------------------------------------------------------------------------------


def schema_app() -> Any:
    # The pool opens no connection until a request needs one, so the schema can be read without a database.
    return create_app(Database("postgresql://nobody@127.0.0.1:1/none"), admin_token=ADMIN_TOKEN, mqtt_url=None)


SCHEMA = schema_app().openapi()


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    spec: dict[str, Any]

    def __str__(self) -> str:
        return f"{self.method.upper()} {self.path}"

    @property
    def parameters(self) -> list[dict[str, Any]]:
        return [parameter for parameter in self.spec.get("parameters", []) if parameter["in"] in ("path", "query")]

    @property
    def body_content(self) -> dict[str, Any]:
        return self.spec.get("requestBody", {}).get("content", {})


def operations() -> list[Operation]:
    return [
        Operation(method, path, spec)
        for path, methods in SCHEMA["paths"].items()
        for method, spec in methods.items()
        if method in ("get", "post", "put", "patch", "delete")
    ]


def resolve(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema behind a $ref, and the first non-null choice of an anyOf (`int | None`)."""
    while True:
        if "$ref" in schema:
            schema = SCHEMA["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
        elif "anyOf" in schema:
            schema = next((s for s in schema["anyOf"] if s.get("type") != "null"), schema["anyOf"][0])
        else:
            return schema


def kind_of(schema: dict[str, Any]) -> str:
    """`integer`, `date-time`, `date`, `string`, ...: what an attack's `only_for` is matched against."""
    schema = resolve(schema)
    return schema.get("format") if schema.get("format") in DATE_TYPES else schema.get("type", "object")


def example(schema: dict[str, Any]) -> Any:
    """A plain value of the schema's type, for bodies of operations BASE_BODIES does not name."""
    schema = resolve(schema)
    if "enum" in schema:
        return schema["enum"][0]
    if "default" in schema:
        return schema["default"]
    plain = {"date-time": "2026-01-01T00:00:00Z", "date": "2020-01-01", "integer": 1, "number": 1.0,
             "boolean": True, "array": [], "string": "x"}
    kind = kind_of(schema)
    if kind in plain:
        return plain[kind]
    required = schema.get("required", [])
    return {name: example(part) for name, part in schema.get("properties", {}).items() if name in required}


# --- the fleet the attacks hit ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hostile_database_url(database_server_url: str, template_database: str) -> Iterator[str]:
    """One clone of the template for the whole module: the attacks change nothing any other attack relies on,
    and a clone per operation would take most of the module's time."""
    name = f"careloop_hostile_{uuid.uuid4().hex[:12]}"
    params = psycopg2.extensions.parse_dsn(database_server_url)
    admin = psycopg2.connect(**{**params, "dbname": "postgres"})
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
            sql.Identifier(name), sql.Identifier(template_database)))
    yield psycopg2.extensions.make_dsn(database_server_url, dbname=name)
    with admin.cursor() as cursor:
        cursor.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    admin.close()


@pytest.fixture(scope="module")
def client(hostile_database_url: str) -> Iterator[TestClient]:
    database = Database(hostile_database_url, max_connections=4)
    with database.transaction() as conn:
        customer = make_customer(conn)
        make_device(conn, id="RH-TARGET", owner=customer.id)
    app = create_app(database, admin_token=ADMIN_TOKEN, mqtt_url=None)
    with TestClient(app, raise_server_exceptions=False) as test_client:
        assert test_client.post("/rules", json=RULE, headers=ADMIN).status_code == 201
        test_client.path_values = {  # type: ignore[attr-defined]
            "customer_id": str(customer.id), "device_id": "RH-TARGET", "rule_id": RULE["id"],
        }
        yield test_client
    database.close()


def path_for(operation: Operation, values: dict[str, str], override: tuple[str, str] | None = None) -> str:
    """The operation's path with each parameter filled in (`override`: one, already encoded)."""
    path = operation.path
    for parameter in operation.parameters:
        if parameter["in"] != "path":
            continue
        name = parameter["name"]
        if override is not None and override[0] == name:
            text = override[1]
        else:
            default = "1" if kind_of(parameter["schema"]) == "integer" else "x"
            text = quote(values.get(name, default), safe="")
        path = path.replace("{" + name + "}", text)
    return path


def check(answer: Any, *, refused: bool, place: list[str | int], what: str) -> str | None:
    """A failure message, or None when the answer is what it must be."""
    if answer.status_code >= 500:
        return f"{what}: {answer.status_code} {answer.text[:200]}"
    is_json = answer.headers.get("content-type", "").startswith("application/json")
    if answer.status_code >= 400 and not (is_json and "detail" in answer.json()):
        return f"{what}: {answer.status_code} is not JSON with a detail: {answer.text[:200]}"
    if refused:
        if answer.status_code != 422:
            return f"{what}: expected 422, got {answer.status_code} {answer.text[:200]}"
        locs = [error.get("loc", []) for error in answer.json()["detail"]] if isinstance(
            answer.json()["detail"], list) else []
        if not any(loc[: len(place)] == place for loc in locs):
            return f"{what}: 422 does not name {place}: {answer.text[:300]}"
    return None


OPERATIONS = operations()


def test_the_schema_lists_the_pinned_operations() -> None:
    named = {str(operation) for operation in OPERATIONS}
    assert {"POST /customers", "GET /devices/{device_id}/telemetry", "POST /rules", "GET /detections"} <= named


@pytest.mark.parametrize("operation", OPERATIONS, ids=str)
def test_no_parameter_of_any_operation_gives_a_5xx(client: TestClient, operation: Operation) -> None:
    """Every path and query parameter, one at a time, with every attack; NUL, years 1 and 9999 (dates) and
    values beyond int64 (integers) must be a 422 naming the parameter."""
    values = client.path_values  # type: ignore[attr-defined]
    body = BASE_BODIES.get((operation.method, operation.path))
    if body is None and "application/json" in operation.body_content:
        body = example(operation.body_content["application/json"]["schema"])
    failures = []
    for parameter in operation.parameters:
        name, where, kind = parameter["name"], parameter["in"], kind_of(parameter["schema"])
        for attack in PARAMETER_ATTACKS:
            text = attack.value if attack.encoded else quote(attack.value, safe="")
            if where == "path":
                if attack.value in ("", "../..") or "%2F" in text:
                    continue  # a different path, not a value of this one
                url = path_for(operation, values, override=(name, text))
            else:
                url = f"{path_for(operation, values)}?{quote(name)}={text}"
            answer = client.request(operation.method, url, headers=ADMIN, json=body)
            refused = attack.refused and (not attack.only_for or kind in attack.only_for)
            failure = check(answer, refused=refused, place=[where, name], what=f"{operation} {name}={attack.label}")
            if failure:
                failures.append(failure)
    assert not failures, "\n".join(failures)


BODY_OPERATIONS = [operation for operation in OPERATIONS if operation.body_content]


@pytest.mark.parametrize("operation", BODY_OPERATIONS, ids=str)
def test_no_body_field_of_any_operation_gives_a_5xx(client: TestClient, operation: Operation) -> None:
    """Every top-level field of the body, one at a time, with every attack; NUL, surrogates and deep values
    must be a 422 naming the field."""
    url = path_for(operation, client.path_values)  # type: ignore[attr-defined]
    base = BASE_BODIES.get((operation.method, operation.path))
    if base is None:
        base = example(operation.body_content.get("application/json", {}).get("schema", {}))
    assert isinstance(base, dict)
    marker = "__hostile_value__"
    failures = []
    for name in base:
        template = json.dumps({**base, name: marker})
        for attack in JSON_FIELD_ATTACKS:
            content = template.replace(json.dumps(marker), attack.value).encode()
            answer = client.request(operation.method, url, headers={**ADMIN, "Content-Type": "application/json"},
                                    content=content)
            failure = check(answer, refused=attack.refused, place=["body", name],
                            what=f"{operation} body.{name}={attack.label}")
            if failure:
                failures.append(failure)
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("operation", BODY_OPERATIONS, ids=str)
def test_no_hostile_document_gives_a_5xx(client: TestClient, operation: Operation) -> None:
    """Whole-body attacks: deep JSON and YAML, alias bombs, invalid encodings, scalars YAML cannot load."""
    url = path_for(operation, client.path_values)  # type: ignore[attr-defined]
    yaml_accepted = any("yaml" in content_type for content_type in operation.body_content)
    failures = []
    for attack in document_attacks(yaml_accepted):
        headers = {**ADMIN, "Content-Type": attack.content_type} if attack.content_type else ADMIN
        answer = client.request(operation.method, url, headers=headers, content=attack.content)
        failure = check(answer, refused=attack.refused, place=["body"], what=f"{operation} {attack.label}")
        if failure:
            failures.append(failure)
    assert not failures, "\n".join(failures)


# --- the 500s this issue was opened for, by name -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "url", "body", "place"),
    [
        ("get", "/customers?q=%00", None, ["query", "q"]),
        ("get", "/devices/RH%00X", None, ["path", "device_id"]),
        ("get", "/devices?region=%00", None, ["query", "region"]),
        ("get", "/detections?device_id=%00", None, ["query", "device_id"]),
        ("get", "/rules/a%00b", None, ["path", "rule_id"]),
        ("get", "/ingest/quarantine?reason=%00", None, ["query", "reason"]),
        ("post", "/customers", '{"name": "Wang\\u0000Fang"}', ["body", "name"]),
        ("post", "/customers", '{"name": "Wang Fang", "region": "\\ud800"}', ["body", "region"]),
        ("post", "/devices", '{"id": "RH-1", "model": "RH-900", "region": "\\u0000"}', ["body", "region"]),
        ("get", "/devices/RH-TARGET/telemetry?until=0001-01-01T00:00:00", None, ["query", "until"]),
        ("get", "/devices/RH-TARGET/telemetry?since=9999-12-31T23:59:59", None, ["query", "since"]),
        ("get", "/customers?offset=9223372036854775808", None, ["query", "offset"]),
        ("get", "/customers/9223372036854775808", None, ["path", "customer_id"]),
        ("post", "/rules", "[" * DEEP + "]" * DEEP, ["body"]),
        ("post", "/rules", '{"a":' * DEEP + "1" + "}" * DEEP, ["body"]),
        ("post", "/rules/hostile-grease/backtest", '{"start": "0001-01-01T00:00:00Z", "end": "0001-01-02T00:00:00Z"}',
         ["body", "start"]),
    ],
)
def test_each_reported_500_is_a_422_naming_the_field(client: TestClient, method, url, body, place) -> None:
    answer = client.request(method, url, headers={**ADMIN, "Content-Type": "application/json"}, content=body)
    assert answer.status_code == 422, answer.text
    assert any(error["loc"][: len(place)] == place for error in answer.json()["detail"]), answer.text


@pytest.mark.parametrize("url", ["/customers/-9223372036854775808", "/service-orders/-9223372036854775808",
                                 "/technicians/-9223372036854775808", "/detections/-9223372036854775808"])
def test_the_smallest_bigint_id_is_not_found_like_any_other(client: TestClient, url: str) -> None:
    """PostgreSQL reads `-9223372036854775808::bigint` as minus an out-of-range number; the id is a 404 anyway."""
    answer = client.get(url, headers=ADMIN)
    assert answer.status_code == 404, answer.text


@pytest.mark.parametrize("document", [DEEP_SMALL_YAML_FLOW, DEEP_SMALL_YAML_BLOCK,
                                      "when: " + "{a: " * SHALLOW_ENOUGH + "1" + "}" * SHALLOW_ENOUGH])
def test_a_3000_deep_yaml_rule_is_a_422(client: TestClient, document: str) -> None:
    answer = client.post("/rules", content=document, headers={**ADMIN, "Content-Type": "application/yaml"})
    assert answer.status_code == 422, answer.text
    assert "nested deeper" in answer.text


@pytest.mark.parametrize("document", [DEEP_YAML_FLOW, DEEP_YAML_BLOCK, "when: " + "{a: " * DEEP + "1" + "}" * DEEP])
def test_a_50000_deep_yaml_rule_is_refused_by_its_size_before_it_is_read(client: TestClient, document: str) -> None:
    answer = client.post("/rules", content=document, headers={**ADMIN, "Content-Type": "application/yaml"})
    assert answer.status_code == 422, answer.text
    [error] = answer.json()["detail"]
    assert error["loc"] == [] and "at most 16384 (MAX_RULE_BYTES)" in error["msg"]


def test_strings_with_nul_or_surrogates_name_their_json_path(client: TestClient) -> None:
    rule = {**RULE, "then": [{"call_customer": {"reason": "grease\x00filter"}}]}
    answer = client.post("/rules", content=json.dumps(rule), headers={**ADMIN, "Content-Type": "application/json"})
    assert answer.status_code == 422
    assert answer.json()["detail"][0]["loc"] == ["body", "then", 0, "call_customer", "reason"]
    yaml_rule = 'id: x\nthen:\n  - call_customer: {reason: "grease\\ud800"}\n'
    answer = client.post("/rules", content=yaml_rule, headers={**ADMIN, "Content-Type": "application/yaml"})
    assert answer.status_code == 422
    assert answer.json()["detail"][0]["loc"] == ["body", "then", 0, "call_customer", "reason"]


def test_a_valid_yaml_rule_with_anchors_and_quoted_text_still_passes(client: TestClient) -> None:
    """The guard refuses only what it must: ordinary YAML, unicode text and aliases are untouched."""
    document = """
id: anchored-rule
description: "Fettfilter reinigen – 清洁油网 ✓"
applies_to: {kind: range_hood}
when:
  all:
    - &usage {usage: {metric: run_hours, since: maintenance_done, at_least: 180}}
    - *usage
then:
  - call_customer: {reason: "grease filter due"}
severity: warning
"""
    answer = client.post("/rules", content=document, headers={**ADMIN, "Content-Type": "application/yaml"})
    assert answer.status_code == 201, answer.text
