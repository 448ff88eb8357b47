"""The filter language on its own: parsing, problems, type checks and relative dates (pure)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from crmflow.engine.querylang import (
    Compare,
    Condition,
    Empty,
    Group,
    OneOf,
    Op,
    PredGroup,
    RelativeTime,
    TextMatch,
    Username,
    check_filter,
    filter_to_data,
    parse_filter,
)
from crmflow.engine.recordtypes import BUILTIN_TYPES
from crmflow.errors import InvalidInputError

PARIS = ZoneInfo("Europe/Paris")
NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)  # a Monday
CONTACT = BUILTIN_TYPES["contact"]
EVENT = BUILTIN_TYPES["event"]


def resolve(text: str, now: datetime = NOW, zone: ZoneInfo = PARIS) -> date | datetime:
    return RelativeTime.parse(text).resolve(now, zone)


def problems_of(data: Any, rtype: Any = CONTACT) -> list[tuple[str, str, str]]:
    with pytest.raises(InvalidInputError) as info:
        check_filter(parse_filter(data), rtype)
    return [(p.path, p.message, p.hint) for p in info.value.problems]


def resolved(data: Any, rtype: Any = CONTACT, now: datetime = NOW) -> Any:
    return check_filter(parse_filter(data), rtype).resolve(now=now, zone=PARIS)


# --- relative dates ------------------------------------------------------------------------


def test_the_seed_example_is_the_day_180_days_before_today() -> None:
    assert resolve("today - 180 days") == date(2026, 5, 27)


def test_today_is_taken_in_the_organisation_zone_not_in_utc() -> None:
    late_evening_utc = datetime(2026, 11, 23, 23, 30, tzinfo=UTC)  # 00:30 on the 24th in Paris
    assert resolve("today", late_evening_utc) == date(2026, 11, 24)
    assert resolve("today", late_evening_utc, ZoneInfo("UTC")) == date(2026, 11, 23)
    assert resolve("yesterday", late_evening_utc) == date(2026, 11, 23)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("tomorrow", date(2026, 11, 24)),
        ("start of week", date(2026, 11, 23)),
        ("end of week", date(2026, 11, 29)),
        ("start of month", date(2026, 11, 1)),
        ("end of month", date(2026, 11, 30)),
        ("start of year", date(2026, 1, 1)),
        ("end of year", date(2026, 12, 31)),
        ("start of month - 1 month", date(2026, 10, 1)),
        ("end of month - 1 month", date(2026, 10, 31)),
        ("end of month - 9 months", date(2026, 2, 28)),
        ("end of year - 1 year", date(2025, 12, 31)),
        ("today + 2 weeks", date(2026, 12, 7)),
        ("today - 1 year + 3 days", date(2025, 11, 26)),
        ("  Today  -  180   Days ", date(2026, 5, 27)),
    ],
)
def test_calendar_anchors_and_offsets(text: str, expected: date) -> None:
    assert resolve(text) == expected


def test_months_clamp_to_the_end_of_shorter_months() -> None:
    jan_31 = datetime(2027, 1, 31, 12, 0, tzinfo=UTC)
    assert resolve("today + 1 month", jan_31) == date(2027, 2, 28)
    assert resolve("end of month + 1 month", jan_31) == date(2027, 2, 28)
    leap = datetime(2028, 2, 10, 12, 0, tzinfo=UTC)
    assert resolve("end of month", leap) == date(2028, 2, 29)
    assert resolve("end of month + 1 year", leap) == date(2029, 2, 28)
    assert resolve("end of month + 1 month", leap) == date(2028, 3, 31)


def test_now_based_values_are_instants_with_whole_seconds() -> None:
    now = datetime(2026, 11, 23, 10, 0, 7, 123456, tzinfo=UTC)
    assert resolve("now", now) == datetime(2026, 11, 23, 10, 0, 7, tzinfo=UTC)
    assert resolve("now + 2 hours", now) == datetime(2026, 11, 23, 12, 0, 7, tzinfo=UTC)
    assert resolve("now - 90 minutes", now) == datetime(2026, 11, 23, 8, 30, 7, tzinfo=UTC)


def test_hours_on_a_day_count_from_its_local_midnight() -> None:
    assert resolve("start of day + 9 hours") == datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
    assert resolve("end of day - 1 hour") == datetime(2026, 11, 23, 22, 0, tzinfo=UTC)


def test_a_day_back_from_now_keeps_the_wall_clock_across_a_dst_change() -> None:
    # 12:00 in Paris on the day clocks go forward; the day before, 12:00 was 11:00 UTC.
    sunday_noon = datetime(2026, 3, 29, 10, 0, tzinfo=UTC)
    assert resolve("now - 1 day", sunday_noon) == datetime(2026, 3, 28, 11, 0, tzinfo=UTC)
    assert resolve("now - 24 hours", sunday_noon) == datetime(2026, 3, 28, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("last tuesday", "relative date"),
        ("today - 3 fortnights", "unknown unit 'fortnights'"),
        ("today minus 3 days", "relative date"),
        ("start of decade", "relative date"),
    ],
)
def test_malformed_relative_dates_say_the_accepted_forms(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        RelativeTime.parse(text)


# --- parsing -------------------------------------------------------------------------------


def test_the_seed_filter_parses_into_groups_and_conditions() -> None:
    node = parse_filter(
        {
            "all": [
                {"field": "client_since", "op": "=", "value": "today - 180 days"},
                {
                    "any": [
                        {"field": "status", "op": "in", "value": ["client", "donor"]},
                        {"field": "total_donations", "op": ">=", "value": 1000},
                    ]
                },
            ]
        }
    )
    assert node == Group(
        "all",
        (
            Condition("client_since", Op.EQ, "today - 180 days"),
            Group(
                "any",
                (
                    Condition("status", Op.IN, ["client", "donor"]),
                    Condition("total_donations", Op.GE, 1000),
                ),
            ),
        ),
    )


@pytest.mark.parametrize("empty", [None, {}, {"all": []}, []])
def test_an_empty_filter_matches_everything(empty: Any) -> None:
    assert resolved(empty) == PredGroup("all", ())


def test_operator_spellings_are_normalised_in_the_stored_form() -> None:
    node = parse_filter(
        {
            "any": [
                {"field": "status", "op": "NOT_IN", "value": ["lead"]},
                {"field": "email", "op": "is_empty"},
            ]
        }
    )
    assert filter_to_data(node) == {
        "any": [
            {"field": "status", "op": "not in", "value": ["lead"]},
            {"field": "email", "op": "is empty"},
        ]
    }


def test_every_structural_problem_is_reported_with_its_path() -> None:
    with pytest.raises(InvalidInputError) as info:
        parse_filter(
            {
                "all": [
                    {"field": "status", "op": "=", "value": "client"},
                    {
                        "any": [
                            {"field": "status", "op": "equals", "value": "x"},
                            {"field": "status", "op": "in", "value": "client"},
                            {"field": "total_donations", "op": "between", "value": [1]},
                            {"field": "email", "op": "is empty", "value": "x"},
                            {"field": "email", "op": "=", "value": None},
                            {"field": "email", "op": "=", "valeu": "x"},
                        ]
                    },
                    {"all": [], "any": []},
                    "status = client",
                ]
            }
        )
    found = {p.path: p for p in info.value.problems}
    assert set(found) == {
        "filter.all[1].any[0].op",
        "filter.all[1].any[1].value",
        "filter.all[1].any[2].value",
        "filter.all[1].any[3].value",
        "filter.all[1].any[4].value",
        "filter.all[1].any[5].valeu",
        "filter.all[1].any[5].value",
        "filter.all[2]",
        "filter.all[3]",
    }
    assert "unknown operator 'equals'" in found["filter.all[1].any[0].op"].message
    assert "starts with" in found["filter.all[1].any[0].op"].hint
    assert "needs a list" in found["filter.all[1].any[1].value"].message
    assert "two values" in found["filter.all[1].any[2].value"].message
    assert "takes no value" in found["filter.all[1].any[3].value"].message
    assert "is empty" in found["filter.all[1].any[4].value"].hint


# --- checking against the record type ------------------------------------------------------


def test_an_unknown_field_suggests_the_closest_and_lists_the_known_ones() -> None:
    [(path, message, hint)] = problems_of({"all": [{"field": "emial", "op": "=", "value": "a"}]})
    assert path == "filter.all[0].field"
    assert "unknown field 'emial'" in message
    assert "did you mean 'email'" in hint
    assert "client_since" in hint
    assert "created_at" in hint


def test_type_problems_are_all_reported_at_once() -> None:
    found = problems_of(
        {
            "all": [
                {"field": "total_donations", "op": ">", "value": "abc"},
                {"field": "total_donations", "op": "contains", "value": "1"},
                {"field": "status", "op": "in", "value": ["client", "dnoor"]},
                {"field": "client_since", "op": "=", "value": "six months ago"},
                {"field": "newsletter", "op": "=", "value": "maybe"},
                {"field": "company", "op": "=", "value": "ACME"},
                {"field": "id", "op": "is empty"},
            ]
        }
    )
    paths = [p for p, _, _ in found]
    assert paths == [
        "filter.all[0].value",
        "filter.all[1].op",
        "filter.all[2].value[1]",
        "filter.all[3].value",
        "filter.all[4].value",
        "filter.all[5].value",
        "filter.all[6].op",
    ]
    messages = {p: (m, h) for p, m, h in found}
    assert "expected a number" in messages["filter.all[0].value"][0]
    assert "'contains' does not apply to 'total_donations'" in messages["filter.all[1].op"][0]
    assert "did you mean 'donor'" in messages["filter.all[2].value[1]"][0]
    assert "today - 180 days" in messages["filter.all[3].value"][0]


def test_values_are_converted_to_the_field_type() -> None:
    pred = resolved(
        {
            "all": [
                {"field": "total_donations", "op": ">=", "value": "1000"},
                {"field": "newsletter", "op": "=", "value": "true"},
                {"field": "owner", "op": "in", "value": ["maria", 7]},
            ]
        }
    )
    fields = [p.field.key for p in pred.items]
    assert fields == ["total_donations", "newsletter", "owner"]
    assert pred.items[0].value == 1000
    assert pred.items[1].value is True
    assert pred.items[2] == OneOf(pred.items[2].field, (Username("maria"), 7))


# --- resolution into predicates ------------------------------------------------------------


def test_date_equality_compares_the_local_day() -> None:
    pred = resolved({"field": "client_since", "op": "=", "value": "today - 180 days"})
    assert isinstance(pred, Compare)
    assert (pred.op, pred.value) == ("=", date(2026, 5, 27))


def test_an_instant_on_a_date_field_counts_as_its_local_day() -> None:
    late = datetime(2026, 11, 23, 23, 30, tzinfo=UTC)
    pred = resolved({"field": "birth_date", "op": "<", "value": "now"}, now=late)
    assert pred.value == date(2026, 11, 24)


@pytest.mark.parametrize(
    ("day", "start", "end"),
    [
        (
            "2026-11-23",
            datetime(2026, 11, 22, 23, 0, tzinfo=UTC),
            datetime(2026, 11, 23, 23, 0, tzinfo=UTC),
        ),
        # Spring forward: a 23-hour day.
        (
            "2026-03-29",
            datetime(2026, 3, 28, 23, 0, tzinfo=UTC),
            datetime(2026, 3, 29, 22, 0, tzinfo=UTC),
        ),
        # Fall back: a 25-hour day.
        (
            "2026-10-25",
            datetime(2026, 10, 24, 22, 0, tzinfo=UTC),
            datetime(2026, 10, 25, 23, 0, tzinfo=UTC),
        ),
    ],
)
def test_a_day_on_a_datetime_field_is_the_whole_local_day(
    day: str, start: datetime, end: datetime
) -> None:
    pred = resolved({"field": "start", "op": "=", "value": day}, EVENT)
    assert [(c.op, c.value) for c in pred.items] == [(">=", start), ("<", end)]
    before = resolved({"field": "start", "op": "<", "value": day}, EVENT)
    until = resolved({"field": "start", "op": "<=", "value": day}, EVENT)
    after = resolved({"field": "start", "op": ">", "value": day}, EVENT)
    assert (before.op, before.value) == ("<", start)
    assert (until.op, until.value) == ("<", end)
    assert (after.op, after.value) == (">=", end)


def test_between_days_on_a_datetime_field_includes_both_whole_days() -> None:
    pred = resolved({"field": "start", "op": "between", "value": ["yesterday", "today"]}, EVENT)
    assert [(c.op, c.value) for c in pred.items] == [
        (">=", datetime(2026, 11, 21, 23, 0, tzinfo=UTC)),
        ("<", datetime(2026, 11, 23, 23, 0, tzinfo=UTC)),
    ]


def test_an_instant_on_a_datetime_field_is_compared_as_is() -> None:
    pred = resolved({"field": "start", "op": "<", "value": "now + 2 hours"}, EVENT)
    assert (pred.op, pred.value) == ("<", datetime(2026, 11, 23, 12, 0, tzinfo=UTC))
    naive = resolved({"field": "start", "op": ">=", "value": "2026-07-01T09:30"}, EVENT)
    assert naive.value == datetime(2026, 7, 1, 7, 30, tzinfo=UTC)  # read in Paris (UTC+2)


def test_negations_are_complements_and_text_matching_is_kept() -> None:
    pred = resolved(
        {
            "all": [
                {"field": "status", "op": "!=", "value": "client"},
                {"field": "status", "op": "not in", "value": ["lead"]},
                {"field": "email", "op": "is not empty"},
                {"field": "last_name", "op": "starts with", "value": "Pop"},
            ]
        }
    )
    ne, not_in, not_empty, starts = pred.items
    assert ne == PredGroup("not", (Compare(ne.items[0].field, "=", "client"),))
    assert not_in == PredGroup("not", (OneOf(not_in.items[0].field, ("lead",)),))
    assert not_empty == PredGroup("not", (Empty(not_empty.items[0].field),))
    assert starts == TextMatch(starts.field, "starts with", "Pop")


def test_resolving_needs_an_aware_now() -> None:
    checked = check_filter(
        parse_filter({"field": "client_since", "op": "=", "value": "today"}), CONTACT
    )
    with pytest.raises(ValueError, match="aware"):
        checked.resolve(now=datetime(2026, 11, 23, 10, 0), zone=PARIS)


def test_unknown_usernames_are_reported_with_the_other_problems() -> None:
    node = parse_filter(
        {
            "all": [
                {"field": "owner", "op": "in", "value": ["maria", "ghost", 4]},
                {"field": "manager", "op": "=", "value": "nobody"},
                {"field": "emial", "op": "is empty"},
            ]
        }
    )
    asked: list[set[str]] = []

    def existing(names: set[str]) -> list[str]:
        asked.append(names)
        return [n for n in names if n == "maria"]

    with pytest.raises(InvalidInputError) as info:
        check_filter(node, CONTACT, existing_users=existing)
    assert asked == [{"maria", "ghost", "nobody"}]
    assert [(p.path, p.message) for p in info.value.problems] == [
        ("filter.all[0].value[1]", "no user named 'ghost'"),
        ("filter.all[1].value", "no user named 'nobody'"),
        ("filter.all[2].field", "unknown field 'emial' for record type 'contact'"),
    ]
