"""What no handler can read or store, found before it reaches one: NUL and lone surrogates in text, JSON and YAML
nested past what the parsers survive, YAML whose aliases expand past any document's size, scalars the YAML loader
fails on. The API's input guard (careloop.app) applies it to every request; an endpoint that reads a document
carried inside a field (a draft rule's YAML text) applies it to that text too."""

from __future__ import annotations

import itertools
import json
import math
import re
from dataclasses import dataclass
from typing import Any

import yaml
from fastapi.responses import JSONResponse
from starlette.datastructures import QueryParams

MAX_BODY_BYTES = 1 << 20  # the largest document the API takes (a rule is a few kB)
MAX_DOCUMENT_DEPTH = 64  # nesting of a JSON or YAML body; a rule nests about ten levels
MAX_DOCUMENT_VALUES = 100_000  # values in a YAML body once its aliases are expanded ("billion laughs")
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
_SURROGATE = re.compile("[\ud800-\udfff]")
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_A_BRACKET = re.compile(r"[^\[\]{}]+")
_JSON_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{},]', re.DOTALL)

Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class InputProblem:
    """Why a request is refused, and where: a FastAPI-style validation error."""

    loc: Loc
    msg: str
    type: str
    status_code: int = 422

    def error(self) -> dict[str, Any]:
        """The problem as one error of a 422's `detail` list."""
        return {"type": self.type, "loc": [_printable(part) for part in self.loc], "msg": self.msg}

    def response(self) -> JSONResponse:
        return JSONResponse({"detail": [self.error()]}, status_code=self.status_code)


def _printable(part: str | int) -> str | int:
    """A location part safe to echo: the offending characters themselves would break the JSON answer."""
    if isinstance(part, int) or text_problem(part) is None:
        return part
    return part.encode("unicode_escape").decode("ascii")


def text_problem(text: str) -> tuple[str, str] | None:
    """(type, message) when `text` cannot be stored or encoded, else None."""
    if "\x00" in text:
        return "string_nul", "must not contain the NUL character (\\u0000)"
    if not text.isascii() and _SURROGATE.search(text):
        return "string_surrogate", "must not contain a lone UTF-16 surrogate (\\ud800 to \\udfff)"
    return None


def text_at(loc: Loc, text: str) -> InputProblem | None:
    problem = text_problem(text)
    return None if problem is None else InputProblem(loc, problem[1], problem[0])


def _too_deep(loc: Loc) -> InputProblem:
    return InputProblem(loc, f"nested deeper than {MAX_DOCUMENT_DEPTH} levels", "too_deep")


def json_depth(text: str) -> int:
    """How deep brackets nest in `text`, outside JSON strings; a safe over-estimate for text that is not JSON."""
    brackets = _NOT_A_BRACKET.sub("", _JSON_STRING.sub("", text))
    return max(itertools.accumulate(1 if bracket in "[{" else -1 for bracket in brackets), default=0)


def json_too_deep_at(text: str) -> Loc:
    """The path of the first container nested deeper than allowed (for text json_depth found too deep).

    A token walk without recursion, slower than json_depth's, so only run once the answer is known to be a 422."""
    path: list[str | int] = []  # the key or index of each open container's current member
    in_object: list[bool] = []
    for token in _JSON_TOKEN.finditer(text):
        lexeme = token.group()
        if lexeme in "[{":
            if len(in_object) >= MAX_DOCUMENT_DEPTH:
                return ("body", *path)
            in_object.append(lexeme == "{")
            path.append("?" if lexeme == "{" else 0)
        elif lexeme in "]}" and in_object:
            in_object.pop()
            path.pop()
        elif lexeme == "," and in_object and not in_object[-1]:
            path[-1] = int(path[-1]) + 1
        elif lexeme.startswith('"') and in_object and in_object[-1] and _is_key(text, token.end()):
            path[-1] = _json_key(lexeme)
    return ("body",)


def _is_key(text: str, end: int) -> bool:
    return text[end : end + 64].lstrip().startswith(":")


def _json_key(lexeme: str) -> str:
    try:
        return json.loads(lexeme)
    except ValueError:
        return lexeme.strip('"')


def json_problem(document: Any) -> InputProblem | None:
    """The first string (key or value) in a parsed JSON document that cannot be stored, by its path."""
    pending: list[tuple[Loc, Any]] = [(("body",), document)]
    while pending:
        loc, value = pending.pop()
        if isinstance(value, str):
            problem = text_at(loc, value)
        elif isinstance(value, float) and not math.isfinite(value):
            # json.loads takes NaN, Infinity and 1e400 (as inf); JSON has none of them, and an answer that
            # echoes one cannot be written as JSON
            problem = InputProblem(loc, "must be a finite number", "finite_number")
        elif isinstance(value, dict):
            problem = next(filter(None, (text_at((*loc, key), key) for key in value)), None)
            pending.extend(((*loc, key), item) for key, item in value.items())
        elif isinstance(value, list):
            problem = None
            pending.extend(((*loc, index), item) for index, item in enumerate(value))
        else:
            problem = None
        if problem is not None:
            return problem
    return None


@dataclass
class _YamlLevel:
    """A YAML collection being read: where it is, what comes next in it, what it counts as an anchor."""

    loc: Loc
    mapping: bool
    anchor: str | None
    values_before: int
    index: int = 0  # sequences: the next item's index
    key: str | int = "?"  # mappings: the key of the value being read
    expecting_key: bool = True


def yaml_problem(text: str) -> InputProblem | None:
    """What in a YAML document cannot be read or stored: too deep, too many values once aliases are expanded, a
    string with NUL or a surrogate, a scalar the YAML loader fails on (`2001-13-45`, a 5000-digit number).

    Read as a stream of events, which (unlike yaml.safe_load) never recurses, and stopped at the first problem.
    A document that is not YAML at all is no problem here: whoever reads it says so."""
    loader = yaml.SafeLoader("")  # its resolver and constructor read single scalars the way safe_load does
    levels: list[_YamlLevel] = []
    anchors: dict[str, int] = {}  # anchor -> values it stands for, expanded
    values = 0
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.CollectionEndEvent):
                level = levels.pop()
                if level.anchor is not None:
                    anchors[level.anchor] = values - level.values_before
                continue
            if not isinstance(event, yaml.NodeEvent):
                continue
            loc = _yaml_loc(levels, event)
            if isinstance(event, yaml.AliasEvent):
                values += anchors.get(event.anchor, 1)
            else:
                values += 1
            if values > MAX_DOCUMENT_VALUES:
                return InputProblem(("body",), f"more than {MAX_DOCUMENT_VALUES} values (aliases expanded)",
                                    "too_large")
            if isinstance(event, yaml.ScalarEvent):
                problem = text_at(loc, event.value) or _yaml_scalar_problem(loader, loc, event)
                if problem is not None:
                    return problem
                if event.anchor is not None:
                    anchors[event.anchor] = 1
            elif isinstance(event, yaml.CollectionStartEvent):
                if len(levels) >= MAX_DOCUMENT_DEPTH:
                    return _too_deep(loc)
                mapping = isinstance(event, yaml.MappingStartEvent)
                levels.append(_YamlLevel(loc, mapping, event.anchor, values))
    except yaml.YAMLError:
        return None
    return None


def _yaml_loc(levels: list[_YamlLevel], event: yaml.NodeEvent) -> Loc:
    """Where the node that `event` starts sits in the document, advancing its parent past it."""
    if not levels:
        return ("body",)
    parent = levels[-1]
    if not parent.mapping:
        parent.index += 1
        return (*parent.loc, parent.index - 1)
    if parent.expecting_key:
        parent.expecting_key = False
        parent.key = event.value if isinstance(event, yaml.ScalarEvent) else "?"
        return (*parent.loc, parent.key)
    parent.expecting_key = True
    return (*parent.loc, parent.key)


def _yaml_scalar_problem(loader: yaml.SafeLoader, loc: Loc, event: yaml.ScalarEvent) -> InputProblem | None:
    """A scalar the loader would fail on with a plain ValueError (not a YAMLError): `2001-13-45`, `!!float abc`,
    a number of more digits than int() converts."""
    tag = event.tag
    if tag is None or tag == "!":
        tag = loader.resolve(yaml.ScalarNode, event.value, event.implicit)
    try:
        loader.construct_object(yaml.ScalarNode(tag, event.value, style=event.style))
    except yaml.YAMLError:
        return None  # the reader of the document gives its own answer to a malformed tag
    except (ValueError, OverflowError) as error:
        return InputProblem(loc, f"cannot be read: {error}", "value_error")
    return None


def body_problem(body: bytes, content_type: str, *, yaml_read: bool = True) -> InputProblem | None:
    """What in a request body no handler can read or store (see the module's input guard). `yaml_read=False`: the
    body goes where no YAML is read (the guard, before routing), so a body declared YAML, or one that is not JSON,
    is left to whatever reads it: the YAML scan is pure Python (2 s for 200 kB shaped for it), and only the rules
    endpoints, behind authentication and admission, pay for it (rules.api.rule_document)."""
    if not body or content_type.startswith(FORM_TYPES[1]):
        return None  # multipart parts are files; no endpoint takes them
    if content_type.startswith(FORM_TYPES[0]):
        return query_problem(body, location="body")
    yaml_declared = "yaml" in content_type
    if yaml_declared and not yaml_read:
        return None
    try:
        # UTF-8 only (json.loads would also take UTF-16 and UTF-32), read as json.loads reads bytes, so a
        # UTF-8-encoded surrogate is seen as the surrogate it becomes
        encoding = json.detect_encoding(body)
        if encoding not in ("utf-8", "utf-8-sig"):
            raise UnicodeDecodeError(encoding, body[:4], 0, 1, "not UTF-8")
        text = body.decode(encoding, "surrogatepass")
    except UnicodeDecodeError:
        if not yaml_declared:
            return InputProblem(("body",), "not valid UTF-8", "unicode_error")
        text = body.decode("utf-8", errors="replace")  # as the rules endpoints read YAML
    if json_depth(text) > MAX_DOCUMENT_DEPTH:
        return _too_deep(json_too_deep_at(text))
    if not yaml_declared:
        try:
            return json_problem(json.loads(text))
        except json.JSONDecodeError:
            if not yaml_read:
                return None  # not JSON: whoever reads it says so (the rules endpoints read it as YAML)
        except ValueError as error:  # a number of more digits than int() converts
            return InputProblem(("body",), str(error), "value_error")
    return yaml_problem(text)


def query_problem(query_string: bytes, *, location: str = "query") -> InputProblem | None:
    for name, value in QueryParams(query_string).multi_items():
        problem = text_at((location, name), name) or text_at((location, name), value)
        if problem is not None:
            return problem
    return None
