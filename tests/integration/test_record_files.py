"""A record's files on SQLite and PostgreSQL: kept, replaced, read back byte for byte,
deleted with the record; refused when too large, of a type the server does not take, or for a
field that is no file field; and a type keeps a file field while records keep files in it."""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import pytest

from crmflow.engine.recordtypes import BUILTIN_TYPES
from crmflow.errors import InvalidInputError, NotFoundError, PayloadTooLargeError
from crmflow.services import record_files, record_types, records
from crmflow.services.context import Actor, Context
from crmflow.store.schema import record_files as record_files_table
from tests.integration.helpers import count_rows, history

PDF = b"%PDF-1.4\n" + bytes(range(256)) * 40 + b"\n%%EOF\n"


def add_file_field(ctx: Context, admin: Actor, type_key: str, field: str) -> None:
    """The built-in type with one more field, a file field."""
    document: dict[str, Any] = BUILTIN_TYPES[type_key].as_dict()
    document["fields"].append({"key": field, "type": "file", "label": field.capitalize()})
    record_types.update_record_type(ctx, admin, type_key, document)


@pytest.fixture
def contact(ctx: Context, admin: Actor) -> int:
    add_file_field(ctx, admin, "contact", "contract")
    return records.create_record(ctx, admin, "contact", {"last_name": "Pop"}).id


def test_a_file_is_kept_replaced_read_back_and_deleted(
    ctx: Context, admin: Actor, member: Actor, contact: int
) -> None:
    info, replaced = record_files.put_file(ctx, member, contact, "contract", "Contract.pdf", PDF)
    assert not replaced
    assert (info.filename, info.content_type, info.size) == (
        "Contract.pdf",
        "application/pdf",
        len(PDF),
    )
    assert info.sha256 == hashlib.sha256(PDF).hexdigest()
    found = record_files.get_file(ctx, contact, "contract")
    assert found.content == PDF
    assert [f.field for f in record_files.list_files(ctx, contact)] == ["contract"]

    second = b"%PDF-1.7\nsigned\n"
    _, replaced = record_files.put_file(ctx, admin, contact, "contract", "signed.pdf", second)
    assert replaced
    assert record_files.get_file(ctx, contact, "contract").content == second
    assert count_rows(ctx, record_files_table) == 1

    record_files.delete_file(ctx, member, contact, "contract")
    with pytest.raises(NotFoundError, match="has no file in contract"):
        record_files.get_file(ctx, contact, "contract")
    with pytest.raises(NotFoundError):
        record_files.delete_file(ctx, member, contact, "contract")
    assert history(ctx, contact) == [
        f"File Contract.pdf ({len(PDF):,} bytes) attached as contract by andrei",
        "File signed.pdf (16 bytes) replaced by contract by system",
        "File signed.pdf removed from contract by andrei",
    ]
    # The record itself is untouched: no new version, no change event for a flow.
    assert records.get_record(ctx, contact).version == 1


def test_a_record_deleted_takes_its_files_along(ctx: Context, admin: Actor, contact: int) -> None:
    record_files.put_file(ctx, admin, contact, "contract", "c.pdf", PDF)
    records.delete_record(ctx, admin, contact)
    assert count_rows(ctx, record_files_table) == 0


def test_uploads_over_the_limits_are_refused_saying_which_limit_and_how_to_change_it(
    ctx: Context, admin: Actor, contact: int
) -> None:
    small = dataclasses.replace(
        ctx, settings=ctx.settings.model_copy(update={"max_file_bytes": 1000})
    )
    with pytest.raises(PayloadTooLargeError) as too_large:
        record_files.put_file(small, admin, contact, "contract", "c.pdf", PDF)
    assert "at most 1,000 bytes" in too_large.value.message
    assert "CRMFLOW_MAX_FILE_BYTES" in too_large.value.message

    program = b"MZ\x90\x00" + b"\x00" * 100
    with pytest.raises(InvalidInputError) as refused:
        record_files.put_file(ctx, admin, contact, "contract", "quote.pdf", program)
    [problem] = refused.value.problems
    assert "application/octet-stream" in problem.message
    assert "CRMFLOW_FILE_TYPES" in problem.hint
    assert count_rows(ctx, record_files_table) == 0

    anything = dataclasses.replace(
        ctx, settings=ctx.settings.model_copy(update={"file_types": "*"})
    )
    info, _ = record_files.put_file(anything, admin, contact, "contract", "quote.bin", program)
    assert info.content_type == "application/octet-stream"


def test_only_a_file_field_of_an_existing_record_takes_a_file(
    ctx: Context, admin: Actor, contact: int
) -> None:
    with pytest.raises(InvalidInputError) as refused:
        record_files.put_file(ctx, admin, contact, "email", "c.pdf", PDF)
    [problem] = refused.value.problems
    assert problem.message == "'email' is a email field of the contact record, not a file field"
    assert problem.hint == "its file fields: contract"
    with pytest.raises(InvalidInputError, match="has no field 'contrat'"):
        record_files.put_file(ctx, admin, contact, "contrat", "c.pdf", PDF)
    with pytest.raises(NotFoundError, match="no record with id 999"):
        record_files.put_file(ctx, admin, 999, "contract", "c.pdf", PDF)


def test_a_type_keeps_a_file_field_while_records_keep_files_in_it(
    ctx: Context, admin: Actor, contact: int
) -> None:
    record_files.put_file(ctx, admin, contact, "contract", "c.pdf", PDF)
    without = BUILTIN_TYPES["contact"].as_dict()
    with pytest.raises(InvalidInputError) as refused:
        record_types.update_record_type(ctx, admin, "contact", without)
    [problem] = refused.value.problems
    assert problem.path == "fields.contract"
    assert "1 contact record keeps a file in it" in problem.message

    record_files.delete_file(ctx, admin, contact, "contract")
    record_types.update_record_type(ctx, admin, "contact", without)
    assert record_types.get_record_type(ctx, "contact").field("contract") is None
