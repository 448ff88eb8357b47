"""Reading flow documents: YAML 1.2 semantics and the line of every key."""

from __future__ import annotations

import pytest

from crmflow.engine.source import parse_source
from crmflow.errors import InvalidInputError


def test_yaml_12_keeps_times_as_text_and_on_as_a_key() -> None:
    parsed = parse_source("time: 12:30\non: yes\nflag: true\n")
    assert parsed.data == {"time": "12:30", "on": "yes", "flag": True}


def test_every_key_and_item_has_its_line() -> None:
    text = (
        "key: a\nsteps:\n  - key: first\n    actions:\n      - type: history\n        message: hi\n"
    )
    parsed = parse_source(text)
    assert parsed.lines["key"] == 1
    assert parsed.lines["steps"] == 2
    assert parsed.lines["steps[0]"] == 3
    assert parsed.lines["steps[0].actions[0].type"] == 5
    assert parsed.lines["steps[0].actions[0].message"] == 6


def test_a_missing_key_takes_the_line_of_its_parent() -> None:
    parsed = parse_source("steps:\n  - key: first\n")
    assert parsed.line_of("steps[0].actions") == 2
    assert parsed.line_of("nowhere") is None


def test_json_is_read_with_lines() -> None:
    parsed = parse_source('{\n  "key": "a",\n  "steps": [\n    {"key": "b"}\n  ]\n}\n')
    assert parsed.data == {"key": "a", "steps": [{"key": "b"}]}
    assert parsed.lines["steps[0].key"] == 4


def test_a_duplicate_key_is_refused_with_its_line() -> None:
    with pytest.raises(InvalidInputError) as caught:
        parse_source("key: a\nname: x\nkey: b\n", source="flow.yaml")
    problem = caught.value.problems[0]
    assert problem.line == 3
    assert problem.source == "flow.yaml"
    assert "duplicate key" in problem.message


def test_broken_yaml_and_json_say_where() -> None:
    with pytest.raises(InvalidInputError) as caught:
        parse_source("key: a\nsteps: [\n  - x\n")
    assert caught.value.problems[0].line is not None
    with pytest.raises(InvalidInputError) as caught:
        parse_source('{"key": "a",\n "name": }', fmt="json")
    assert caught.value.problems[0].line == 2


def test_non_text_keys_become_text() -> None:
    assert parse_source("2: a\ntrue: b\n").data == {"2": "a", "true": "b"}
