"""Operations on a flow's step list (services.flow_form_steps): a move, a removal, a switch
and an added step change what they are about; every other line keeps its bytes, comments
included, and the result reads as the operation means."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from crmflow.errors import InvalidInputError, Problem
from crmflow.services import flow_form_steps as ops
from crmflow.services import flow_forms

EXAMPLES = sorted((Path(__file__).parents[2] / "examples").glob("*.yaml"))

FLOW = """\
# A flow written by hand.
schema_version: 1
key: hand
name: Hand written
record_type: contact
triggers:
  - type: manual
steps:
  # The greeting comes first.
  - key: greet   # say hello
    name: Greet
    actions:
      - type: history
        message: |
          Hello

          # this line is the message's, not a comment
  # Then we wait.
  - key: pause
    name: Pause
    type: wait
    timeout: {amount: 2, unit: days}

  - key: bye
    name: Bye
    actions: [{type: history, message: bye}]
# After the steps.
reentry: {mode: never}
"""


def _keys(text: str) -> list[str]:
    return [s.key for s in ops.ordered_steps(flow_forms.load_document(text))]


def _lines(text: str) -> Counter[str]:
    return Counter(text.splitlines())


def test_a_step_moved_carries_its_own_comments_and_every_line_keeps_its_bytes() -> None:
    moved = ops.move_step(FLOW, "bye", 0)
    assert _keys(moved) == ["bye", "greet", "pause"]
    assert _lines(moved) == _lines(FLOW)  # the same lines, only in another order
    assert moved.index("# The greeting comes first.") < moved.index("- key: greet")
    assert moved.index("# Then we wait.") < moved.index("- key: pause")
    assert moved.startswith("# A flow written by hand.\n")
    assert moved.endswith("# After the steps.\nreentry: {mode: never}\n")
    # The message's '#' line moves with its step, inside the literal block.
    document = flow_forms.load_document(moved)
    assert "# this line" in document["steps"][1]["actions"][0]["message"]
    # And back: the original bytes, except the blank line that now sits above `bye`.
    back = ops.move_step(moved, "bye", 2)
    assert _keys(back) == ["greet", "pause", "bye"]
    assert _lines(back) == _lines(FLOW)


def test_a_move_to_the_same_place_or_past_the_end_is_bounded() -> None:
    assert ops.move_step(FLOW, "greet", 0) == FLOW
    assert _keys(ops.move_step(FLOW, "greet", 99)) == ["pause", "bye", "greet"]
    assert _keys(ops.move_step(FLOW, "bye", -5)) == ["bye", "greet", "pause"]


def test_a_step_removed_takes_its_comments_and_leaves_its_neighbours_alone() -> None:
    removed = ops.remove_step(FLOW, "pause")
    assert _keys(removed) == ["greet", "bye"]
    assert "Then we wait" not in removed
    assert _lines(FLOW) - _lines(removed) == _lines(
        "  # Then we wait.\n  - key: pause\n    name: Pause\n    type: wait\n"
        "    timeout: {amount: 2, unit: days}\n"
    )  # the blank line above `bye` is bye's
    assert _lines(removed) - _lines(FLOW) == Counter()
    last = ops.remove_step(FLOW, "bye")
    assert last.endswith(
        "    timeout: {amount: 2, unit: days}\n# After the steps.\nreentry: {mode: never}\n"
    )


def test_switching_a_step_off_and_on_changes_one_line_and_back() -> None:
    off = ops.set_active(FLOW, "pause", False)
    assert _lines(off) - _lines(FLOW) == Counter({"    active: false": 1})
    assert _lines(FLOW) - _lines(off) == Counter()
    # Where the schema puts it: after the name, before the type.
    assert "    name: Pause\n    active: false\n    type: wait\n" in off
    assert not ops.ordered_steps(flow_forms.load_document(off))[1].active
    assert ops.set_active(off, "pause", True) == FLOW  # on is the default: the line goes
    assert ops.set_active(FLOW, "greet", True) == FLOW  # already on: nothing written
    written = FLOW.replace("    name: Pause\n", "    name: Pause\n    active: true  # on\n")
    assert "    active: false # on\n" in ops.set_active(written, "pause", False)  # comment kept
    assert ops.set_active(ops.set_active(written, "pause", False), "pause", True) == FLOW


def test_a_key_added_or_dropped_last_in_a_step_leaves_the_next_step_s_comment_in_place() -> None:
    text = "steps:\n  - key: a\n    name: A  # eol\n  # about b\n  - key: b\n    type: end\n"
    off = ops.set_active(text, "a", False)
    assert off == (
        "steps:\n  - key: a\n    name: A  # eol\n    active: false\n  # about b\n"
        "  - key: b\n    type: end\n"
    )
    assert ops.set_active(off, "a", True) == text


def test_a_step_added_goes_last_with_a_key_from_its_name_and_its_form_applied() -> None:
    text, key, problems = ops.add_step(FLOW, "wait", "Pause", {"f:timeout.amount": "3"})
    assert problems == [] and key == "pause_2"
    assert text.startswith(FLOW.split("# After the steps.", maxsplit=1)[0])
    assert text.endswith(
        "  - key: pause_2\n    name: Pause\n    type: wait\n    timeout:\n      amount: 3\n"
        "      unit: days\n# After the steps.\nreentry: {mode: never}\n"
    )


@pytest.mark.parametrize("kind", [k.value for k in flow_forms.step_kinds()])
def test_every_step_type_of_the_schema_can_be_added(kind: str) -> None:
    text, key, problems = ops.add_step(FLOW, kind, f"New {kind}", {})
    assert problems == []
    document = flow_forms.load_document(text)
    added = document["steps"][-1]
    assert added["key"] == key == f"new_{kind}"
    assert str(added.get("type", "action")) == kind


def test_bad_input_to_add_is_said_at_its_field() -> None:
    assert ops.add_step(FLOW, "teleport", "X", {})[2][0].path == "type"
    assert ops.add_step(FLOW, "action", "   ", {})[2] == [
        Problem("name", "is empty", "give the step a name")
    ]
    _, _, problems = ops.add_step(FLOW, "wait", "W", {"f:timeout.amount": "two"})
    assert problems[0].path == "steps[3].timeout.amount"
    with pytest.raises(InvalidInputError, match="not a step"):
        ops.remove_step(FLOW, "nope")


def test_steps_with_an_order_are_listed_and_moved_by_it() -> None:
    text = (
        "steps:\n  - key: a\n    order: 2\n    type: end\n  - key: b\n    order: 1\n"
        "    type: end\n  - key: c\n    order: 3\n    type: end\n"
    )
    assert _keys(text) == ["b", "a", "c"]
    moved = ops.move_step(text, "c", 0)
    assert _keys(moved) == ["c", "b", "a"]
    # The list's lines stay where they are: the orders say the run order.
    assert [line for line in moved.splitlines() if "key" in line] == [
        "  - key: a",
        "  - key: b",
        "  - key: c",
    ]


def test_a_json_flow_is_moved_and_stays_json() -> None:
    text = json.dumps(
        {"key": "j", "steps": [{"key": "a", "type": "end"}, {"key": "b", "type": "end"}]}
    )
    moved = ops.move_step(text, "b", 0)
    assert [s["key"] for s in json.loads(moved)["steps"]] == ["b", "a"]


def test_problems_show_at_the_step_they_concern() -> None:
    document = flow_forms.load_document(FLOW)
    at, rest = ops.problems_by_step(
        [Problem("steps[1].timeout.amount", "is too big", "lower it"), Problem("name", "empty")],
        document,
    )
    assert at == {"pause": ["timeout.amount: is too big (lower it)"]}
    assert rest == ["name: empty"]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_every_example_s_steps_move_and_go_keeping_the_other_lines(path: Path) -> None:
    text = path.read_text()
    keys = _keys(text)
    for key in keys:
        moved = ops.move_step(text, key, 0)
        assert _keys(moved) == [key, *(k for k in keys if k != key)]
        assert _lines(moved) == _lines(text), key
        if len(keys) == 1:
            continue  # no step left: the validator refuses it (the page's test)
        removed = ops.remove_step(text, key)
        assert _keys(removed) == [k for k in keys if k != key]
        assert _lines(removed) - _lines(text) == Counter(), key


def test_a_list_written_at_the_key_s_column_moves_by_its_lines_too() -> None:
    text = (
        "steps:\n# about a\n- key: a\n  type: end\n# about b\n- key: b\n  type: end\n"
        "# after\nreentry: {mode: never}\n"
    )
    moved = ops.move_step(text, "b", 0)
    assert moved == (
        "steps:\n# about b\n- key: b\n  type: end\n# about a\n- key: a\n  type: end\n"
        "# after\nreentry: {mode: never}\n"
    )
