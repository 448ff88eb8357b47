"""Reading flow documents: YAML 1.2 semantics and the line of every key."""

from __future__ import annotations

import pytest

from crmflow.engine.source import parse_source
from crmflow.errors import InvalidInputError, Problem


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


# -- text no database stores: NUL and lone surrogates ------------------------------------------

FLOW = (
    "schema_version: 1\n"
    "key: news\n"
    "name: News\n"
    "record_type: contact\n"
    "steps:\n"
    "  - key: first\n"
    "    actions:\n"
    "      - type: history\n"
    '        message: "Hi"\n'
)


def _refused(text: str, source: str = "flow.yaml") -> tuple[Problem, str]:
    with pytest.raises(InvalidInputError) as caught:
        parse_source(text, source=source)
    assert len(caught.value.problems) == 1
    return caught.value.problems[0], str(caught.value)


@pytest.mark.parametrize("escape", ["\\0", "\\x00", "\\u0000"])
def test_a_nul_in_a_value_refuses_the_document_with_its_line_column_and_path(escape: str) -> None:
    problem, shown = _refused(FLOW.replace("name: News", f'name: "a{escape}b"'))
    assert (problem.path, problem.line, problem.source) == ("name", 3, "flow.yaml")
    assert problem.message == (
        "the value at column 7 contains a NUL character (\\0) at character 2; no text may hold "
        "one (PostgreSQL cannot store it)"
    )
    assert problem.hint == "remove the NUL character (\\0)"
    assert "flow.yaml:3: name: the value at column 7 contains a NUL character" in shown


def test_a_nul_deep_in_the_document_or_in_a_key_names_its_path() -> None:
    deep, _ = _refused(FLOW.replace('message: "Hi"', 'message: "H\\0i"'))
    assert (deep.path, deep.line) == ("steps[0].actions[0].message", 9)
    assert "column 18" in deep.message
    item, _ = _refused('members: [maria, "an\\0drei"]\n')
    assert (item.path, item.line) == ("members[1]", 1)
    key, shown = _refused(FLOW.replace('message: "Hi"', '"mes\\0sage": Hi'))
    assert (key.path, key.line) == ("steps[0].actions[0].mes\\0sage", 9)
    assert key.message.startswith('the key "mes\\0sage" at column 9 contains a NUL character')
    assert "\x00" not in shown  # the escape is shown, never the character


def test_a_nul_in_json_is_refused_the_same_way() -> None:
    problem, _ = _refused('{"key": "a",\n "name": "a\\u0000b"}', source="flow.json")
    assert (problem.path, problem.line) == ("name", 2)
    assert "NUL character (\\0)" in problem.message


def test_a_lone_surrogate_is_refused_and_a_surrogate_pair_is_one_character() -> None:
    problem, _ = _refused('name: "x\\ud800"\n')
    assert (problem.path, problem.line) == ("name", 1)
    assert problem.message == (
        "the value at column 7 contains a lone UTF-16 surrogate (\\ud800) at character 2, "
        "which is not a character (no database can store it)"
    )
    assert problem.hint == "remove the \\ud800 escape, or write the character itself"
    low, _ = _refused('{"name": "\\ude00\\ud83d"}')  # the wrong order is no pair
    assert "(\\ude00) at character 1" in low.message
    # As json.dumps writes U+1F600: the pair is read as the character (JSON and YAML alike).
    assert parse_source('{"name": "\\ud83d\\ude00!"}').data == {"name": "\U0001f600!"}
    assert parse_source('name: "\\ud83d\\ude00"\n').data == {"name": "\U0001f600"}


def test_text_without_nul_is_read_as_before() -> None:
    assert parse_source('a: "tab\\there"\nb: café\nc: "\\u00e9"\n').data == {
        "a": "tab\there",
        "b": "café",
        "c": "é",
    }


# -- tags: a value that starts with ! ------------------------------------------------------------


def test_a_condition_that_starts_with_a_bang_is_refused_not_read_as_a_tag() -> None:
    # YAML reads `!record.newsletter` as a tag and `&&` as an anchor: only `record.id > 0` was
    # left, and stored as the condition.
    text = FLOW.replace(
        "name: News\n", "name: News\nentry_condition: !record.newsletter && record.id > 0\n"
    )
    problem, shown = _refused(text)
    assert (problem.path, problem.line) == ("entry_condition", 4)
    assert problem.message == (
        "the value at column 18 starts with !record.newsletter, which YAML reads as a tag, not "
        "as text (crmflow reads no tags; the value would be left as 'record.id > 0')"
    )
    assert problem.hint == (
        "a value that starts with ! must be quoted, e.g. "
        'entry_condition: "!record.newsletter && record.id > 0"'
    )
    assert shown.startswith("flow.yaml was refused (1 problem):\n  - flow.yaml:4: entry_condition:")


def test_a_tag_alone_or_before_text_is_refused_with_a_quoted_example() -> None:
    alone, _ = _refused("steps:\n  - key: a\n    condition: !record.newsletter\n")
    assert (alone.path, alone.line) == ("steps[0].condition", 3)
    assert alone.message.endswith("(crmflow reads no tags; the value would be left empty)")
    assert alone.hint == (
        'a value that starts with ! must be quoted, e.g. condition: "!record.newsletter"'
    )
    bang, _ = _refused(FLOW.replace("name: News", "name: !important Bang"))
    assert (bang.path, bang.line) == ("name", 3)
    assert "the value would be left as 'Bang'" in bang.message
    assert bang.hint.endswith('e.g. name: "!important Bang"')
    item, _ = _refused('members: [maria, !x "andrei"]\n')
    assert (item.path, item.line) == ("members[1]", 1)
    assert item.hint.endswith('e.g. - "!x \\"andrei\\""')


@pytest.mark.parametrize(
    ("text", "path", "tag", "hint"),
    [
        ("a: !!str 12\n", "a", "!!str", "remove !!str: crmflow reads no YAML tags; quote a value"),
        ("a: ! 12\n", "a", "!", "remove !: crmflow reads no YAML tags"),
        ("a: !<tag:x,2000:y> 1\n", "a", "!<tag:x,2000:y>", "remove !<tag:x,2000:y>"),
        ("a: !!set\n  x: null\n", "a", "!!set", "remove !!set"),
        ("a:\n  b: !!seq [1]\n", "a.b", "!!seq", "remove !!seq"),
        ("!x k: 1\n", "k", "!x", 'a key that starts with ! must be quoted, e.g. "!x k": ...'),
    ],
)
def test_every_explicit_tag_is_refused(text: str, path: str, tag: str, hint: str) -> None:
    problem, _ = _refused(text)
    assert problem.path == path
    assert f"starts with {tag}, which YAML reads as a tag" in problem.message
    assert problem.hint.startswith(hint)


def test_anchors_aliases_and_merge_keys_still_work() -> None:
    text = (
        "base: &b {type: history, message: hi}\nx: *b\n"
        "y:\n  <<: *b\n  message: bye\nz: &n 3\nw: *n\n"
    )
    assert parse_source(text).data == {
        "base": {"type": "history", "message": "hi"},
        "x": {"type": "history", "message": "hi"},
        "y": {"type": "history", "message": "bye"},
        "z": 3,
        "w": 3,
    }


def test_a_tagged_anchor_is_refused_at_its_tag() -> None:
    problem, _ = _refused("a: &n !x v\nb: *n\n")
    assert (problem.path, problem.line) == ("a", 1)
    assert "column 7 starts with !x" in problem.message
