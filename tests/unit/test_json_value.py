"""A JSON column is read back exactly: an integer beyond 64 bits is not rounded to a float."""

from __future__ import annotations

import json

import pytest

from crmflow.store.database import json_text, json_value

DOCUMENTS = [
    {"first_name": "Zoë", "email": "z@example.org", "status": "prospect"},
    {"id": 2**64 - 1, "score": 12.5, "tags": ["a", "b"], "nested": {"n": -(2**63)}},
    {"huge": 2**70, "in a list": [1, 10**30]},  # orjson would read these as floats
    {"phone": "0123456789012345678901", "٠١٢٣٤٥٦٧٨٩٠١٢٣٤٥٦٧٨٩": 1},  # digits inside strings
    [],
    None,
]


@pytest.mark.parametrize("document", DOCUMENTS)
@pytest.mark.parametrize("as_bytes", [False, True])
def test_json_value_reads_back_what_was_written(document: object, as_bytes: bool) -> None:
    text = json_text(document)
    value = json_value(text.encode() if as_bytes else text)
    assert value == document
    assert json.dumps(value) == json.dumps(document)  # the same types: no int read as a float


def test_keys_that_are_not_strings_are_written_as_the_standard_library_writes_them() -> None:
    document = {1: "one", 2.5: "two and a half", None: "nothing", "four": 4}
    assert json.loads(json_text(document)) == json.loads(json.dumps(document))
    assert json.loads(json_text({"nested": {7: [1, 2]}})) == {"nested": {"7": [1, 2]}}
