"""Every way into a flow follows the same rules (loop guard, entry condition, not-entered list,
draining), on both backends: manual / API starts, follow-ups started by a flow's step, and
starts that were made earlier and come due later."""

from __future__ import annotations

import re

import pytest
import sqlalchemy as sa

from crmflow.engine.lifecycle import LifecycleAction
from crmflow.errors import ConflictError
from crmflow.services import enrollments as runs
from crmflow.services import flows, records, run_views
from crmflow.services.context import Actor, Context
from crmflow.services.triggers import entry_decisions_for
from crmflow.services.users import ensure_system_user
from crmflow.store.schema import notifications
from crmflow.worker import run_batch, run_once
from tests.conftest import FrozenClock, make_user


def _flow(ctx: Context, admin: Actor, text: str) -> None:
    key = re.search(r"^key: (\S+)$", text, re.M)
    assert key is not None
    flows.create_flow(ctx, admin, text)
    flows.change_status(ctx, admin, key.group(1), LifecycleAction.START)


def _contact(ctx: Context, admin: Actor, name: str = "Claire", **values: object) -> int:
    data = {"first_name": name, "last_name": "X", "email": f"{name.lower()}@example.org"}
    return records.create_record(ctx, admin, "contact", {**data, **values}).id


def _told(ctx: Context) -> list[tuple[str, str]]:
    with ctx.engine.connect() as conn:
        return [
            (r.target_ref, r.message)
            for r in conn.execute(
                sa.select(notifications.c.target_ref, notifications.c.message).order_by(
                    notifications.c.id
                )
            )
        ]


def _not_entered(ctx: Context, admin: Actor, flow: str) -> list[tuple[str, str]]:
    return [(d.trigger, d.reason) for d in entry_decisions_for(ctx, admin, flow_key=flow)]


# A flow whose first step starts the same flow again for the record: the loop of seed 004.
LOOPING = """\
schema_version: 1
key: looping
name: Looping
record_type: contact
controller: system
reentry: {mode: always}
triggers: [{type: manual}, {type: follow_up, from_flows: [looping]}]
steps:
  - key: again
    actions:
      - type: start_flow
        flow: looping
  - key: wait
    timing: {type: after, amount: 2, unit: days}
    actions:
      - type: history
        message: "the loop went on"
"""


def test_a_flow_that_starts_itself_is_cancelled_by_the_loop_guard_and_the_controller_told(
    ctx: Context, admin: Actor, clock: FrozenClock
) -> None:
    maria = make_user(ctx, "maria", "manager")
    _flow(ctx, admin, LOOPING)
    rid = _contact(ctx, admin)
    runs.start_record(ctx, maria, "looping", rid)
    run_once(ctx)

    status = run_views.record_status(ctx, admin, rid)
    # Ten starts entered; the eleventh tripped the guard; none is running any more.
    assert len(status.enrollments) == 11
    assert {e.status for e in status.enrollments} == {"cancelled"}
    guard = "loop guard: flow 'looping' was started more than 10 times for record"
    assert all(e.end_reason.startswith(guard) for e in status.enrollments)
    progress = run_views.flow_progress(ctx, admin, "looping")
    assert (progress.entered, progress.cancelled, progress.inside) == (11, 11, 0)

    # The controller is told once. The worker made the eleventh start, so who began the chain
    # is not known, and the message says so.
    [(who, message)] = _told(ctx)
    assert who == "system"
    assert message.startswith(guard)
    assert "the flow was cancelled for this record" in message
    assert "started as a follow-up by flow 'looping'" in message
    assert "the user whose change started the chain is not known" in message

    # The refusal is in the flow's not-entered list and on the record's history.
    [(trigger, reason)] = _not_entered(ctx, admin, "looping")
    assert trigger == "follow_up"
    assert reason.startswith(guard)
    assert any(
        h["message"].startswith("not entered in flow 'looping': loop guard") for h in status.history
    )

    # Nothing is left to run: the loop is over, even days later.
    clock.advance(days=3)
    assert run_once(ctx) == 0
    history = [h["message"] for h in run_views.record_status(ctx, admin, rid).history]
    assert "the loop went on" not in history


def test_a_follow_up_start_the_loop_guard_tripped_on_is_shown_held_until_its_turn(
    ctx: Context, admin: Actor
) -> None:
    _flow(ctx, admin, LOOPING)
    rid = _contact(ctx, admin)
    runs.start_record(ctx, admin, "looping", rid)
    system = ensure_system_user(ctx)

    def statuses() -> list[str]:
        return [e.status for e in run_views.record_status(ctx, admin, rid).enrollments]

    # One batch at a time, each moving the start the previous one made, up to the eleventh.
    for _ in range(20):
        if "held" in statuses():
            break
        run_batch(ctx, system, now=ctx.now(), owner="w", limit=1)
    *entered, held = run_views.record_status(ctx, admin, rid).enrollments

    assert (held.status, held.step) == ("held", None)
    assert held.waiting_for.startswith("held by the loop guard")
    assert len(entered) == 10 and "held" not in {e.status for e in entered}
    page = run_views.flow_runs(ctx, admin, "looping", status="held")
    assert [r.id for r in page.items] == [held.id]

    # Its turn comes: it never enters, and every run of the record in the flow is cancelled.
    run_once(ctx)
    assert set(statuses()) == {"cancelled"}
    assert len(statuses()) == 11


PING = """\
schema_version: 1
key: {key}
name: {key}
record_type: contact
reentry: {{mode: always}}
triggers: [{{type: manual}}]
steps:
  - key: hand-over
    actions:
      - type: start_flow
        flow: pong
"""

PONG = """\
schema_version: 1
key: pong
name: Pong
record_type: contact
controller: system
reentry: {mode: always}
triggers: [{type: follow_up}]
steps:
  - key: hold
    timing: {type: after, amount: 2, unit: days}
    actions:
      - type: history
        message: "pong ran"
"""


def test_the_user_whose_start_made_the_eleventh_follow_up_is_told_too(
    ctx: Context, admin: Actor, clock: FrozenClock
) -> None:
    maria = make_user(ctx, "maria", "manager")
    _flow(ctx, admin, PONG)
    _flow(ctx, admin, PING.format(key="ping"))
    _flow(ctx, admin, PING.format(key="pang"))
    rid = _contact(ctx, admin)
    for i in range(11):  # each flow's own count stays under the limit; pong's reaches 11
        runs.start_record(ctx, maria, "ping" if i % 2 else "pang", rid)
        clock.advance(minutes=1)
    run_once(ctx)

    told = _told(ctx)
    assert [who for who, _ in told] == ["maria", "system"]
    assert all("the chain was started by maria" in m for _, m in told)
    pong = [e for e in run_views.record_status(ctx, admin, rid).enrollments if e.flow == "pong"]
    assert len(pong) == 11
    assert {e.status for e in pong} == {"cancelled"}
    # The step that made the start says why it did not work.
    last = run_views.record_status(ctx, admin, rid).enrollments[-2]
    assert last.flow == "pang"
    [action] = last.step_runs[0].actions
    assert action["status"] == "failed"
    assert "follow-up flow 'pong' not started: loop guard" in action["detail"]


GATED = """\
schema_version: 1
key: gated
name: Gated
record_type: contact
reentry: {mode: always}
entry_condition: 'record.first_name == "Claire"'
triggers: [{type: manual}, {type: follow_up}]
steps:
  - key: hello
    actions:
      - type: history
        message: "gated ran"
"""

OPENER = """\
schema_version: 1
key: opener
name: Opener
record_type: contact
triggers: [{type: manual}]
steps:
  - key: go
    actions:
      - type: start_flow
        flow: gated
"""


def test_the_entry_condition_keeps_records_out_of_manual_starts_and_follow_ups(
    ctx: Context, admin: Actor
) -> None:
    _flow(ctx, admin, GATED)
    _flow(ctx, admin, OPENER)
    claire, ana = _contact(ctx, admin), _contact(ctx, admin, "Ana")
    assert runs.start_record(ctx, admin, "gated", claire).status == "finished"

    false = 'entry condition false: record.first_name == "Claire"'
    with pytest.raises(ConflictError, match=re.escape(false)) as refused:
        runs.start_record(ctx, admin, "gated", ana)
    assert f"record {ana} was not entered in flow 'gated'" in str(refused.value)

    # A follow-up for Ana is refused the same way: the step that started it says so.
    opener = runs.start_record(ctx, admin, "opener", ana)
    [action] = opener.step_runs[0].actions
    assert action["status"] == "failed"
    assert f"follow-up flow 'gated' not started: {false}" in action["detail"]
    # ... and one for Claire enters.
    runs.start_record(ctx, admin, "opener", claire)
    run_once(ctx)
    gated = [
        e for e in run_views.record_status(ctx, admin, claire).enrollments if e.flow == "gated"
    ]
    assert [e.status for e in gated] == ["finished", "finished"]

    # Both refusals are in the not-entered list, newest first, with their trigger.
    assert _not_entered(ctx, admin, "gated") == [("follow_up", false), ("manual", false)]
    assert [d.record_id for d in entry_decisions_for(ctx, admin, record_id=ana)] == [ana, ana]


def test_refused_manual_starts_are_in_the_not_entered_list_with_the_words_of_other_triggers(
    ctx: Context, admin: Actor
) -> None:
    _flow(ctx, admin, GATED.replace("{mode: always}", "{mode: after_finishing}"))
    _flow(ctx, admin, PONG)
    claire = _contact(ctx, admin)
    with pytest.raises(ConflictError, match="the flow has no manual trigger"):
        runs.start_record(ctx, admin, "pong", claire)
    flows.change_status(ctx, admin, "gated", LifecycleAction.PAUSE)
    with pytest.raises(ConflictError, match="flow paused: no record enters until it is resumed"):
        runs.start_record(ctx, admin, "gated", claire)
    flows.change_status(ctx, admin, "gated", LifecycleAction.RESUME)
    flows.change_status(ctx, admin, "gated", LifecycleAction.DRAIN)
    with pytest.raises(ConflictError, match="flow draining: records inside finish"):
        runs.start_record(ctx, admin, "gated", claire)

    reasons = [r for _, r in _not_entered(ctx, admin, "gated")]
    assert [r.split(":")[0] for r in reasons] == ["flow draining", "flow paused"]
    assert _not_entered(ctx, admin, "pong") == [
        ("manual", "the flow has no manual trigger (add `- type: manual` to its triggers)")
    ]


DELAYED = """\
schema_version: 1
key: delayed
name: Delayed
record_type: contact
triggers: [{type: manual}]
steps:
  - key: later
    actions:
      - type: start_flow
        flow: target
        delay: {amount: 1, unit: days}
"""

TARGET = """\
schema_version: 1
key: target
name: Target
record_type: contact
triggers: [{type: follow_up}, {type: manual}]
steps:
  - key: hello
    actions:
      - type: history
        message: "target ran"
  - key: wait
    timing: {type: after, amount: 2, unit: days}
    actions:
      - type: history
        message: "target waited"
"""


def test_a_delayed_follow_up_that_comes_due_while_its_flow_drains_does_not_enter(
    ctx: Context, admin: Actor, clock: FrozenClock
) -> None:
    _flow(ctx, admin, TARGET)
    _flow(ctx, admin, DELAYED)
    rid = _contact(ctx, admin)
    runs.start_record(ctx, admin, "delayed", rid)
    inside = runs.start_record(ctx, admin, "target", _contact(ctx, admin, "Ana"))
    flows.change_status(ctx, admin, "target", LifecycleAction.DRAIN)

    clock.advance(days=1)
    run_once(ctx)
    [pending] = [
        e for e in run_views.record_status(ctx, admin, rid).enrollments if e.flow == "target"
    ]
    assert pending.status == "cancelled"
    assert pending.step_runs == []  # no step ran
    assert pending.end_reason.startswith("not entered: flow draining")
    assert "target ran" not in [
        h["message"] for h in run_views.record_status(ctx, admin, rid).history
    ]
    [(trigger, reason)] = _not_entered(ctx, admin, "target")
    assert (trigger, reason.split(":")[0]) == ("follow_up", "flow draining")

    # A record inside cannot be restarted while the flow drains (that would admit it again).
    with pytest.raises(ConflictError, match="'target' is draining") as refused:
        runs.restart_enrollment(ctx, admin, inside.id)
    assert "crmflow flows resume target" in str(refused.value)
    # The one inside still finishes.
    clock.advance(days=2)
    run_once(ctx)
    assert run_views.flow_progress(ctx, admin, "target").finished == 1
