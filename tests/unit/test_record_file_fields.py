"""The `file` field kind and the email's `attachments:`: what a record type and a flow may say
of them, checked when they are loaded, and what a file's bytes are taken for."""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

import pytest

from crmflow.engine.recordtypes import (
    BUILTIN_TYPES,
    FieldDef,
    FieldType,
    RecordType,
    record_type_from_definition,
)
from crmflow.engine.validation import ValidationContext, flow_from_data
from crmflow.errors import InvalidInputError, Problem
from crmflow.services.record_files import allowed_types, clean_filename, sniff_content_type

PARIS = ZoneInfo("Europe/Paris")


def _with_file(rtype: RecordType, key: str) -> RecordType:
    fields = (*rtype.fields, FieldDef(key, FieldType.FILE, key.capitalize()))
    return RecordType(rtype.key, rtype.name, fields, builtin=True)


TYPES = {
    **BUILTIN_TYPES,
    "contact": _with_file(BUILTIN_TYPES["contact"], "contract"),
    "company": _with_file(BUILTIN_TYPES["company"], "logo"),
}
CONTEXT = ValidationContext(record_types=TYPES, users=frozenset({"alice"}))


def _flow(attachments: Any) -> dict[str, Any]:
    email = {"type": "send_email", "subject": "Your contract", "body": "Attached."}
    email["attachments"] = attachments
    return {
        "schema_version": 1,
        "key": "contract-flow",
        "name": "Contract",
        "record_type": "contact",
        "owner": "alice",
        "triggers": [{"type": "manual"}],
        "steps": [{"key": "send", "actions": [email]}],
    }


def _problems(doc: dict[str, Any]) -> dict[str, Problem]:
    with pytest.raises(InvalidInputError) as caught:
        flow_from_data(doc, context=CONTEXT)
    return {p.path: p for p in caught.value.problems}


def test_a_record_type_may_declare_a_file_field_but_not_a_required_one() -> None:
    rtype = record_type_from_definition(
        {"key": "deal", "fields": [{"key": "quote", "type": "file"}]}
    )
    assert rtype.field("quote") == FieldDef("quote", FieldType.FILE, "Quote")

    with pytest.raises(InvalidInputError) as caught:
        record_type_from_definition(
            {"key": "deal", "fields": [{"key": "quote", "type": "file", "required": True}]}
        )
    [problem] = caught.value.problems
    assert problem.path == "fields[0].required"
    assert "cannot be required" in problem.message


def test_a_file_field_takes_no_value_in_the_record_and_says_how_to_upload() -> None:
    contact = TYPES["contact"]
    with pytest.raises(InvalidInputError) as caught:
        contact.normalise({"last_name": "Pop", "contract": "x.pdf"}, zone=PARIS)
    [problem] = caught.value.problems
    assert problem.path == "contract"
    assert "crmflow records attach RECORD contract PATH" in problem.message
    # Clearing it (None) is what every record's JSON holds for it: accepted.
    assert contact.normalise({"contract": None}, zone=PARIS, partial=True) == {"contract": None}


def test_attachments_of_the_record_and_of_a_related_record_pass() -> None:
    flow = flow_from_data(_flow(["contract", "company.logo"]), context=CONTEXT)
    [action] = flow.steps[0].actions  # type: ignore[union-attr]
    assert action.attachments == ["contract", "company.logo"]  # type: ignore[union-attr]
    one = flow_from_data(_flow("contract"), context=CONTEXT)  # one name reads as a list
    assert one.steps[0].actions[0].attachments == ["contract"]  # type: ignore[union-attr]


def test_an_attachment_that_is_no_file_field_is_refused_with_its_path_and_a_hint() -> None:
    found = _problems(_flow(["contrat", "email", "company.name", "company.nope", "a.b.c"]))
    where = "steps[0].actions[0].attachments"
    unknown = found[f"{where}[0]"]
    assert "has no field 'contrat'" in unknown.message
    assert "contract" in unknown.hint
    wrong = found[f"{where}[1]"]
    assert "is a email field; a file field is needed here" in wrong.message
    assert wrong.hint == "file fields: contract"
    related = found[f"{where}[2]"]
    assert (
        related.message == "'company.name' is a text field of the company record, not a file field"
    )
    assert related.hint == "its file fields: logo"
    assert "has no field 'nope'" in found[f"{where}[3]"].message
    assert "company.logo" in found[f"{where}[4]"].hint


@pytest.mark.parametrize(
    ("head", "name", "kind"),
    [
        (b"%PDF-1.7\n", "contract.pdf", "application/pdf"),
        (b"%PDF-1.7\n", "contract.txt", "application/pdf"),  # the bytes say, not the name
        (b"\x89PNG\r\n\x1a\n\0\0", "logo.png", "image/png"),
        (b"\xff\xd8\xff\xe0", "photo.jpg", "image/jpeg"),
        (
            b"PK\x03\x04\x14\0",
            "offer.docx",
            f"{'application/vnd.openxmlformats'}-officedocument.wordprocessingml.document",
        ),
        (b"PK\x03\x04\x14\0", "archive.bin", "application/zip"),
        (b"name,amount\nAna,12\n", "list.csv", "text/csv"),
        ("Bună ziua\n".encode(), "note.txt", "text/plain"),
        (b"MZ\x90\0\x03\0\0\0", "quote.pdf", "application/octet-stream"),  # a program
        (b"\xff\xfe\0\x01", "x.txt", "application/octet-stream"),
    ],
)
def test_a_files_type_is_read_from_its_bytes(head: bytes, name: str, kind: str) -> None:
    assert sniff_content_type(head, name) == kind


def test_allowed_types_default_list_and_any() -> None:
    default = allowed_types(None)
    assert default is not None
    assert "application/pdf" in default
    assert "application/octet-stream" not in default
    assert allowed_types("application/pdf, image/png") == frozenset(
        {"application/pdf", "image/png"}
    )
    assert allowed_types("*") is None


def test_a_files_name_loses_its_directories_and_refuses_line_breaks() -> None:
    assert clean_filename("C:\\Users\\ana\\contract.pdf") == "contract.pdf"
    assert clean_filename("../../etc/passwd") == "passwd"
    with pytest.raises(InvalidInputError, match="control character"):
        clean_filename("a\r\nBcc: x@example.org.pdf")
    with pytest.raises(InvalidInputError, match="is empty"):
        clean_filename("..")
