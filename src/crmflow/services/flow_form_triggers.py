"""A flow's trigger edited in the form editor (issue 13): the new-flow form's trigger fields,
written back into the flow's text. Pure: no SQL, no IO, no validation (the page validates the
whole flow through `services.flows`).

Only what changed is written (ruamel round trip, as a step's form): the rest of the file keeps
its bytes. A trigger whose kind changes is written anew with the new kind's fields.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ruamel.yaml.comments import CommentedMap, CommentedSeq

from crmflow.errors import InvalidInputError, Problem
from crmflow.services import flow_forms

__all__ = ["saved_trigger_text", "trigger_at"]


def trigger_at(document: Mapping[str, Any], index: int) -> CommentedMap:
    """The flow's trigger at `index` (InvalidInputError naming the triggers there are)."""
    triggers = document.get("triggers")
    count = len(triggers) if isinstance(triggers, list) else 0
    if not 0 <= index < count or not isinstance(triggers, CommentedSeq):
        raise InvalidInputError(
            "the trigger",
            [
                Problem(
                    "trigger",
                    f"the flow has no trigger {index + 1}",
                    f"pick one of 1 to {count}" if count else "add one in the YAML view",
                )
            ],
        )
    trigger = triggers[index]
    if not isinstance(trigger, CommentedMap):
        raise InvalidInputError(
            "the trigger",
            [Problem(f"triggers[{index}]", "is not a mapping", "fix it in the YAML view")],
        )
    return trigger


def saved_trigger_text(
    text: str, index: int, kind: str, form: Mapping[str, str]
) -> tuple[str, list[Problem]]:
    """`text` with trigger `index` of kind `kind` and its fields as posted (`f:<path>`).
    Returns the new text (unchanged when nothing changed or a value cannot be read) and the
    problems of values that cannot be read, at `triggers[index].<path>`."""
    document = flow_forms.load_document(text)
    trigger = trigger_at(document, index)
    where = f"triggers[{index}]."
    schema = flow_forms.kind_schema(flow_forms.trigger_kinds(), kind)
    if schema is None:
        return text, [Problem(where + "type", f"{kind[:40]!r} is not a trigger kind", "pick one")]
    before = flow_forms.comparable(trigger)
    if str(trigger.get("type", "")) == kind:
        problems = flow_forms.apply_form(schema, trigger, form, where=where)
    else:
        fresh = CommentedMap()
        fresh["type"] = kind
        problems = flow_forms.apply_form(schema, fresh, form, where=where)
        document["triggers"][index] = fresh
    after = document["triggers"][index]
    return flow_forms.written_back(text, document, problems, before=before, after=after)
