"""careloop.db reads rows as dicts and JSON columns with orjson: what comes back is what was stored, exactly, for
documents orjson reads differently or not at all (integers past 64 bits, deep nesting), and for NUL in text."""

from __future__ import annotations

import json

import pytest

from careloop.db import fetch_all, fetch_one

pytestmark = pytest.mark.integration

DOCUMENTS = [
    {"n": int("7" * 400), "f": 0.1, "s": "x"},  # 400 digits: orjson would read a float
    {"n": -(2**63) - 1, "big": 2**64, "neg": -(10**30)},
    {"n": -(2**63) - 1},  # 19 digits: orjson would read a float
    {"n": 2**64 - 1, "m": -(2**63)},  # the largest and smallest orjson reads exactly
    {"nested": json.loads("[" * 900 + "]" * 900)},  # near the json module's own depth limit
    {"text": "ünïcödé 🛠", "empty": {}, "list": [None, True, False, 1.5, -2.5e-7]},
    [],
    "a string",
    12345678901234567890123,
]


@pytest.mark.parametrize("document", DOCUMENTS, ids=range(len(DOCUMENTS)))
def test_a_json_column_reads_back_what_was_stored(conn, document) -> None:
    text = json.dumps(document)
    row = fetch_one(conn, "SELECT %s::jsonb AS b, %s::json AS j", (text, text))
    assert row == {"b": document, "j": document}
    assert type(row["b"]) is type(document)


def test_nul_and_a_lone_surrogate_in_a_json_value_read_back_and_rows_keep_their_column_names(conn) -> None:
    # jsonb refuses \u0000 and a lone surrogate; the json type keeps them as written, and orjson refuses the
    # surrogate: the json module reads it
    row = fetch_one(conn, "SELECT %s::json AS j, %s::json AS s, 1 AS one, NULL::text AS none",
                    (json.dumps({"t": "a\u0000b"}), '{"t": "\\ud800x"}'))
    assert row == {"j": {"t": "a\x00b"}, "s": {"t": "\ud800x"}, "one": 1, "none": None}
    assert fetch_one(conn, "SELECT 1 AS one WHERE false") is None
    assert fetch_all(conn, "SELECT n, n * 2 AS twice FROM generate_series(1, 3) AS n") == [
        {"n": 1, "twice": 2}, {"n": 2, "twice": 4}, {"n": 3, "twice": 6},
    ]
