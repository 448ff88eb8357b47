"""Record types: built-in and user-defined, and how they may change."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from crmflow.errors import ConflictError, InvalidInputError, NotFoundError, PermissionDeniedError
from crmflow.services import record_types, records
from crmflow.services.context import Actor, Context
from crmflow.services.record_types import get_record_type, update_record_type
from crmflow.services.setup import upgrade_database
from crmflow.store.record_types import record_type_catalog

VOLUNTEER = {
    "key": "volunteer",
    "name": "Volunteer",
    "fields": [
        {"key": "name", "type": "text", "required": True},
        {"key": "shift", "type": "choice", "choices": ["am", "pm"]},
        {"key": "hours", "type": "number"},
        {"key": "contact", "type": "reference", "reference_type": "contact"},
    ],
}
SKILLS = {"key": "skills", "type": "text"}


def test_built_in_types_are_listed_and_unknown_ones_named(ctx: Context) -> None:
    keys = [t.key for t in record_types.list_record_types(ctx)]
    for key in ("contact", "company", "event", "quote", "invoice", "order", "property"):
        assert key in keys
    assert record_types.get_record_type(ctx, "contact").builtin
    with pytest.raises(NotFoundError, match=r"no record type 'donor'.*contact"):
        record_types.get_record_type(ctx, "donor")


def test_admins_create_types_that_records_then_use(
    ctx: Context, admin: Actor, member: Actor
) -> None:
    with pytest.raises(PermissionDeniedError):
        record_types.create_record_type(ctx, member, VOLUNTEER)
    created = record_types.create_record_type(ctx, admin, VOLUNTEER)
    assert created.field_keys == ["name", "shift", "hours", "contact"]
    assert "volunteer" in record_types.catalog(ctx)
    rec = records.create_record(ctx, member, "volunteer", {"name": "Ion", "shift": "am"})
    assert rec.type == "volunteer"
    with pytest.raises(ConflictError, match="already exists"):
        record_types.create_record_type(ctx, admin, VOLUNTEER)
    with pytest.raises(ConflictError, match="built-in"):
        record_types.create_record_type(ctx, admin, {**VOLUNTEER, "key": "contact"})


def test_bad_definitions_are_refused_with_every_problem(ctx: Context, admin: Actor) -> None:
    with pytest.raises(InvalidInputError) as exc:
        record_types.create_record_type(
            ctx,
            admin,
            {
                "key": "shift",
                "fields": [
                    {"key": "who", "type": "reference", "reference_type": "volunteer"},
                    {"key": "when", "type": "timestamp"},
                ],
            },
        )
    messages = {p.path: p.message for p in exc.value.problems}
    assert "not a field type" in messages["fields[1].type"]
    with pytest.raises(InvalidInputError, match="no record type 'volunteer'"):
        record_types.create_record_type(
            ctx,
            admin,
            {
                "key": "shift",
                "fields": [{"key": "who", "type": "reference", "reference_type": "volunteer"}],
            },
        )


def test_fields_in_use_cannot_be_removed_or_retyped(
    ctx: Context, admin: Actor, member: Actor
) -> None:
    record_types.create_record_type(ctx, admin, VOLUNTEER)
    for i in range(3):
        records.create_record(
            ctx, member, "volunteer", {"name": f"v{i}", "hours": 2, "shift": "pm"}
        )
    fields = VOLUNTEER["fields"]
    assert isinstance(fields, list)
    without_hours = {**VOLUNTEER, "fields": [f for f in fields if f["key"] != "hours"]}
    with pytest.raises(InvalidInputError, match="hours: is removed, but 3 volunteer records"):
        record_types.update_record_type(ctx, admin, "volunteer", without_hours)
    retyped = {
        **VOLUNTEER,
        "fields": [{**f, "type": "text"} if f["key"] == "hours" else f for f in fields],
    }
    with pytest.raises(InvalidInputError, match="changes type from number to text, but 3"):
        record_types.update_record_type(ctx, admin, "volunteer", retyped)
    narrowed = {
        **VOLUNTEER,
        "fields": [{**f, "choices": ["am"]} if f["key"] == "shift" else f for f in fields],
    }
    with pytest.raises(InvalidInputError, match="loses the choices pm, but 3"):
        record_types.update_record_type(ctx, admin, "volunteer", narrowed)
    required = {
        **VOLUNTEER,
        "fields": [*fields, {"key": "team", "type": "text", "required": True}],
    }
    with pytest.raises(InvalidInputError, match="team: is added as required, but 3"):
        record_types.update_record_type(ctx, admin, "volunteer", required)

    # An unused field may go, and fields may be added.
    unused_gone = {
        **VOLUNTEER,
        "fields": [f for f in fields if f["key"] != "contact"] + [{"key": "team", "type": "text"}],
    }
    updated = record_types.update_record_type(ctx, admin, "volunteer", unused_gone)
    assert updated.field_keys == ["name", "shift", "hours", "team"]
    assert record_types.get_record_type(ctx, "volunteer").field_keys == updated.field_keys
    with pytest.raises(PermissionDeniedError):
        record_types.update_record_type(ctx, member, "volunteer", unused_gone)
    with pytest.raises(NotFoundError):
        record_types.update_record_type(ctx, admin, "donor", {**unused_gone, "key": "donor"})


def test_built_in_types_gain_fields_but_keep_their_own(ctx: Context, admin: Actor) -> None:
    contact = record_types.get_record_type(ctx, "contact").as_dict()
    grown = {**contact, "fields": [*contact["fields"], {"key": "nickname", "type": "text"}]}
    assert "nickname" in record_types.update_record_type(ctx, admin, "contact", grown).field_keys
    shrunk = {**contact, "fields": [f for f in contact["fields"] if f["key"] != "email"]}
    with pytest.raises(InvalidInputError, match="built-in field and cannot be removed"):
        record_types.update_record_type(ctx, admin, "contact", shrunk)


def test_type_files_in_yaml_or_json(ctx: Context, admin: Actor, tmp_path: Path) -> None:
    yaml_file = tmp_path / "volunteer.yaml"
    yaml_file.write_text(
        "key: volunteer\n"
        "name: Volunteer\n"
        "fields:\n"
        "  - {key: name, type: text, required: true}\n"
        "  - {key: shift, type: choice, choices: [am, pm]}\n"
    )
    assert record_types.load_record_type_file(ctx, admin, yaml_file).field_keys == ["name", "shift"]
    json_file = tmp_path / "volunteer.json"
    json_file.write_text(
        json.dumps({**VOLUNTEER, "fields": [*VOLUNTEER["fields"], {"key": "x", "type": "bool"}]})
    )
    assert "x" in record_types.load_record_type_file(ctx, admin, json_file).field_keys
    broken = tmp_path / "broken.yaml"
    broken.write_text("key: broken\nfields:\n  - {key: a, type: text\n")
    with pytest.raises(InvalidInputError, match="not valid YAML") as exc:
        record_types.load_record_type_file(ctx, admin, broken)
    assert exc.value.problems[0].line is not None
    bad = tmp_path / "bad.yaml"
    bad.write_text("key: bad\nfields:\n  - {key: a, type: colour}\n")
    with pytest.raises(InvalidInputError, match=r"bad.yaml: fields\[0\].type"):
        record_types.load_record_type_file(ctx, admin, bad)


def test_an_upgrade_keeps_what_the_organisation_added_to_a_built_in_type(
    ctx: Context, admin: Actor
) -> None:

    contact = get_record_type(ctx, "contact").as_dict()
    contact["fields"].append({"key": "shoe_size", "type": "number"})
    for field in contact["fields"]:
        if field["key"] == "status":
            field["choices"].append("volunteer")
    update_record_type(ctx, admin, "contact", contact)
    upgrade_database(ctx)
    after = get_record_type(ctx, "contact")
    assert after.field("shoe_size") is not None
    status = after.field("status")
    assert status is not None and "volunteer" in status.choices and "client" in status.choices


def test_the_catalogue_sees_a_type_changed_at_the_same_instant_and_parses_the_others_once(
    ctx: Context, admin: Actor
) -> None:
    # The worker reads the catalogue in every batch; types are parsed once per content, so a
    # change must show even when nothing else tells it apart (the clock is frozen here: the
    # type's updated_at does not move).
    record_types.create_record_type(ctx, admin, VOLUNTEER)
    with ctx.engine.connect() as conn:
        first = record_type_catalog(conn)
    update_record_type(
        ctx, admin, "volunteer", {**VOLUNTEER, "fields": [*VOLUNTEER["fields"], SKILLS]}
    )
    with ctx.engine.connect() as conn:
        second = record_type_catalog(conn)
    assert first["volunteer"].field_keys == ["name", "shift", "hours", "contact"]
    assert second["volunteer"].field_keys == ["name", "shift", "hours", "contact", "skills"]
    assert second["contact"] is first["contact"]  # unchanged: not parsed again


def test_a_type_file_with_a_nul_or_a_tag_is_refused_with_its_line_and_path(
    ctx: Context, admin: Actor, tmp_path: Path
) -> None:
    file = tmp_path / "gadget.yaml"
    body = "key: gadget\nname: Gadget\nfields:\n  - {key: name, type: text}\n"
    file.write_text(body.replace("name: Gadget", 'name: "Gad\\0get"'))
    with pytest.raises(InvalidInputError) as info:
        record_types.load_record_type_file(ctx, admin, file)
    [problem] = info.value.problems
    assert (problem.path, problem.line, problem.source) == ("name", 2, str(file))
    assert problem.message.startswith("the value at column 7 contains a NUL character (\\0)")
    assert problem.hint == "remove the NUL character (\\0)"
    file.write_text(body.replace("{key: name, type: text}", "key: name\n    type: !text"))
    with pytest.raises(InvalidInputError) as info:
        record_types.load_record_type_file(ctx, admin, file)
    [problem] = info.value.problems
    assert (problem.path, problem.line) == ("fields[0].type", 5)
    assert problem.hint == 'a value that starts with ! must be quoted, e.g. type: "!text"'
    with pytest.raises(NotFoundError):
        get_record_type(ctx, "gadget")
