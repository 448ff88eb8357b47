"""Saved queries end to end, run once on SQLite and once on PostgreSQL (same records, same
answers). Records are inserted directly into the `records` table so these tests depend only on
the query code."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from crmflow.errors import ConflictError, InvalidInputError, NotFoundError, PermissionDeniedError
from crmflow.services.context import Actor, Context
from crmflow.services.queries import (
    count_filter,
    count_query,
    delete_query,
    get_query,
    list_queries,
    load_query_file,
    matching_ids,
    preview_query,
    save_query,
    update_query,
)
from crmflow.services.users import actor_by_username
from crmflow.store.schema import records

SEED_FILTER = {
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

Add = Callable[..., int]


@pytest.fixture
def add(ctx: Context) -> Add:
    """Insert one record and return its id."""

    def insert(
        data: dict[str, Any],
        *,
        type: str = "contact",
        owner_id: int | None = None,
        created_at: datetime | None = None,
    ) -> int:
        at = created_at or ctx.now()
        with ctx.engine.begin() as conn:
            result = conn.execute(
                records.insert().values(
                    type=type, owner_id=owner_id, data=data, created_at=at, updated_at=at
                )
            )
            key = result.inserted_primary_key
            assert key is not None
            return int(key[0])

    return insert


def ids_of(ctx: Context, record_type: str, filter: dict[str, Any]) -> set[int]:
    """The ids an unsaved filter matches, through a throw-away saved query's preview."""
    admin = actor_by_username(ctx, "system")
    name = "probe"
    with contextlib.suppress(NotFoundError):
        delete_query(ctx, admin, name)
    save_query(ctx, admin, name=name, record_type=record_type, filter=filter)
    found = {r.id for r in preview_query(ctx, name, limit=1000).items}
    assert count_filter(ctx, record_type, filter) == len(found)
    return found


def test_the_seed_query_finds_contacts_who_became_clients_180_days_ago(
    ctx: Context, manager: Actor, add: Add
) -> None:
    # Frozen clock: 2026-11-23 10:00 UTC, so today - 180 days is 2026-05-27 in Paris.
    client = add({"last_name": "Ionescu", "status": "client", "client_since": "2026-05-27"})
    donor = add({"last_name": "Rossi", "status": "donor", "client_since": "2026-05-27"})
    big_giver = add(
        {
            "last_name": "Dupont",
            "status": "lead",
            "client_since": "2026-05-27",
            "total_donations": 1500,
        }
    )
    add({"last_name": "Lead", "status": "lead", "client_since": "2026-05-27"})
    add({"last_name": "DayBefore", "status": "client", "client_since": "2026-05-26"})
    add({"last_name": "DayAfter", "status": "client", "client_since": "2026-05-28"})
    add({"last_name": "Never", "status": "client"})
    add({"name": "ACME", "status": "client", "client_since": "2026-05-27"}, type="company")

    view = save_query(
        ctx,
        manager,
        name="clients-six-months",
        record_type="contact",
        filter=SEED_FILTER,
        description="seed 002",
    )
    assert view.filter == SEED_FILTER
    assert count_query(ctx, "clients-six-months") == 3
    page = preview_query(ctx, "clients-six-months")
    assert [r.id for r in page.items] == sorted([client, donor, big_giver])
    assert page.next_after is None


def test_today_moves_with_the_organisation_zone_not_with_utc(
    ctx: Context, clock: Any, manager: Actor, add: Add
) -> None:
    on_27 = add({"last_name": "A", "status": "client", "client_since": "2026-05-27"})
    on_28 = add({"last_name": "B", "status": "client", "client_since": "2026-05-28"})
    save_query(ctx, manager, name="six", record_type="contact", filter=SEED_FILTER)
    clock.current = datetime(2026, 11, 24, 22, 59, tzinfo=UTC)  # 23:59 on the 24th in Paris
    assert [r.id for r in preview_query(ctx, "six").items] == [on_28]
    clock.current = datetime(2026, 11, 23, 23, 0, tzinfo=UTC)  # already the 24th in Paris
    assert [r.id for r in preview_query(ctx, "six").items] == [on_28]
    clock.current = datetime(2026, 11, 23, 22, 59, tzinfo=UTC)  # still the 23rd in Paris
    assert [r.id for r in preview_query(ctx, "six").items] == [on_27]


def test_not_equal_and_not_in_include_records_without_a_value(ctx: Context, add: Add) -> None:
    client = add({"last_name": "A", "status": "client", "email": "a@example.org"})
    lead = add({"last_name": "B", "status": "lead", "email": ""})
    missing = add({"last_name": "C"})
    null = add({"last_name": "D", "status": None, "email": None})

    assert ids_of(ctx, "contact", {"field": "status", "op": "!=", "value": "client"}) == {
        lead,
        missing,
        null,
    }
    assert ids_of(ctx, "contact", {"field": "status", "op": "not in", "value": ["lead"]}) == {
        client,
        missing,
        null,
    }
    assert ids_of(ctx, "contact", {"not": {"field": "status", "op": "=", "value": "lead"}}) == {
        client,
        missing,
        null,
    }
    assert ids_of(ctx, "contact", {"field": "status", "op": "=", "value": "client"}) == {client}
    assert ids_of(ctx, "contact", {"field": "email", "op": "is empty"}) == {lead, missing, null}
    assert ids_of(ctx, "contact", {"field": "email", "op": "is not empty"}) == {client}
    everyone = {client, lead, missing, null}
    assert ids_of(ctx, "contact", {}) == everyone
    # A negated `any` is the complement of the whole group, empties included.
    either = {
        "any": [
            {"field": "status", "op": "=", "value": "client"},
            {"field": "email", "op": "contains", "value": "@"},
        ]
    }
    assert ids_of(ctx, "contact", {"not": either}) == everyone - ids_of(ctx, "contact", either)


def test_text_matching_ignores_case_and_treats_wildcards_as_text(ctx: Context, add: Add) -> None:
    popescu = add({"last_name": "Popescu", "email": "ana.popescu@example.org"})
    pop = add({"last_name": "POPA", "first_name": "50% off"})
    add({"last_name": "Rossi", "first_name": "5000 off"})
    assert ids_of(ctx, "contact", {"field": "last_name", "op": "starts with", "value": "pop"}) == {
        popescu,
        pop,
    }
    assert ids_of(ctx, "contact", {"field": "email", "op": "contains", "value": "POPESCU@"}) == {
        popescu
    }
    assert ids_of(ctx, "contact", {"field": "first_name", "op": "contains", "value": "0%"}) == {pop}


def test_numbers_and_booleans_compare_by_value(ctx: Context, add: Add) -> None:
    small = add({"last_name": "A", "total_donations": 99.5, "newsletter": True})
    exact = add({"last_name": "B", "total_donations": 1000, "newsletter": False})
    big = add({"last_name": "C", "total_donations": 25000})
    assert ids_of(ctx, "contact", {"field": "total_donations", "op": ">=", "value": 1000}) == {
        exact,
        big,
    }
    assert ids_of(
        ctx, "contact", {"field": "total_donations", "op": "between", "value": [99.5, 1000]}
    ) == {small, exact}
    assert ids_of(ctx, "contact", {"field": "total_donations", "op": "in", "value": [1000, 7]}) == {
        exact
    }
    assert ids_of(ctx, "contact", {"field": "newsletter", "op": "=", "value": False}) == {exact}
    assert ids_of(ctx, "contact", {"field": "newsletter", "op": "!=", "value": True}) == {
        exact,
        big,
    }


def test_a_day_on_a_datetime_field_covers_the_local_day_on_dst_days(ctx: Context, add: Add) -> None:
    def event(start: str) -> int:
        return add({"title": start, "start": start}, type="event")

    before = event("2026-03-28T22:59:59Z")  # 23:59:59 on the 28th in Paris
    first = event("2026-03-28T23:00:00Z")  # midnight on the 29th
    last = event("2026-03-29T21:59:59Z")  # 23:59:59 CEST: the day is 23 hours long
    after = event("2026-03-29T22:00:00Z")
    assert ids_of(ctx, "event", {"field": "start", "op": "=", "value": "2026-03-29"}) == {
        first,
        last,
    }
    assert ids_of(ctx, "event", {"field": "start", "op": "<", "value": "2026-03-29"}) == {before}
    assert ids_of(ctx, "event", {"field": "start", "op": ">", "value": "2026-03-29"}) == {after}
    assert ids_of(ctx, "event", {"field": "start", "op": "!=", "value": "2026-03-29"}) == {
        before,
        after,
    }
    assert ids_of(
        ctx, "event", {"field": "start", "op": "between", "value": ["2026-03-28", "2026-03-29"]}
    ) == {before, first, last}


def test_relative_times_on_datetime_fields(ctx: Context, add: Add) -> None:
    # Now is 2026-11-23 10:00 UTC (11:00 in Paris).
    soon = add({"title": "soon", "start": "2026-11-23T11:30:00Z"}, type="event")
    later_today = add({"title": "later", "start": "2026-11-23T18:00:00Z"}, type="event")
    tomorrow = add({"title": "tomorrow", "start": "2026-11-23T23:30:00Z"}, type="event")
    assert ids_of(
        ctx, "event", {"field": "start", "op": "between", "value": ["now", "now + 2 hours"]}
    ) == {soon}
    assert ids_of(ctx, "event", {"field": "start", "op": "=", "value": "today"}) == {
        soon,
        later_today,
    }
    assert ids_of(ctx, "event", {"field": "start", "op": "=", "value": "tomorrow"}) == {tomorrow}


def test_built_in_fields_owner_id_and_creation_time(
    ctx: Context, manager: Actor, member: Actor, add: Add
) -> None:
    mine = add({"last_name": "A"}, owner_id=manager.id)
    theirs = add({"last_name": "B"}, owner_id=member.id)
    nobody = add({"last_name": "C"}, created_at=datetime(2026, 11, 22, 23, 30, tzinfo=UTC))
    assert ids_of(ctx, "contact", {"field": "owner", "op": "=", "value": "maria"}) == {mine}
    assert ids_of(ctx, "contact", {"field": "owner", "op": "!=", "value": "maria"}) == {
        theirs,
        nobody,
    }
    assert ids_of(ctx, "contact", {"field": "owner", "op": "in", "value": [member.id]}) == {theirs}
    assert ids_of(ctx, "contact", {"field": "owner", "op": "is empty"}) == {nobody}
    assert ids_of(ctx, "contact", {"field": "id", "op": ">", "value": mine}) == {theirs, nobody}
    # 23:30 UTC on the 22nd is already the 23rd in Paris, so all three were created today.
    assert ids_of(ctx, "contact", {"field": "created_at", "op": "=", "value": "today"}) == {
        mine,
        theirs,
        nobody,
    }
    assert ids_of(ctx, "contact", {"field": "created_at", "op": "<", "value": "now - 1 hour"}) == {
        nobody
    }


def test_saving_checks_everything_and_says_where(ctx: Context, manager: Actor) -> None:
    with pytest.raises(InvalidInputError) as info:
        save_query(
            ctx,
            manager,
            name="bad name!",
            record_type="contact",
            filter={
                "all": [
                    {"field": "emial", "op": "=", "value": "x"},
                    {"field": "owner", "op": "=", "value": "nobody-here"},
                ]
            },
        )
    assert [p.path for p in info.value.problems] == [
        "name",
        "filter.all[0].field",
        "filter.all[1].value",
    ]
    with pytest.raises(InvalidInputError) as info:
        save_query(ctx, manager, name="x", record_type="contacts", filter={})
    [problem] = info.value.problems
    assert problem.path == "record_type"
    assert "contact" in problem.hint


def test_who_may_change_saved_queries(ctx: Context, manager: Actor, member: Actor) -> None:
    with pytest.raises(PermissionDeniedError):
        save_query(ctx, member, name="q", record_type="contact", filter={})
    save_query(ctx, manager, name="q", record_type="contact", filter={})
    with pytest.raises(ConflictError, match="already exists"):
        save_query(ctx, manager, name="q", record_type="contact", filter={})
    with pytest.raises(PermissionDeniedError):
        delete_query(ctx, member, "q")
    with pytest.raises(PermissionDeniedError):
        update_query(ctx, member, "q", description="mine now")


def test_update_list_and_delete(ctx: Context, manager: Actor, add: Add) -> None:
    lead = add({"last_name": "A", "status": "lead"})
    add({"last_name": "B", "status": "client"})
    for i in range(3):
        save_query(ctx, manager, name=f"q{i}", record_type="contact", filter={})
    first = list_queries(ctx, limit=2)
    assert [q.name for q in first.items] == ["q0", "q1"]
    rest = list_queries(ctx, after=first.next_after, limit=2)
    assert [q.name for q in rest.items] == ["q2"]
    assert rest.next_after is None

    updated = update_query(
        ctx, manager, "q1", filter={"field": "status", "op": "=", "value": "lead"}
    )
    assert updated.filter == {"field": "status", "op": "=", "value": "lead"}
    assert [r.id for r in preview_query(ctx, "q1").items] == [lead]
    with pytest.raises(InvalidInputError):
        update_query(ctx, manager, "q1", record_type="company")  # company has no 'lead' status
    assert get_query(ctx, "q1").record_type == "contact"

    delete_query(ctx, manager, "q1")
    with pytest.raises(NotFoundError, match="crmflow queries list"):
        get_query(ctx, "q1")
    with pytest.raises(NotFoundError):
        count_query(ctx, "q1")


def test_preview_pages_by_id(ctx: Context, manager: Actor, add: Add) -> None:
    ids = [add({"last_name": f"n{i}", "status": "client"}) for i in range(5)]
    save_query(
        ctx,
        manager,
        name="clients",
        record_type="contact",
        filter={"field": "status", "op": "=", "value": "client"},
    )
    seen: list[int] = []
    after = None
    while True:
        page = preview_query(ctx, "clients", after=after, limit=2)
        seen += [r.id for r in page.items]
        if page.next_after is None:
            break
        after = page.next_after
    assert seen == ids


def test_matching_ids_is_a_select_for_set_based_work(
    ctx: Context, manager: Actor, add: Add
) -> None:
    target = add({"last_name": "A", "status": "donor", "client_since": "2026-05-27"})
    add({"last_name": "B", "status": "lead"})
    save_query(ctx, manager, name="six", record_type="contact", filter=SEED_FILTER)
    with ctx.engine.begin() as conn:
        select = matching_ids(ctx, conn, "six")
        assert list(conn.execute(select).scalars()) == [target]
        # As the engine will: one statement over the matching set.
        conn.execute(
            records.update()
            .where(records.c.id.in_(select))
            .values(data={"last_name": "A", "status": "client"})
        )
        later = matching_ids(ctx, conn, "six", now=datetime(2027, 1, 1, tzinfo=UTC))
        assert list(conn.execute(later).scalars()) == []


def test_loading_a_query_file_creates_then_updates(
    ctx: Context, manager: Actor, add: Add, tmp_path: Path
) -> None:
    add({"last_name": "A", "status": "client", "client_since": "2026-05-27"})
    file = tmp_path / "clients.yaml"
    file.write_text(
        "name: clients-six-months\n"
        "record_type: contact\n"
        "description: Contacts who became clients exactly 180 days ago (seed 002)\n"
        "filter:\n"
        "  all:\n"
        '    - {field: client_since, op: "=", value: "today - 180 days"}\n'
        "    - any:\n"
        "        - {field: status, op: in, value: [client, donor]}\n"
        '        - {field: total_donations, op: ">=", value: 1000}\n'
    )
    view = load_query_file(ctx, manager, file)
    assert (view.name, view.record_type) == ("clients-six-months", "contact")
    assert count_query(ctx, "clients-six-months") == 1

    file.write_text(file.read_text().replace("[client, donor]", "[donor]"))
    load_query_file(ctx, manager, file)
    assert count_query(ctx, "clients-six-months") == 0
    assert len(list_queries(ctx).items) == 1


def test_a_bad_query_file_reports_file_and_line(
    ctx: Context, manager: Actor, tmp_path: Path
) -> None:
    file = tmp_path / "bad.yaml"
    file.write_text(
        "name: bad\n"
        "record_type: contact\n"
        "filter:\n"
        "  all:\n"
        "    - field: client_since\n"
        "      op: '='\n"
        "      value: today - six months\n"
        "    - any:\n"
        "        - {field: statsu, op: in, value: [client]}\n"
        "colour: blue\n"
    )
    with pytest.raises(InvalidInputError) as info:
        load_query_file(ctx, manager, file)
    found = {(p.path, p.line) for p in info.value.problems}
    assert ("colour", 10) in found
    with pytest.raises(InvalidInputError) as info:
        file.write_text(file.read_text().replace("colour: blue\n", ""))
        load_query_file(ctx, manager, file)
    assert [(p.path, p.line, p.source) for p in info.value.problems] == [
        ("filter.all[0].value", 7, str(file)),
        ("filter.all[1].any[0].field", 9, str(file)),
    ]
    assert "bad.yaml:7: filter.all[0].value" in str(info.value)


def test_the_same_filter_gives_the_same_answer_whatever_the_backend(
    ctx: Context, backend: str, add: Add
) -> None:
    # A mixed bag through every operator; the expected ids are what a person reads off the data.
    a = add({"last_name": "A", "status": "client", "total_donations": 10, "language": "fr"})
    b = add({"last_name": "B", "status": "donor", "total_donations": 2000, "newsletter": True})
    c = add({"last_name": "C", "language": "ro", "birth_date": "1990-02-28"})
    filter = {
        "any": [
            {
                "all": [
                    {"field": "status", "op": "in", "value": ["client", "donor"]},
                    {"field": "total_donations", "op": "<", "value": 100},
                ]
            },
            {
                "all": [
                    {"field": "newsletter", "op": "=", "value": True},
                    {"not": {"field": "language", "op": "is not empty"}},
                ]
            },
            {"field": "birth_date", "op": "between", "value": ["1990-01-01", "1990-12-31"]},
        ]
    }
    assert ids_of(ctx, "contact", filter) == {a, b, c}, backend


def test_a_query_file_with_a_nul_or_a_tag_is_refused_with_its_line_and_path(
    ctx: Context, manager: Actor, tmp_path: Path
) -> None:
    """A NUL would reach the database (PostgreSQL refuses it, SQLite keeps it); a tag was
    dropped silently. Both refuse the file whole, nothing saved."""
    file = tmp_path / "nul.yaml"
    head = "name: clients\nrecord_type: contact\nfilter:\n  all:\n"
    for text, path, line, says in [
        (
            head.replace("clients", '"q\\0x"') + "    - {field: status, op: =, value: client}\n",
            "name",
            1,
            "the value at column 7 contains a NUL character (\\0) at character 2",
        ),
        (
            head + '    - {field: status, op: =, value: "a\\0b"}\n',
            "filter.all[0].value",
            5,
            "contains a NUL character (\\0) at character 2",
        ),
        (
            head + "    - field: status\n      op: =\n      value: !client\n",
            "filter.all[0].value",
            7,
            "starts with !client, which YAML reads as a tag",
        ),
    ]:
        file.write_text(text)
        with pytest.raises(InvalidInputError) as info:
            load_query_file(ctx, manager, file)
        [problem] = info.value.problems
        assert (problem.path, problem.line, problem.source) == (path, line, str(file))
        assert says in problem.message
        assert problem.hint
        assert f"nul.yaml:{line}: {path}: " in str(info.value)
    assert list_queries(ctx).items == []
