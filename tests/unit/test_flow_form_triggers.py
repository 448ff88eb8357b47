"""A flow's trigger written back from its form (services.flow_form_triggers): a changed field
changes its line, a new kind replaces the trigger, nothing changed keeps the text."""

from __future__ import annotations

import pytest

from crmflow.errors import InvalidInputError
from crmflow.services.flow_form_triggers import saved_trigger_text

FLOW = """\
key: t
triggers:
  # Every morning.
  - type: schedule
    time: "09:30"   # local time
    query: six-month-clients
steps:
  - key: a
    type: end
"""


def test_a_changed_field_changes_its_line_only() -> None:
    text, problems = saved_trigger_text(
        FLOW, 0, "schedule", {"f:time": "10:00", "f:query": "six-month-clients"}
    )
    assert problems == []
    assert text == FLOW.replace('"09:30"', '"10:00"')


def test_nothing_changed_keeps_the_text_and_a_new_kind_replaces_the_trigger() -> None:
    same, _ = saved_trigger_text(FLOW, 0, "schedule", {"f:time": "09:30"})
    assert same == FLOW
    text, problems = saved_trigger_text(FLOW, 0, "record_created", {"f:time": "10:00"})
    assert problems == []
    assert "  - type: record_created\nsteps:\n" in text
    assert "time" not in text  # the former kind's fields went with it
    assert text.startswith("key: t\ntriggers:\n  # Every morning.\n")


def test_bad_input_is_said_at_its_field() -> None:
    _, problems = saved_trigger_text(FLOW, 0, "teleport", {})
    assert problems[0].path == "triggers[0].type"
    _, problems = saved_trigger_text(FLOW, 0, "date_reached", {"f:days": "soon"})
    assert problems[0].path == "triggers[0].days"
    with pytest.raises(InvalidInputError, match="trigger"):
        saved_trigger_text(FLOW, 3, "manual", {})
