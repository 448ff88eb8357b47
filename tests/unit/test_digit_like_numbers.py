"""Digits int() cannot read ('²', '①': `str.isdigit()` is true of them) and numbers JSON cannot
hold (NaN, the infinities) in the condition builder and the filter language: refused in words,
never a ValueError (a 500) nor a value stored as null."""

from __future__ import annotations

from datetime import UTC

import pytest

from crmflow.engine.numbers import whole_number
from crmflow.engine.querylang import check_filter, parse_filter
from crmflow.engine.recordtypes.builtin import BUILTIN_TYPES
from crmflow.errors import InvalidInputError
from crmflow.services.condition_builder import (
    LAST,
    Builder,
    Row,
    builder_to_filter,
    cel_to_filter,
    rows_from_form,
)

CONTACT = BUILTIN_TYPES["contact"]
FIELDS = {"client_since": "date", "total_donations": "number", "owner": "user"}


@pytest.mark.parametrize(
    ("text", "read"),
    [("30", 30), (" 7 ", 7), ("²", None), ("①", None), ("٣", None), ("", None), ("-1", None)],
)
def test_whole_number_reads_ascii_digits_only(text: str, read: int | None) -> None:
    assert whole_number(text) == read


def test_whole_number_refuses_more_digits_than_asked() -> None:
    assert whole_number("1" * 5000) is None  # int() refuses past 4,300 digits
    assert whole_number("123", max_digits=2) is None


@pytest.mark.parametrize("days", ["²", "①", "٣", "1" * 5000, "0", "36501"])
def test_a_number_of_days_int_cannot_read_is_a_problem_at_its_row(days: str) -> None:
    data, problems = builder_to_filter(Builder(items=[Row("client_since", LAST, days)]), FIELDS)
    assert data == {"all": []}
    [problem] = problems
    assert problem.path == "condition 1"
    assert problem.message == f"'in the last' needs a whole number of days, got {days[:20]!r}"
    assert problem.hint == "write a number from 1 to 36500, e.g. 30"


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e400", "1, nan"])
def test_a_number_that_is_not_finite_is_a_problem_at_its_row(value: str) -> None:
    op = "in" if "," in value else ">"
    rows = Builder(items=[Row("total_donations", op, value)])
    data, problems = builder_to_filter(rows, FIELDS)
    assert data == {"all": []}
    assert [(p.path, p.message) for p in problems] == [
        ("condition 1", f"{value!r} is not a finite number")
    ]


def test_a_group_number_int_cannot_read_puts_the_row_in_the_top_group() -> None:
    built = rows_from_form(["all", "any"], ["²", "1"], ["a", "b"], ["=", "="], ["1", "2"])
    assert [type(i).__name__ for i in built.items] == ["Row", "Builder"]
    assert built.items[0] == Row("a", "=", "1")


@pytest.mark.parametrize("number", ["1e400", "1" * 4400])
def test_cel_with_a_number_past_a_float_or_int_stays_by_hand(number: str) -> None:
    data, why = cel_to_filter(f"record.total_donations > {number}", FIELDS)
    assert data is None
    assert why.startswith("a number")


def _check(value: object, field: str = "total_donations") -> InvalidInputError:
    with pytest.raises(InvalidInputError) as info:
        check_filter(parse_filter({"all": [{"field": field, "op": "=", "value": value}]}), CONTACT)
    return info.value


def test_the_filter_language_reads_a_superscript_as_a_username_not_an_id() -> None:
    with pytest.raises(InvalidInputError) as info:
        check_filter(
            parse_filter({"all": [{"field": "owner", "op": "=", "value": "²"}]}),
            CONTACT,
            existing_users=lambda names: [],
        )
    assert [p.message for p in info.value.problems] == ["no user named '²'"]  # not int()'s
    refused = _check("²", field="id")
    assert [p.message for p in refused.problems] == ["expected a record id for 'id', got str '²'"]


@pytest.mark.parametrize("value", [float("nan"), float("inf"), "2.5e400"])
def test_the_filter_language_refuses_a_number_that_is_not_finite(value: object) -> None:
    [problem] = _check(value).problems
    assert problem.path == "filter.all[0].value"
    assert "is not a finite number" in problem.message


def test_a_user_or_reference_field_read_from_text_takes_ascii_digits_only() -> None:
    # An import's cell `²` is no id: a reference says so in words; a user field takes it as a
    # username (the service then finds no such user), never int()'s own error.
    check = CONTACT.checker(zone=UTC, from_text=True).check
    values, problems = check({"last_name": "X", "company": "²"})
    assert [p.path for p in problems] == ["company"]
    assert "expected" in problems[0].message
    values, problems = check({"last_name": "X", "company": "12", "manager": "²"})
    assert problems == [] and values["company"] == 12 and values["manager"] == "²"
