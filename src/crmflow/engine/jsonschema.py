"""The published JSON Schema of the flow document, generated from the models.

Editors use it for completion and early errors; the meaning checks (record fields, users, step
graph) need crmflow itself (`crmflow flows validate`).
"""

from __future__ import annotations

from typing import Any

from crmflow.engine.definition.flow import SCHEMA_VERSION, FlowDefinition

__all__ = ["SCHEMA_ID", "flow_json_schema"]

SCHEMA_ID = f"https://crmflow.dev/schema/flow-v{SCHEMA_VERSION}.json"


def flow_json_schema() -> dict[str, Any]:
    schema: dict[str, Any] = FlowDefinition.model_json_schema(by_alias=True, mode="validation")
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        **schema,
    }
    schema["title"] = "crmflow flow document"
    schema["description"] = (
        "A crmflow flow: triggers, policies and steps. Reference: docs/flows.md."
    )
    properties = schema.setdefault("properties", {})
    properties["schema_version"] = {
        "const": SCHEMA_VERSION,
        "description": "The version of this document's format.",
    }
    _allow_default_step_type(schema)
    return schema


def _allow_default_step_type(schema: dict[str, Any]) -> None:
    # An action step may leave out `type`; a discriminator would demand it, so drop the mapping
    # and let `oneOf` pick (the other step types all require their `type`).
    steps = schema["properties"]["steps"]["items"]
    steps.pop("discriminator", None)
    action = schema["$defs"]["ActionStep"]
    if "type" in action.get("required", []):
        action["required"].remove("type")
