"""Which change triggers a record change fires: every trigger kind, with and without from / to,
and the from / to values put in stored form (the pure engine, no database)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from crmflow.engine.definition import FlowDefinition
from crmflow.engine.recordtypes import type_catalog
from crmflow.engine.trigger_matching import (
    Change,
    ChangeTrigger,
    change_triggers,
    fires,
    first_fired,
    stored_value,
)
from crmflow.engine.validation import ValidationContext, flow_from_data

ZONE = ZoneInfo("Europe/Paris")
TYPES = type_catalog()
STARTED = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


def make_flow(triggers: list[dict[str, Any]], record_type: str = "contact") -> FlowDefinition:
    data = {
        "schema_version": 1,
        "key": "on-change",
        "name": "On change",
        "record_type": record_type,
        "owner": "maria",
        "triggers": triggers,
        "steps": [{"key": "note", "actions": [{"type": "history", "message": "seen"}]}],
        "timezone": "Europe/Paris",
    }
    return flow_from_data(data, context=ValidationContext(record_types=TYPES))


def one_trigger(trigger: dict[str, Any], record_type: str = "contact") -> ChangeTrigger:
    [found] = change_triggers(make_flow([trigger], record_type), TYPES[record_type], ZONE)
    return found


def change(
    kind: str, before: dict[str, Any], after: dict[str, Any], *, at: datetime = STARTED
) -> Change:
    return Change(1, 7, "contact", kind, before, after, None, at)


CREATED = change("created", {}, {"status": "lead"})
DELETED = change("deleted", {"status": "lead"}, {})


def updated(**values: tuple[Any, Any]) -> Change:
    """An update: each keyword is a field and its (before, after)."""
    return change(
        "updated",
        {k: before for k, (before, _) in values.items()},
        {k: after for k, (_, after) in values.items()},
    )


def test_created_and_deleted_fire_on_their_own_kind_only() -> None:
    created = one_trigger({"type": "record_created"})
    deleted = one_trigger({"type": "record_deleted"})
    anything = updated(status=("lead", "client"))
    assert [fires(created, c) for c in (CREATED, DELETED, anything)] == [True, False, False]
    assert [fires(deleted, c) for c in (CREATED, DELETED, anything)] == [False, True, False]


def test_updated_fires_on_any_update_or_on_one_of_its_fields() -> None:
    any_update = one_trigger({"type": "record_updated"})
    some_fields = one_trigger({"type": "record_updated", "fields": ["email", "phone"]})
    email = updated(email=("a@example.org", "b@example.org"))
    status = updated(status=("lead", "client"))
    assert fires(any_update, email) and fires(any_update, status)
    assert fires(some_fields, email) and not fires(some_fields, status)
    assert not fires(any_update, CREATED) and not fires(any_update, DELETED)


def test_field_changed_fires_when_the_field_changes_narrowed_by_from_and_to() -> None:
    lead_to_client = updated(status=("lead", "client"))
    lead_to_donor = updated(status=("lead", "donor"))
    prospect_to_client = updated(status=("prospect", "client"))
    cases = {
        "any": ({}, [True, True, True]),
        "from": ({"from": "lead"}, [True, True, False]),
        "to": ({"to": "client"}, [True, False, True]),
        "both": ({"from": "lead", "to": "client"}, [True, False, False]),
    }
    for name, (narrowed, expected) in cases.items():
        trigger = one_trigger({"type": "field_changed", "field": "status", **narrowed})
        seen = [fires(trigger, c) for c in (lead_to_client, lead_to_donor, prospect_to_client)]
        assert seen == expected, name


def test_field_changed_does_not_fire_when_the_field_kept_its_value_or_on_other_kinds() -> None:
    trigger = one_trigger({"type": "field_changed", "field": "status"})
    assert not fires(trigger, updated(email=("a@example.org", "b@example.org")))
    assert not fires(trigger, updated(status=("lead", "lead")))
    assert not fires(trigger, CREATED) and not fires(trigger, DELETED)


def test_a_field_appearing_or_going_away_is_a_change_from_or_to_nothing() -> None:
    trigger = one_trigger({"type": "field_changed", "field": "email"})
    assert fires(trigger, change("updated", {}, {"email": "a@example.org"}))
    assert fires(trigger, change("updated", {"email": "a@example.org"}, {}))


def test_status_changed_reads_the_status_field_with_from_and_to() -> None:
    trigger = one_trigger({"type": "status_changed", "from": "lead", "to": "client"})
    assert fires(trigger, updated(status=("lead", "client")))
    assert not fires(trigger, updated(status=("lead", "donor")))
    assert not fires(trigger, updated(status=("prospect", "client")))
    any_status = one_trigger({"type": "status_changed"})
    assert fires(any_status, updated(status=("client", "inactive")))
    assert not fires(any_status, updated(email=("a@example.org", "b@example.org")))


def test_from_and_to_are_compared_in_stored_form() -> None:
    # A date-time written in the flow's zone is stored in UTC: 09:00 in Paris is 08:00Z.
    trigger = one_trigger(
        {"type": "field_changed", "field": "start", "to": "2026-12-01T09:00"}, "event"
    )
    assert trigger.to_value == "2026-12-01T08:00:00Z"
    assert fires(trigger, updated(start=("2026-11-30T08:00:00Z", "2026-12-01T08:00:00Z")))
    assert not fires(trigger, updated(start=("2026-11-30T08:00:00Z", "2026-12-01T09:00:00Z")))


def test_a_value_that_no_longer_fits_its_field_is_kept_as_written() -> None:
    contact = TYPES["contact"]
    assert stored_value(contact, "last_donation_amount", "abc", ZONE) == "abc"
    assert stored_value(contact, "no_such_field", "x", ZONE) == "x"
    assert stored_value(None, "status", "lead", ZONE) == "lead"
    assert stored_value(contact, "status", None, ZONE) is None


def test_only_change_triggers_are_read_in_order_with_their_index() -> None:
    flow = make_flow(
        [
            {"type": "manual"},
            {"type": "status_changed", "to": "client"},
            {"type": "record_created"},
        ]
    )
    found = change_triggers(flow, TYPES["contact"], ZONE)
    assert [(t.index, t.trigger.type) for t in found] == [
        (1, "status_changed"),
        (2, "record_created"),
    ]


def test_the_first_trigger_fired_counts_and_nothing_before_the_flow_started() -> None:
    flow = make_flow([{"type": "record_updated"}, {"type": "status_changed", "to": "client"}])
    found = change_triggers(flow, TYPES["contact"], ZONE)
    to_client = updated(status=("lead", "client"))
    assert first_fired(found, to_client, started_at=STARTED) == found[0]
    assert first_fired(found[1:], to_client, started_at=STARTED) == found[1]
    assert first_fired(found, CREATED, started_at=STARTED) is None
    # A change made before the flow started, or a flow that never started, fires nothing.
    assert first_fired(found, to_client, started_at=STARTED + timedelta(seconds=1)) is None
    assert first_fired(found, to_client, started_at=None) is None
