"""What moving to a new version does to the records inside a flow, per step: stays, restarts,
removed; the impact per step over several old versions; and the moves a resume needs (the pure
engine, no database)."""

from __future__ import annotations

from typing import Any

import pytest

from crmflow.engine.definition import FlowDefinition
from crmflow.engine.recordtypes import type_catalog
from crmflow.engine.validation import ValidationContext, flow_from_data
from crmflow.engine.version_move import END, StepImpact, check_moves, fate, step_impacts
from crmflow.errors import InvalidInputError, MovesRequiredError

TYPES = type_catalog()


def step(key: str, message: str = "hello", **extra: Any) -> dict[str, Any]:
    return {"key": key, "actions": [{"type": "history", "message": message}], **extra}


def make_flow(*steps: dict[str, Any]) -> FlowDefinition:
    data = {
        "schema_version": 1,
        "key": "nurture",
        "name": "Nurture",
        "record_type": "contact",
        "owner": "maria",
        "triggers": [{"type": "manual"}],
        "steps": list(steps),
    }
    return flow_from_data(data, context=ValidationContext(record_types=TYPES))


WAIT_A_DAY: dict[str, Any] = {"timing": {"type": "after", "amount": 1, "unit": "days"}}
WAIT_TWO_DAYS: dict[str, Any] = {"timing": {"type": "after", "amount": 2, "unit": "days"}}
OLD = make_flow(step("welcome"), step("remind", **WAIT_A_DAY), step("thank"))


def test_an_unchanged_step_stays() -> None:
    new = make_flow(step("welcome"), step("remind", **WAIT_A_DAY), step("thank"))
    assert fate(OLD, new, "remind", 2)[0] == "stays"


def test_a_step_whose_actions_changed_stays_with_its_due_time() -> None:
    new = make_flow(step("welcome"), step("remind", "reworded", **WAIT_A_DAY), step("thank"))
    found, detail = fate(OLD, new, "remind", 2)
    assert found == "stays" and "keeps its due time" in detail


def test_a_step_whose_timing_or_type_changed_restarts() -> None:
    retimed = make_flow(step("welcome"), step("remind", **WAIT_TWO_DAYS), step("thank"))
    assert fate(OLD, retimed, "remind", 2)[0] == "restarts"
    as_wait = make_flow(
        step("welcome"),
        {
            "key": "remind",
            "type": "wait",
            "until": 'record.status == "client"',
            "timeout": {"amount": 30, "unit": "days"},
        },
        step("thank"),
    )
    assert fate(OLD, as_wait, "remind", 2)[0] == "restarts"


def test_a_removed_step_says_how_to_choose_where_its_records_go() -> None:
    new = make_flow(step("welcome"), step("thank"))
    found, detail = fate(OLD, new, "remind", 3)
    assert found == "removed"
    assert "version 3 has no step 'remind'" in detail and f"--move remind={END}" in detail


def test_a_step_the_old_version_did_not_have_stays() -> None:
    # The old version did not have the step (a record cannot be there; nothing to change).
    new = make_flow(step("welcome"), step("remind", **WAIT_A_DAY), step("extra"), step("thank"))
    assert fate(OLD, new, "extra", 2)[0] == "stays"


def test_impacts_add_up_a_step_over_old_versions_and_show_the_strongest_fate() -> None:
    v2 = make_flow(step("welcome"), step("remind", "reworded", **WAIT_A_DAY), step("thank"))
    v3 = make_flow(step("welcome"), step("remind", **WAIT_TWO_DAYS))
    counts = [(1, "remind", 2), (2, "remind", 3), (1, "thank", 1)]
    impacts = step_impacts(counts, {1: OLD, 2: v2, 3: v3}, 3, {"thank": END})
    assert [(i.step, i.records, i.versions, i.fate, i.move_to) for i in impacts] == [
        ("remind", 5, (1, 2), "restarts", None),
        ("thank", 1, (1,), "removed", END),
    ]


def test_every_removed_step_with_records_needs_a_move() -> None:
    new = make_flow(step("welcome"), step("thank"))
    [impact] = step_impacts([(1, "remind", 2)], {1: OLD, 2: new}, 2, {})
    with pytest.raises(MovesRequiredError, match=r"2 record\(s\) are in step 'remind'") as asked:
        check_moves([impact], {}, new, "nurture")
    assert asked.value.steps == [impact]
    assert "--move remind=STEP|end" in asked.value.message
    check_moves([impact], {"remind": "thank"}, new, "nurture")
    check_moves([impact], {"remind": END}, new, "nurture")


def test_a_move_to_an_unknown_step_or_of_a_step_still_there_is_refused() -> None:
    new = make_flow(step("welcome"), step("thank"))
    impact = StepImpact("remind", 2, (1,), "removed", "gone")
    with pytest.raises(InvalidInputError) as refused:
        check_moves([impact], {"remind": "nowhere", "welcome": "thank"}, new, "nurture")
    assert [p.path for p in refused.value.problems] == ["moves.remind", "moves.welcome"]
    assert "choose one of: welcome, thank, or end" in str(refused.value)


def test_a_move_of_a_step_no_record_waits_at_is_refused_not_ignored() -> None:
    # A typo (`remidn`) or a step that was never there would otherwise be dropped silently.
    new = make_flow(step("welcome"), step("thank"))
    impact = StepImpact("remind", 2, (1,), "removed", "gone")
    with pytest.raises(InvalidInputError) as refused:
        check_moves([impact], {"remind": "thank", "remidn": END}, new, "nurture")
    [problem] = refused.value.problems
    assert problem.path == "moves.remidn"
    assert problem.message == "no record is at a step 'remidn' that the new version removed"
    assert problem.hint == "the steps to map: remind (2 record(s))"
    with pytest.raises(InvalidInputError, match="nothing needs moving"):
        check_moves([], {"gone": END}, new, "nurture")
