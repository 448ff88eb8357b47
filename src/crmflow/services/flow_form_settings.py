"""A flow's own settings edited in the form editor (issue 13): every property at the document's
top level that is not its identity, its lifecycle, its triggers or its steps (name, notes,
record type, owner, controller, visibility and members, timezone, locale, entry condition, goal,
re-entry, catch-up, calendar with its quiet hours, test recipients, ...), generated from the
flow's JSON Schema as the step and trigger forms are: a property added to the schema shows here
without editor code.

Written back with ruamel's round trip: only the properties whose value changed move, a new one
goes where the schema lists it among those already there (before `triggers`, not after `steps`),
the rest of the file keeps its bytes. Pure: no SQL, no IO, no validation (the page validates the
whole flow through `services.flows`).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from typing import Any

from crmflow.engine.jsonschema import flow_json_schema
from crmflow.errors import Problem
from crmflow.services import flow_forms
from crmflow.services.flow_forms import FormField, Pickers

__all__ = ["LEFT_OUT", "saved_settings_text", "settings_fields", "settings_schema"]

# Not settings: the format's version and the flow's key (its identity: a flow is not renamed),
# its status (the lifecycle's buttons change it), its triggers and its steps (their own forms).
LEFT_OUT = frozenset({"schema_version", "key", "status", "triggers", "steps"})


@cache
def _full_schema() -> dict[str, Any]:
    return flow_json_schema()


def settings_schema() -> dict[str, Any]:
    """The document's schema with only the settings' properties, in the schema's order."""
    schema = _full_schema()
    properties = {k: v for k, v in schema["properties"].items() if k not in LEFT_OUT}
    required = [k for k in schema.get("required") or () if k in properties]
    return {"type": "object", "properties": properties, "required": required}


def settings_fields(document: Mapping[str, Any], pickers: Pickers | None = None) -> list[FormField]:
    """The settings' fields, filled from the document."""
    return flow_forms.form_fields(settings_schema(), document, pickers=pickers)


def _settings_only(form: Mapping[str, str]) -> dict[str, str]:
    """The posted values of settings' fields only: a crafted `f:steps[0]...` changes nothing."""
    names = set(settings_schema()["properties"])
    out = {}
    for name, value in form.items():
        head = name[2:].split(".", 1)[0].split("[", 1)[0] if name.startswith("f:") else ""
        if head in names:
            out[name] = value
    return out


def saved_settings_text(text: str, form: Mapping[str, str]) -> tuple[str, list[Problem]]:
    """`text` with the settings as posted in `form` (`f:<property>`): only what changed is
    written. Returns the new text (unchanged when nothing changed or a value cannot be read)
    and the problems of values that cannot be read, at their property."""
    document = flow_forms.load_document(text)
    before = flow_forms.comparable(document)
    # The whole document's schema, so that a new property goes where it lists it.
    problems = flow_forms.apply_form(_full_schema(), document, _settings_only(form))
    return flow_forms.written_back(text, document, problems, before=before, after=document)
