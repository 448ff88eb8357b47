"""The flow models: defaults, document round trip, run order, the JSON Schema, the public API."""

from __future__ import annotations

import json

import pytest

from crmflow.engine import definition
from crmflow.engine.definition import FlowDefinition, FlowStatus, Visibility
from crmflow.engine.jsonschema import flow_json_schema
from crmflow.engine.recordtypes import BUILTIN_TYPES
from crmflow.engine.validation import ValidationContext, flow_from_data

CONTEXT = ValidationContext(record_types=BUILTIN_TYPES)

DOC = {
    "schema_version": 1,
    "key": "orders",
    "name": "Orders",
    "record_type": "order",
    "status": "paused",
    "triggers": [
        {"type": "start_list", "query": "open-orders"},
        {"type": "schedule", "time": "07:15", "query": "late-orders", "weekdays": ["mon"]},
        {"type": "field_changed", "field": "status", "from": "new", "to": "done"},
    ],
    "steps": [
        {"key": "third", "order": 30, "type": "end"},
        {"key": "first", "order": 10, "next": "second"},
        {"key": "second", "order": 20, "actions": [{"type": "set_status", "status": "done"}]},
    ],
}


def test_defaults_and_enums() -> None:
    flow = flow_from_data(DOC, context=CONTEXT)
    assert flow.status is FlowStatus.PAUSED
    assert flow.visibility is Visibility.PUBLIC
    assert flow.reentry.mode == "after_finishing"
    assert flow.catch_up.mode == "run_late"
    assert flow.steps[1].type == "action"
    assert flow.steps[1].active is True


def test_steps_run_by_order() -> None:
    flow = flow_from_data(DOC, context=CONTEXT)
    assert [s.key for s in flow.ordered_steps()] == ["first", "second", "third"]


def test_start_list_queries() -> None:
    flow = flow_from_data(DOC, context=CONTEXT)
    assert flow.start_list_queries() == ["open-orders"]
    assert flow.schedule_queries() == ["late-orders"]


def test_to_document_round_trips_and_keeps_aliases() -> None:
    flow = flow_from_data(DOC, context=CONTEXT)
    document = flow.to_document()
    json.dumps(document)
    assert document["triggers"][2]["from"] == "new"
    assert "status" in document and "visibility" not in document
    assert flow_from_data(document, context=CONTEXT) == flow


def test_models_are_immutable() -> None:
    flow = flow_from_data(DOC, context=CONTEXT)
    with pytest.raises(ValueError, match="frozen"):
        flow.name = "x"  # type: ignore[misc]  # the assignment is the error under test


def test_the_json_schema_covers_every_trigger_step_and_action() -> None:
    schema = flow_json_schema()
    assert schema["$schema"].endswith("2020-12/schema")
    assert schema["properties"]["schema_version"]["const"] == 1
    text = json.dumps(schema)
    for name in (
        "record_created",
        "record_updated",
        "record_deleted",
        "field_changed",
        "status_changed",
        "date_reached",
        "schedule",
        "start_list",
        "manual",
        "follow_up",
        "webhook",
        "immediately",
        "after",
        "at_time",
        "date",
        "event",
        "decision",
        "wait",
        "approval",
        "merge",
        "end",
        "update_record",
        "set_status",
        "create_task",
        "notify",
        "send_email",
        "send_sms",
        "create_record",
        "add_to_group",
        "remove_from_group",
        "assign_owner",
        "start_flow",
        "history",
        "end_flow",
        "run_sql",
    ):
        assert f'"{name}"' in text, name
    assert "ActionStep" in schema["$defs"]
    assert "type" not in schema["$defs"]["ActionStep"].get("required", [])


def test_public_names_are_exported() -> None:
    for name in definition.__all__:
        assert hasattr(definition, name), name
    assert {"FlowDefinition", "FlowStatus", "Visibility", "Step", "Action", "Trigger"} <= set(
        definition.__all__
    )


def test_model_alone_refuses_unknown_keys() -> None:
    with pytest.raises(ValueError, match="extra"):
        FlowDefinition.model_validate({**DOC, "colour": "blue"})
