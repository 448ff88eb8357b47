"""A user-defined record type read from its document (YAML/JSON) with every problem at its path,
and the changes between two versions of a type that existing records could contradict."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from crmflow.engine.recordtypes.fields import FIELD_DEFINITION_KEYS, FieldDef, FieldType
from crmflow.engine.recordtypes.recordtype import RecordType
from crmflow.errors import InvalidInputError, Problem

__all__ = ["FieldChange", "compare_definitions", "record_type_from_definition"]


def record_type_from_definition(data: object) -> RecordType:
    """A user-defined record type from its document (YAML/JSON), or every problem with it.

    The document is `{key, name, fields: [{key, type, label, required, choices, reference_type}]}`.
    """
    problems: list[Problem] = []
    if not isinstance(data, Mapping):
        raise InvalidInputError(
            "the record type", [Problem("", "expected a mapping with key, name and fields")]
        )
    for extra in sorted(set(map(str, data)) - {"key", "name", "fields", "builtin"}):
        problems.append(Problem(extra, "unknown key", "use key, name and fields"))
    key = data.get("key")
    if not isinstance(key, str):
        problems.append(Problem("key", "is required and must be text"))
        key = ""
    name = data.get("name")
    if name is not None and not isinstance(name, str):
        problems.append(Problem("name", "must be text"))
        name = None
    raw_fields = data.get("fields")
    if raw_fields is None:
        raw_fields = []
    if not isinstance(raw_fields, list):
        problems.append(Problem("fields", "must be a list of fields"))
        raw_fields = []
    fields: list[FieldDef] = []
    positions: list[int] = []
    for i, raw in enumerate(raw_fields):
        fdef = _field_definition(raw, f"fields[{i}]", problems)
        if fdef is not None:
            positions.append(i)
            fields.append(fdef)
    rtype = RecordType(key=key, name=name or key, fields=tuple(fields))
    # check_definition numbers the fields it was given; report the positions in the document.
    for found in rtype.check_definition():
        if found.path == "key" and not key:
            continue
        if found.path.startswith("fields["):
            index, rest = found.path[len("fields[") :].split("]", 1)
            found = Problem(  # noqa: PLW2901
                f"fields[{positions[int(index)]}]{rest}", found.message, found.hint
            )
        problems.append(found)
    if problems:
        raise InvalidInputError(f"the record type {key!r}" if key else "the record type", problems)
    return rtype


def _field_definition(raw: object, where: str, problems: list[Problem]) -> FieldDef | None:
    """One field of the document, or None when its key or type is unusable (problems say why);
    lesser problems are added and the field is still returned, so the type's own checks run."""
    if not isinstance(raw, Mapping):
        problems.append(Problem(where, "must be a mapping with key and type"))
        return None
    for extra in sorted(set(map(str, raw)) - FIELD_DEFINITION_KEYS):
        problems.append(
            Problem(
                f"{where}.{extra}",
                "unknown key",
                f"use {', '.join(sorted(FIELD_DEFINITION_KEYS))}",
            )
        )
    fkey = raw.get("key")
    if not isinstance(fkey, str):
        problems.append(Problem(f"{where}.key", "is required and must be text"))
        return None
    try:
        kind = FieldType(str(raw.get("type")))
    except ValueError:
        kinds = ", ".join(t.value for t in FieldType)
        problems.append(Problem(f"{where}.type", f"{raw.get('type')!r} is not a field type", kinds))
        return None
    choices = raw.get("choices") or []
    if not isinstance(choices, list) or not all(isinstance(c, str) for c in choices):
        problems.append(Problem(f"{where}.choices", "must be a list of text values"))
        choices = []
    if choices and kind is not FieldType.CHOICE:
        problems.append(Problem(f"{where}.choices", "only a choice field has choices"))
    ref = raw.get("reference_type")
    if ref is not None and not isinstance(ref, str):
        problems.append(Problem(f"{where}.reference_type", "must be a record type key"))
        ref = None
    if ref and kind is not FieldType.REFERENCE:
        problems.append(
            Problem(f"{where}.reference_type", "only a reference field has a reference_type")
        )
    required = raw.get("required", False)
    if not isinstance(required, bool):
        problems.append(Problem(f"{where}.required", "must be true or false"))
        required = False
    label = raw.get("label")
    return FieldDef(
        key=fkey,
        type=kind,
        label=str(label) if label else fkey.replace("_", " ").capitalize(),
        required=required,
        choices=tuple(choices),
        reference_type=ref if kind is FieldType.REFERENCE else None,
    )


@dataclass(frozen=True)
class FieldChange:
    """How one field differs between two versions of a record type."""

    key: str
    change: str  # removed | retyped | choices_removed | now_required
    detail: str
    removed_choices: tuple[str, ...] = ()


def compare_definitions(old: RecordType, new: RecordType) -> list[FieldChange]:
    """The changes from `old` to `new` that existing records could contradict.

    Adding an optional field never contradicts a record, so additions are not listed.
    """
    changes: list[FieldChange] = []
    for before in old.fields:
        after = new.field(before.key)
        if after is None:
            changes.append(FieldChange(before.key, "removed", "is removed"))
            continue
        if after.type is not before.type or after.reference_type != before.reference_type:
            was = before.type.value + (
                f"->{before.reference_type}" if before.reference_type else ""
            )
            now = after.type.value + (f"->{after.reference_type}" if after.reference_type else "")
            changes.append(FieldChange(before.key, "retyped", f"changes type from {was} to {now}"))
            continue
        gone = tuple(c for c in before.choices if c not in after.choices)
        if gone:
            changes.append(
                FieldChange(
                    before.key,
                    "choices_removed",
                    f"loses the choices {', '.join(gone)}",
                    removed_choices=gone,
                )
            )
        if after.required and not before.required:
            changes.append(FieldChange(before.key, "now_required", "becomes required"))
    for added in new.fields:
        if added.required and old.field(added.key) is None:
            changes.append(FieldChange(added.key, "now_required", "is added as required"))
    return changes
