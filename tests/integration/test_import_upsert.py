"""Imports that upsert (issue 10): a second import of the same file updates the records, it
does not duplicate them; by external id or by a field whose values are unique. SQLite and
PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest

from crmflow.errors import InvalidInputError
from crmflow.services import imports, records
from crmflow.services.context import Actor, Context


def contacts(ctx: Context) -> list[records.RecordView]:
    return records.list_records(ctx, "contact", limit=1000).items


def kinds(ctx: Context) -> list[str]:
    return [change.kind for change in records.change_feed(ctx, limit=1000).items]


def test_a_second_import_by_external_id_updates_and_does_not_duplicate(
    ctx: Context, manager: Actor, member: Actor, tmp_path: Path
) -> None:
    file = tmp_path / "contacts.csv"
    file.write_text(
        "external_id,first_name,last_name,email\n"
        "crm-1,Ana,Popescu,ana@example.ro\n"
        "crm-2,Ion,Ionescu,\n"
    )
    first = imports.import_records(ctx, manager, "contact", file, upsert_by="external_id")
    assert (first.imported, first.updated, first.unchanged, first.rejected) == (2, 0, 0, 0)

    again = imports.import_records(ctx, manager, "contact", file, upsert_by="external_id")
    assert (again.imported, again.updated, again.unchanged) == (0, 0, 2)
    assert len(contacts(ctx)) == 2

    file.write_text(
        "external_id,first_name,last_name,email,owner\n"
        "crm-1,Ana,Popescu-Rossi,,andrei\n"  # a new last name and owner; empty email kept
        "crm-3,Eva,Nou,,\n"
        ",No,Key,,\n"  # line 4: nothing names a record
    )
    third = imports.import_records(ctx, manager, "contact", file, upsert_by="external_id")
    assert (third.imported, third.updated, third.rejected) == (1, 1, 1)
    assert third.errors[0].line == 4 and third.errors[0].problems[0].path == "external_id"
    assert "1 updated" in third.summary()
    ana = contacts(ctx)[0]
    assert ana.data == {
        "first_name": "Ana",
        "last_name": "Popescu-Rossi",
        "email": "ana@example.ro",
    }
    assert ana.owner == member.username
    assert ana.version == 2
    assert kinds(ctx) == ["created", "created", "updated", "created"]  # updates trigger flows too


def test_without_upsert_a_taken_external_id_is_refused_and_a_repeat_in_the_file_merges(
    ctx: Context, manager: Actor, tmp_path: Path
) -> None:
    file = tmp_path / "contacts.jsonl"
    file.write_text(
        '{"external_id": "x1", "last_name": "One"}\n'
        '{"external_id": "x1", "first_name": "Uno", "last_name": "One"}\n'
        '{"external_id": 7, "last_name": "Seven"}\n'
    )
    report = imports.import_records(ctx, manager, "contact", file, upsert_by="external_id")
    assert (report.imported, report.rejected) == (2, 0)
    assert [c.data for c in contacts(ctx)] == [
        {"last_name": "One", "first_name": "Uno"},
        {"last_name": "Seven"},
    ]
    plain = imports.import_records(ctx, manager, "contact", file)
    assert (plain.imported, plain.rejected) == (0, 3)
    assert "is already record" in plain.errors[0].problems[0].message
    assert "--upsert-by external_id" in (plain.errors[0].problems[0].hint or "")


def test_upsert_by_a_field_updates_the_record_holding_the_value(
    ctx: Context, manager: Actor, tmp_path: Path
) -> None:
    file = tmp_path / "contacts.csv"
    file.write_text("email,last_name\nana@example.ro,Popescu\nion@example.ro,Ionescu\n")
    assert imports.import_records(ctx, manager, "contact", file, upsert_by="email").imported == 2
    file.write_text("email,last_name\nana@EXAMPLE.ro,Rossi\nnew@example.ro,Nou\n")
    report = imports.import_records(ctx, manager, "contact", file, upsert_by="email")
    assert (report.imported, report.updated) == (1, 1)
    assert [c.data["last_name"] for c in contacts(ctx)] == ["Rossi", "Ionescu", "Nou"]


def test_upsert_by_a_field_two_records_share_is_refused_before_anything_is_written(
    ctx: Context, manager: Actor, tmp_path: Path
) -> None:
    file = tmp_path / "contacts.csv"
    file.write_text("email,last_name\nsame@example.ro,A\nsame@example.ro,B\n")
    imports.import_records(ctx, manager, "contact", file)
    with pytest.raises(InvalidInputError) as refused:
        imports.import_records(ctx, manager, "contact", file, upsert_by="email")
    message = str(refused.value.problems[0])
    assert "not unique" in message and "'same@example.ro' is held by 2 records" in message
    assert len(contacts(ctx)) == 2
    with pytest.raises(InvalidInputError, match="not a field"):
        imports.import_records(ctx, manager, "contact", file, upsert_by="nickname")
    with pytest.raises(InvalidInputError, match="yes/no"):
        imports.import_records(ctx, manager, "contact", file, upsert_by="newsletter")


def test_without_upsert_a_repeated_new_external_id_is_refused_at_its_line(
    ctx: Context, manager: Actor, tmp_path: Path
) -> None:
    file = tmp_path / "contacts.csv"
    file.write_text("first_name,last_name,external_id\nA,One,X1\nB,Two,X1\nC,Three,X2\n")
    report = imports.import_records(ctx, manager, "contact", file)
    assert (report.read, report.imported, report.rejected) == (3, 2, 1)
    [error] = report.errors
    assert error.line == 3
    [problem] = error.problems
    assert (problem.path, problem.message) == (
        "external_id",
        "'X1' is given to another new record, at line 2",
    )
    assert "--upsert-by external_id" in problem.hint
    assert [c.data["first_name"] for c in contacts(ctx)] == ["A", "C"]


def test_an_external_id_holding_a_nul_is_refused_at_its_line_and_the_others_kept(
    ctx: Context, manager: Actor, tmp_path: Path
) -> None:
    file = tmp_path / "contacts.jsonl"
    file.write_text(
        '{"external_id": "x\\u0000y", "last_name": "Nul"}\n'
        '{"external_id": "ok", "last_name": "Fine"}\n'
    )
    report = imports.import_records(ctx, manager, "contact", file)
    assert (report.imported, report.rejected) == (1, 1)
    [error] = report.errors
    assert error.line == 1
    assert error.problems[0].path == "external_id"
    assert "NUL character" in error.problems[0].message
    assert [c.data for c in contacts(ctx)] == [{"last_name": "Fine"}]
