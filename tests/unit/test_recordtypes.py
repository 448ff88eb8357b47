"""Checking and converting record values: pure, no database."""

from __future__ import annotations

from zoneinfo import ZoneInfo

import pytest
from email_validator import EmailNotValidError, validate_email
from hypothesis import given
from hypothesis import strategies as st

from crmflow.engine.recordtypes import (
    BUILTIN_TYPES,
    FieldType,
    compare_definitions,
    normalise_email,
    record_type_from_definition,
)
from crmflow.errors import InvalidInputError

PARIS = ZoneInfo("Europe/Paris")
CONTACT = BUILTIN_TYPES["contact"]
EVENT = BUILTIN_TYPES["event"]


def problems_of(exc: pytest.ExceptionInfo[InvalidInputError]) -> dict[str, str]:
    return {p.path: p.message for p in exc.value.problems}


def test_values_come_back_in_their_stored_form() -> None:
    out = CONTACT.normalise(
        {
            "last_name": "Popescu",
            "email": "Ana.Popescu@Example.RO",
            "client_since": "2026-05-27",
            "total_donations": 120.5,
            "newsletter": True,
            "company": 12,
            "manager": "maria",
        },
        zone=PARIS,
    )
    assert out == {
        "last_name": "Popescu",
        "email": "Ana.Popescu@example.ro",
        "client_since": "2026-05-27",
        "total_donations": 120.5,
        "newsletter": True,
        "company": 12,
        "manager": "maria",  # usernames are resolved by the service
    }


def test_text_forms_from_csv_are_converted() -> None:
    out = CONTACT.normalise(
        {
            "last_name": "Rossi",
            "total_donations": "1 200",
            "last_donation_amount": "12.5",
            "newsletter": "oui",
            "company": "7",
            "phone": " +39 06 1234 5678 ",
            "birth_date": "",
        },
        zone=PARIS,
        from_text=True,
    )
    assert out["total_donations"] == 1200
    assert out["last_donation_amount"] == 12.5
    assert out["newsletter"] is True
    assert out["company"] == 7
    assert out["phone"] == "+39 06 1234 5678"
    assert out["birth_date"] is None


def test_datetimes_without_offset_are_read_in_the_organisation_zone() -> None:
    out = EVENT.normalise({"title": "Gala", "start": "2026-07-01T19:30"}, zone=PARIS)
    assert out["start"] == "2026-07-01T17:30:00Z"
    out = EVENT.normalise({"title": "Gala", "start": "2026-07-01T19:30:00+00:00"}, zone=PARIS)
    assert out["start"] == "2026-07-01T19:30:00Z"


def test_every_problem_is_listed_with_its_field() -> None:
    with pytest.raises(InvalidInputError) as exc:
        CONTACT.normalise(
            {
                "emial": "x@example.com",
                "email": "not an address",
                "status": "vip",
                "total_donations": "lots",
                "newsletter": "maybe",
                "client_since": "27/05/2026",
                "company": "acme",
            },
            zone=PARIS,
        )
    found = problems_of(exc)
    assert "unknown field" in found["emial"]
    assert "not a valid email address" in found["email"]
    assert "not one of the choices" in found["status"]
    assert "expected a number" in found["total_donations"]
    assert "expected true or false" in found["newsletter"]
    assert "YYYY-MM-DD" in found["client_since"]
    assert "id of a company" in found["company"]
    assert found["last_name"] == "is required"
    hint = next(p.hint for p in exc.value.problems if p.path == "emial")
    assert "email" in hint


def test_numbers_refuse_booleans_and_non_finite_values() -> None:
    for bad in (True, float("nan"), "inf"):
        with pytest.raises(InvalidInputError):
            CONTACT.normalise(
                {"last_name": "x", "total_donations": bad}, zone=PARIS, from_text=True
            )


def test_partial_updates_may_omit_but_not_clear_required_fields() -> None:
    assert CONTACT.normalise({"first_name": "Ana"}, zone=PARIS, partial=True) == {
        "first_name": "Ana"
    }
    assert CONTACT.normalise({"email": None}, zone=PARIS, partial=True) == {"email": None}
    with pytest.raises(InvalidInputError, match="may not be cleared"):
        CONTACT.normalise({"last_name": None}, zone=PARIS, partial=True)


@given(
    st.from_regex(
        r"\A[A-Za-z0-9_%+-]{1,20}(\.[A-Za-z0-9_%+-]{1,10})?@([A-Za-z0-9-]{1,12}\.){1,3}[A-Za-z]{2,8}\Z"
    )
)
def test_the_fast_email_path_agrees_with_email_validator(address: str) -> None:
    try:
        expected: str | None = validate_email(address, check_deliverability=False).normalized
    except EmailNotValidError:
        expected = None
    try:
        got: str | None = normalise_email(address)
    except ValueError:
        got = None
    assert got == expected


@pytest.mark.parametrize(
    "address", ["a@b.test", "a@b.c1", "a@com", ".a@b.com", "a..b@c.com", "a@-b.com", "a@xn--a.com"]
)
def test_invalid_addresses_are_refused(address: str) -> None:
    with pytest.raises(ValueError, match="not a valid email address"):
        normalise_email(address)


def test_a_type_definition_lists_every_problem() -> None:
    with pytest.raises(InvalidInputError) as exc:
        record_type_from_definition(
            {
                "key": "Volunteer",
                "colour": "red",
                "fields": [
                    {"key": "shift", "type": "choice"},
                    {"key": "mentor", "type": "reference"},
                    {"key": "age", "type": "integer"},
                    {"key": "owner", "type": "text"},
                    {"key": "shift", "type": "text", "size": 3},
                ],
            }
        )
    found = problems_of(exc)
    assert "not a valid type key" in found["key"]
    assert found["colour"] == "unknown key"
    assert "at least one choice" in found["fields[0].choices"]
    assert "must name the record type" in found["fields[1].reference_type"]
    assert "not a field type" in found["fields[2].type"]
    assert "reserved" in found["fields[3].key"]
    assert "defined twice" in found["fields[3].key"] or "defined twice" in found["fields[4].key"]
    assert found["fields[4].size"] == "unknown key"


def test_a_valid_definition_gives_its_type() -> None:
    rtype = record_type_from_definition(
        {
            "key": "volunteer",
            "name": "Volunteer",
            "fields": [
                {"key": "name", "type": "text", "required": True},
                {"key": "shift", "type": "choice", "choices": ["am", "pm"]},
                {"key": "contact", "type": "reference", "reference_type": "contact"},
            ],
        }
    )
    assert rtype.field_keys == ["name", "shift", "contact"]
    shift = rtype.field("shift")
    assert shift is not None
    assert shift.type is FieldType.CHOICE
    assert shift.label == "Shift"


def test_comparing_definitions_finds_what_records_could_contradict() -> None:
    old = record_type_from_definition(
        {
            "key": "t",
            "fields": [
                {"key": "a", "type": "text"},
                {"key": "b", "type": "number"},
                {"key": "c", "type": "choice", "choices": ["x", "y"]},
                {"key": "d", "type": "text"},
            ],
        }
    )
    new = record_type_from_definition(
        {
            "key": "t",
            "fields": [
                {"key": "b", "type": "text"},
                {"key": "c", "type": "choice", "choices": ["x", "z"]},
                {"key": "d", "type": "text", "required": True},
                {"key": "e", "type": "text"},
            ],
        }
    )
    changes = {(c.key, c.change) for c in compare_definitions(old, new)}
    assert changes == {
        ("a", "removed"),
        ("b", "retyped"),
        ("c", "choices_removed"),
        ("d", "now_required"),
    }
