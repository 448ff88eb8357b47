"""The conditions builder: filters of the saved-query language <-> CEL, both ways (issue 13)."""

from __future__ import annotations

from typing import Any

import pytest

from crmflow.engine.conditions import check_condition, compile_condition
from crmflow.services.condition_builder import (
    LAST,
    NEXT,
    Builder,
    Row,
    builder_to_cel,
    builder_to_filter,
    cel_to_builder,
    cel_to_filter,
    filter_to_builder,
    filter_to_cel,
    rows_from_form,
)

FIELDS = {
    "first_name": "text",
    "status": "choice",
    "amount": "number",
    "newsletter": "bool",
    "email": "email",
    "client_since": "date",
    "start": "date",
    "seen_at": "datetime",
    "odd key": "text",
    "id": "number",
    "owner": "user",
}

FILTERS: list[dict[str, Any]] = [
    {"all": [{"field": "status", "op": "!=", "value": "cancelled"}]},
    {"all": [{"field": "amount", "op": ">=", "value": 500.0}]},
    {"all": [{"field": "amount", "op": "<", "value": 3}]},
    {"all": [{"field": "newsletter", "op": "=", "value": True}]},
    {"all": [{"field": "status", "op": "in", "value": ["client", "donor"]}]},
    {"all": [{"field": "status", "op": "not in", "value": ["lost"]}]},
    {"all": [{"field": "first_name", "op": "contains", "value": 'say "hi"'}]},
    {"all": [{"field": "first_name", "op": "starts with", "value": "Ann"}]},
    {"all": [{"field": "email", "op": "is empty"}]},
    {"all": [{"field": "email", "op": "is not empty"}]},
    {"all": [{"field": "amount", "op": "between", "value": [10, 20]}]},
    {"all": [{"field": "odd key", "op": "=", "value": "x"}]},
    {
        "all": [
            {"field": "client_since", "op": "=", "value": "today - 180 days"},
            {"field": "email", "op": "is not empty"},
        ]
    },
    {
        "any": [
            {"field": "start", "op": "between", "value": ["today", "today + 7 days"]},
            {"field": "start", "op": "<=", "value": "today"},
            {
                "all": [
                    {"field": "status", "op": "=", "value": "client"},
                    {"field": "amount", "op": ">", "value": 1000},
                ]
            },
        ]
    },
    {
        "all": [
            {"field": "status", "op": "=", "value": "a"},
            {
                "any": [
                    {"field": "amount", "op": ">", "value": 1},
                    {
                        "all": [
                            {"field": "newsletter", "op": "=", "value": False},
                            {"field": "start", "op": ">", "value": "2026-01-31"},
                        ]
                    },
                ]
            },
        ]
    },
]


@pytest.mark.parametrize("data", FILTERS, ids=range(len(FILTERS)))
def test_a_filter_round_trips_through_cel(data: dict[str, Any]) -> None:
    cel, problems = filter_to_cel(data, FIELDS)
    assert problems == []
    assert check_condition(cel, record_fields=FIELDS) == []
    back, why = cel_to_filter(cel, FIELDS)
    assert why == ""
    assert back == data
    # ... and through the builder's rows, as a form shows and posts them
    built, problems = builder_to_filter(filter_to_builder(data), FIELDS)
    assert problems == []
    assert built == data


@pytest.mark.parametrize(
    ("cel", "expected"),
    [
        (
            'record.status != "cancelled"',
            {"all": [{"field": "status", "op": "!=", "value": "cancelled"}]},
        ),
        ("record.newsletter == true", {"all": [{"field": "newsletter", "op": "=", "value": True}]}),
        (
            "record.amount > 0 && record.email != ''",
            {
                "all": [
                    {"field": "amount", "op": ">", "value": 0},
                    {"field": "email", "op": "!=", "value": ""},
                ]
            },
        ),
        (
            'record.status == "a" || record.status == "b" && record.amount > 1',
            {
                "any": [
                    {"field": "status", "op": "=", "value": "a"},
                    {
                        "all": [
                            {"field": "status", "op": "=", "value": "b"},
                            {"field": "amount", "op": ">", "value": 1},
                        ]
                    },
                ]
            },
        ),
        ('record["odd key"] == "x"', {"all": [{"field": "odd key", "op": "=", "value": "x"}]}),
        ("", {"all": []}),
    ],
)
def test_a_condition_written_by_hand_in_the_same_shapes_opens_in_the_builder(
    cel: str, expected: dict[str, Any]
) -> None:
    assert cel_to_filter(cel, FIELDS) == (expected, "")


@pytest.mark.parametrize(
    ("cel", "why"),
    [
        ("size(record.first_name) > 2", "found 'size'"),
        ('record.nickname == "x"', "'nickname' is not a field"),
        ('change.fields.exists(f, f == "email")', "found 'change'"),
        ("record.amount * 2 > 10", "cannot read '* 2"),
        ("!(record.amount > 2)", "negation"),
        ('record.status == "a" extra', "'extra' after the end"),
        ('timestamp(record.seen_at + "T00:00:00Z") > timestamp(today + "T00:00:00Z")', "seen_at"),
        ("record.status == ", "ends too soon"),
    ],
)
def test_a_condition_the_builder_cannot_show_stays_in_cel_and_says_why(cel: str, why: str) -> None:
    data, reason = cel_to_filter(cel, FIELDS)
    assert data is None
    assert why in reason
    assert cel_to_builder(cel, FIELDS)[0] is None


def test_the_builders_relative_days_are_the_saved_query_pages_and_evaluate_as_they_say() -> None:
    builder = Builder(
        "all",
        [
            Row("client_since", LAST, "30"),
            Row("start", NEXT, "7"),
            Row("status", "in", "client, donor"),
            Row("amount", ">=", "12.5"),
            Row("", "=", "left empty: dropped"),
        ],
    )
    cel, problems = builder_to_cel(builder, FIELDS)
    assert problems == []
    program = compile_condition(cel)
    record = {"client_since": "2026-02-20", "start": "2026-03-15", "status": "donor", "amount": 13}
    assert program.execute({"record": record, "today": "2026-03-10"}) is True
    assert (
        program.execute({"record": {**record, "start": "2026-03-18"}, "today": "2026-03-10"})
        is False
    )
    reopened, why = cel_to_builder(cel, FIELDS)
    assert why == ""
    assert reopened == Builder("all", builder.items[:4])


def test_what_the_builder_cannot_write_is_said_at_its_row() -> None:
    _, problems = builder_to_cel(
        Builder("all", [Row("status", "="), Row("start", LAST, "ten")]), FIELDS
    )
    assert [(p.path, p.message) for p in problems] == [
        ("condition 2", "'in the last' needs a whole number of days, got 'ten'")
    ]
    _, problems = filter_to_cel(
        {"all": [{"field": "seen_at", "op": ">", "value": "today"}]}, FIELDS
    )
    assert "for a date field" in problems[0].message
    _, problems = filter_to_cel({"all": [{"field": "nope", "op": "=", "value": 1}]}, FIELDS)
    assert problems[0].path == "filter.all[0].field"


def test_rows_posted_by_the_form_make_the_groups_in_order() -> None:
    built = rows_from_form(
        ["any", "all"],
        ["0", "1", "1", "0"],
        ["status", "amount", "newsletter", "email"],
        ["=", ">", "=", "is empty"],
        ["client", "10", "yes", ""],
    )
    assert builder_to_filter(built, FIELDS)[0] == {
        "any": [
            {"field": "status", "op": "=", "value": "client"},
            {
                "all": [
                    {"field": "amount", "op": ">", "value": 10},
                    {"field": "newsletter", "op": "=", "value": True},
                ]
            },
            {"field": "email", "op": "is empty"},
        ]
    }


def test_parentheses_nested_past_the_bound_stay_in_cel_not_an_error() -> None:
    """A hostile or careless text (thousands of '(') is refused in words, never a RecursionError
    that would reach the page as a server error."""
    fields = {"a": "text"}
    for depth in (33, 5_000):
        cel = "(" * depth + "record.a == 1" + ")" * depth
        assert cel_to_filter(cel, fields) == (None, "parentheses nested more than 32 deep")
    cel = "(" * 32 + "record.a == 1" + ")" * 32
    assert cel_to_filter(cel, fields)[0] == {"all": [{"field": "a", "op": "=", "value": 1}]}
