"""The entry rules (engine.entry), without a database: admission per flow status, the loop
guard's count, every re-entry policy, the entry condition, and their order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from crmflow.engine.budget import DEFAULT_LIMITS
from crmflow.engine.definition import FlowDefinition
from crmflow.engine.entry import (
    LOOP_GUARD_LIMIT,
    Candidate,
    FlowRef,
    PastEntry,
    admission_refusal,
    condition_refusal,
    decide,
    entry_refusal,
    loop_guard_trips,
    reentry_refusal,
)
from crmflow.engine.recordtypes import type_catalog
from crmflow.engine.runtime import RecordChanged, RecordSnapshot
from crmflow.engine.validation import ValidationContext, flow_from_data

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # time is an argument: the rules read no clock
ZONE = ZoneInfo("Europe/Paris")
CONTACT = type_catalog()["contact"]


def _flow(**extra: Any) -> FlowDefinition:
    data = {
        "schema_version": 1,
        "key": "welcome",
        "name": "Welcome",
        "record_type": "contact",
        "owner": "maria",
        "triggers": [{"type": "manual"}],
        "steps": [{"key": "done", "type": "end"}],
        **extra,
    }
    return flow_from_data(data, context=ValidationContext(record_types=type_catalog()))


def _record(**values: Any) -> RecordSnapshot:
    data = dict.fromkeys(CONTACT.field_keys)
    data.update({"first_name": "Claire", "email": "claire@example.org", **values})
    return RecordSnapshot(id=7, type="contact", values=data, owner="andrei")


def _entry(status: str, days_ago: float, step: str | None = None) -> PastEntry:
    return PastEntry(status, step, NOW - timedelta(days=days_ago))


def _refusal(flow: FlowDefinition, past: list[PastEntry], status: str = "active") -> str | None:
    return entry_refusal(
        status, flow, _record(), past=past, now=NOW, zone=ZONE, limits=DEFAULT_LIMITS
    )


# -- admission -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "words"),
    [
        ("draining", "flow draining: records inside finish, no new record enters"),
        ("paused", "flow paused: no record enters until it is resumed"),
        ("archived", "flow archived: no record enters"),
        ("draft", "flow is a draft: no record enters until it is started"),
        ("frozen", "flow is frozen: no record enters"),
    ],
)
def test_only_an_active_flow_admits_records(status: str, words: str) -> None:
    assert admission_refusal("active") is None
    assert admission_refusal(status) == words
    assert _refusal(_flow(), [], status=status) == words


# -- the loop guard ------------------------------------------------------------------------------


def test_the_tenth_start_in_a_day_enters_and_the_eleventh_trips_the_loop_guard() -> None:
    nine = [_entry("finished", 0.1 * n) for n in range(LOOP_GUARD_LIMIT - 1)]
    ten = [*nine, _entry("cancelled", 0.95)]

    assert not loop_guard_trips(nine, now=NOW)
    assert _refusal(_flow(reentry={"mode": "always"}), nine) is None
    assert loop_guard_trips(ten, now=NOW)  # cancelled starts count: a loop is a loop
    assert _refusal(_flow(reentry={"mode": "always"}), ten) == (
        "loop guard: flow 'welcome' was started more than 10 times for record 7 within a day"
    )


def test_starts_older_than_a_day_do_not_count_for_the_loop_guard() -> None:
    old = [_entry("finished", 1.01 + n) for n in range(20)]
    assert not loop_guard_trips(old, now=NOW)
    assert not loop_guard_trips([*old, *[_entry("finished", 0.5)] * 9], now=NOW)


def test_starts_judged_in_one_batch_count_for_the_loop_guard_as_if_made_one_by_one() -> None:
    flow = FlowRef(1, "welcome", "active", 1, _flow(reentry={"mode": "always"}))
    tenth, eleventh, twelfth = (Candidate(flow, 7, "record_updated", _record()) for _ in range(3))
    past = {(1, 7): [_entry("finished", 0.1)] * (LOOP_GUARD_LIMIT - 1)}

    verdict = decide(
        [tenth, eleventh, twelfth], past, now=NOW, zone_of=lambda _: ZONE, limits=DEFAULT_LIMITS
    )

    assert verdict.admitted == [tenth]
    assert len(verdict.tripped) == 2  # each start past the limit is one more start
    assert [d.reason[:10] for d in verdict.refused] == ["loop guard", "loop guard"]
    assert len(past[(1, 7)]) == LOOP_GUARD_LIMIT - 1  # the caller's facts are left as they were


# -- re-entry ------------------------------------------------------------------------------------


def test_never_keeps_out_a_record_that_went_through_once() -> None:
    never = _flow(reentry={"mode": "never"})
    assert _refusal(never, []) is None
    assert _refusal(never, [_entry("cancelled", 2)]) is None  # a cancelled start is no passage
    assert _refusal(never, [_entry("finished", 400)]) == (
        "re-entry: never, and the record already went through this flow (entered 2025-01-26)"
    )


@pytest.mark.parametrize("inside", ["active", "waiting", "held"])
def test_after_finishing_keeps_out_a_record_still_inside(inside: str) -> None:
    after = _flow()  # the default policy
    assert after.reentry.mode == "after_finishing"
    assert _refusal(after, [_entry(inside, 1, "remind")]) == (
        "already inside this flow at step 'remind'"
    )
    assert _refusal(after, [_entry(inside, 1)]) == "already inside this flow"
    assert _refusal(after, [_entry("finished", 0.5), _entry("left", 2)]) is None


def test_always_lets_a_record_in_while_it_is_inside() -> None:
    assert _refusal(_flow(reentry={"mode": "always"}), [_entry("active", 1, "remind")]) is None


def test_once_per_days_counts_from_the_last_entry() -> None:
    monthly = _flow(reentry={"mode": "once_per_days", "days": 30})
    assert _refusal(monthly, [_entry("finished", 31)]) is None
    assert _refusal(monthly, [_entry("finished", 10), _entry("finished", 45)]) == (
        "re-entry: once per 30 days, last entered 2026-02-20 "
        "(may enter again from 2026-03-22 09:00 UTC)"
    )
    # Still inside is refused first, whatever the days.
    assert _refusal(monthly, [_entry("waiting", 40, "ask")]) == (
        "already inside this flow at step 'ask'"
    )


def test_reentry_refusal_reads_the_newest_entry_first() -> None:
    policy = _flow(reentry={"mode": "once_per_days", "days": 7}).reentry
    assert reentry_refusal(policy, [_entry("finished", 8), _entry("finished", 1)], now=NOW) is None


# -- the entry condition -------------------------------------------------------------------------


def test_the_entry_condition_true_false_and_erroring() -> None:
    record = _record()
    holds = _flow(entry_condition='record.email.endsWith("@example.org")')
    fails = _flow(entry_condition='record.email.endsWith("@example.com")')
    breaks = _flow(entry_condition="int(record.first_name) > 3")

    def refusal(flow: FlowDefinition) -> str | None:
        return condition_refusal(
            flow, record, change=None, now=NOW, zone=ZONE, limits=DEFAULT_LIMITS
        )

    assert refusal(_flow()) is None  # no condition
    assert refusal(holds) is None
    assert refusal(fails) == 'entry condition false: record.email.endsWith("@example.com")'
    words = refusal(breaks)
    assert words is not None
    assert words.startswith("entry condition could not be evaluated, counted as false:")
    assert "invalid digit" in words


def test_the_entry_condition_sees_the_change_that_proposed_the_record() -> None:
    flow = _flow(entry_condition='"status" in change.fields')
    changed = RecordChanged(change="updated", fields=("status",))
    assert (
        entry_refusal(
            "active", flow, _record(), change=changed, now=NOW, zone=ZONE, limits=DEFAULT_LIMITS
        )
        is None
    )
    assert _refusal(flow, []) is not None


# -- the order -----------------------------------------------------------------------------------


def test_the_rules_refuse_in_their_order() -> None:
    flow = _flow(reentry={"mode": "never"}, entry_condition="false")
    past = [_entry("finished", 0.1)] * LOOP_GUARD_LIMIT
    assert _refusal(flow, past, status="paused") == admission_refusal("paused")
    assert (_refusal(flow, past) or "").startswith("loop guard")
    assert (_refusal(flow, past[:1]) or "").startswith("re-entry: never")
    assert _refusal(flow, []) == "entry condition false: false"


def test_a_record_proposed_twice_in_a_batch_is_judged_knowing_it_entered() -> None:
    flow = FlowRef(1, "welcome", "active", 1, _flow())
    created, updated = (Candidate(flow, 7, kind, _record()) for kind in ("created", "updated"))

    verdict = decide([created, updated], {}, now=NOW, zone_of=lambda _: ZONE, limits=DEFAULT_LIMITS)

    assert verdict.admitted == [created]
    assert [(d.trigger, d.reason) for d in verdict.refused] == [
        ("updated", "already inside this flow")
    ]
