"""Starting records in flows by hand, and what a user reads about them, on both backends."""

from __future__ import annotations

import re

import pytest
import sqlalchemy as sa

from crmflow.delivery.dispatcher import Dispatcher
from crmflow.engine.lifecycle import LifecycleAction
from crmflow.errors import ConflictError, NotFoundError
from crmflow.services import enrollments as runs
from crmflow.services import flows, records, run_views
from crmflow.services.context import Actor, Context
from crmflow.store.schema import notifications, tasks
from crmflow.worker import run_once
from tests.conftest import FrozenClock, make_user


def _text(key: str, reentry: str, *, extra: str = "", trigger: str = "manual") -> str:
    return f"""\
schema_version: 1
key: {key}
name: {key}
record_type: contact
controller: system
reentry: {reentry}
triggers: [{{type: {trigger}}}]
{extra}steps:
  - key: hello
    actions:
      - type: send_email
        subject: "Hello {{{{ record.first_name }}}}"
        body: "Hi"
  - key: later
    timing: {{type: after, amount: 1, unit: days}}
    actions:
      - type: send_email
        subject: "Later"
        body: "Hi again"
"""


def _flow(ctx: Context, admin: Actor, key: str, reentry: str = "{mode: always}", **kw: str) -> None:
    flows.create_flow(ctx, admin, _text(key, reentry, **kw))
    flows.change_status(ctx, admin, key, LifecycleAction.START)


def _contact(ctx: Context, admin: Actor, name: str = "Claire") -> int:
    return records.create_record(
        ctx,
        admin,
        "contact",
        {"first_name": name, "last_name": "X", "email": f"{name.lower()}@example.org"},
    ).id


def test_never_lets_a_record_in_once_only(ctx: Context, admin: Actor, clock: FrozenClock) -> None:
    _flow(ctx, admin, "once", "{mode: never}")
    rid = _contact(ctx, admin)
    runs.start_record(ctx, admin, "once", rid)
    clock.advance(days=400)
    run_once(ctx)
    # The same words as when a trigger proposes the record (see test_triggers).
    never = "re-entry: never, and the record already went through this flow (entered 2026-11-23)"
    with pytest.raises(ConflictError, match=re.escape(never)):
        runs.start_record(ctx, admin, "once", rid)
    # The refusal is kept on the record.
    history = run_views.record_status(ctx, admin, rid).history
    assert history[-1]["message"].endswith(never)


def test_after_finishing_refuses_a_record_inside_and_admits_it_once_it_is_out(
    ctx: Context, admin: Actor, clock: FrozenClock
) -> None:
    _flow(ctx, admin, "again", "{mode: after_finishing}")
    rid = _contact(ctx, admin)
    runs.start_record(ctx, admin, "again", rid)
    with pytest.raises(ConflictError, match="already inside this flow at step 'later'"):
        runs.start_record(ctx, admin, "again", rid)
    clock.advance(days=1)
    run_once(ctx)
    second = runs.start_record(ctx, admin, "again", rid)
    assert second.step == "later"


def test_once_per_days_says_when_the_record_may_enter_again(
    ctx: Context, admin: Actor, clock: FrozenClock
) -> None:
    _flow(ctx, admin, "monthly", "{mode: once_per_days, days: 30}")
    rid = _contact(ctx, admin)
    runs.start_record(ctx, admin, "monthly", rid)
    clock.advance(days=2)
    run_once(ctx)
    with pytest.raises(ConflictError, match="may enter again from 2026-12-23 10:00 UTC"):
        runs.start_record(ctx, admin, "monthly", rid)
    clock.advance(days=28)
    assert runs.start_record(ctx, admin, "monthly", rid).status == "active"


def test_a_flow_admits_manual_starts_only_when_active_with_a_manual_trigger(
    ctx: Context, admin: Actor
) -> None:
    rid = _contact(ctx, admin)
    flows.create_flow(ctx, admin, _text("draft", "{mode: always}"))
    with pytest.raises(ConflictError, match="is a draft; start it first"):
        runs.start_record(ctx, admin, "draft", rid)
    _flow(ctx, admin, "auto", trigger="record_created")
    with pytest.raises(ConflictError, match="no manual trigger"):
        runs.start_record(ctx, admin, "auto", rid)
    _flow(ctx, admin, "drained")
    flows.change_status(ctx, admin, "drained", LifecycleAction.DRAIN)
    with pytest.raises(ConflictError, match="draining"):
        runs.start_record(ctx, admin, "drained", rid)
    with pytest.raises(NotFoundError):
        runs.start_record(ctx, admin, "drained", 999_999)


def test_the_loop_guard_cancels_the_eleventh_start_in_a_day_and_tells_the_controller(
    ctx: Context, admin: Actor, clock: FrozenClock
) -> None:
    _flow(ctx, admin, "loopy")
    rid = _contact(ctx, admin)
    for _ in range(10):
        runs.start_record(ctx, admin, "loopy", rid)
        clock.advance(minutes=5)
    with pytest.raises(ConflictError, match="loop guard"):
        runs.start_record(ctx, admin, "loopy", rid)

    status = run_views.record_status(ctx, admin, rid)
    assert len(status.enrollments) == 11
    # Every start of the flow for the record is cancelled, and says why.
    assert {e.status for e in status.enrollments} == {"cancelled"}
    assert all(e.end_reason.startswith("loop guard") for e in status.enrollments)
    with ctx.engine.connect() as conn:
        told = conn.execute(sa.select(notifications.c.target_ref)).scalars().all()
    assert told == ["system"]  # the controller, who is also the user who started it
    progress = run_views.flow_progress(ctx, admin, "loopy")
    assert (progress.entered, progress.cancelled, progress.inside) == (11, 11, 0)

    clock.advance(days=1)
    assert runs.start_record(ctx, admin, "loopy", rid).status == "active"


def test_private_flows_are_hidden_from_non_members(ctx: Context, admin: Actor) -> None:
    flows.create_flow(
        ctx,
        admin,
        _text("secret", "{mode: always}", extra="visibility: private\nmembers: [system]\n"),
    )
    flows.change_status(ctx, admin, "secret", LifecycleAction.START)
    outsider = make_user(ctx, "andrei", "member")
    rid = _contact(ctx, admin)
    started = runs.start_record(ctx, admin, "secret", rid)
    with pytest.raises(NotFoundError, match="no flow with key 'secret'"):
        runs.start_record(ctx, outsider, "secret", rid)
    with pytest.raises(NotFoundError):
        run_views.flow_progress(ctx, outsider, "secret")
    with pytest.raises(NotFoundError):
        runs.restart_enrollment(ctx, outsider, started.id)
    assert run_views.record_status(ctx, outsider, rid).enrollments == []
    assert [e.flow for e in run_views.record_status(ctx, admin, rid).enrollments] == ["secret"]


def test_a_user_reads_where_a_record_is_and_how_a_flow_is_doing(
    ctx: Context, admin: Actor, clock: FrozenClock
) -> None:
    _flow(ctx, admin, "seq")
    first, second = _contact(ctx, admin, "Ana"), _contact(ctx, admin, "Bob")
    runs.start_record(ctx, admin, "seq", first)
    runs.start_record(ctx, admin, "seq", second)
    clock.advance(days=1)
    run_once(ctx)
    runs.start_record(ctx, admin, "seq", _contact(ctx, admin, "Cid"))
    Dispatcher(ctx).run_once()  # the mail catcher: "2/2" counts emails delivered

    [view] = run_views.record_status(ctx, admin, first).enrollments
    assert (view.status, view.emails) == ("finished", (2, 2))
    assert [(r.step, r.status) for r in view.step_runs] == [("hello", "done"), ("later", "done")]
    [action] = view.step_runs[0].actions
    assert action["detail"] == "email to ana@example.org: Hello Ana"

    progress = run_views.flow_progress(ctx, admin, "seq")
    assert (progress.entered, progress.inside, progress.finished) == (3, 1, 2)
    assert progress.per_step == {"later": 1}
    assert progress.funnel == {"hello": 3, "later": 2}
    assert progress.emails == 5


def test_restart_runs_the_flow_again_from_its_first_step(
    ctx: Context, admin: Actor, clock: FrozenClock
) -> None:
    _flow(ctx, admin, "seq")
    rid = _contact(ctx, admin)
    started = runs.start_record(ctx, admin, "seq", rid)
    clock.advance(days=1)
    run_once(ctx)
    Dispatcher(ctx).run_once()
    again = runs.restart_enrollment(ctx, admin, started.id)
    # The count starts over: the first run's two emails went, the new one is not sent yet.
    assert (again.status, again.step, again.emails) == ("active", "later", (0, 2))
    assert [r.step for r in again.step_runs] == ["hello", "later", "hello"]
    Dispatcher(ctx).run_once()
    assert run_views.record_status(ctx, admin, rid).enrollments[0].emails == (1, 2)
    clock.advance(days=1)
    run_once(ctx)
    Dispatcher(ctx).run_once()
    final = run_views.record_status(ctx, admin, rid).enrollments[0]
    assert (final.status, final.emails) == ("finished", (2, 2))
    assert run_views.flow_progress(ctx, admin, "seq").emails == 4


CALL_BACK = """\
schema_version: 1
key: call-back
name: Call back
record_type: contact
triggers: [{type: manual}]
steps:
  - key: call
    actions:
      - type: create_task
        title: "Call {{ record.first_name }}"
        assignee: {type: field, field: manager}
"""


def test_a_task_for_the_user_in_a_record_field_names_them_by_username(
    ctx: Context, admin: Actor
) -> None:
    maria = make_user(ctx, "maria", "manager")
    flows.create_flow(ctx, admin, CALL_BACK)
    flows.change_status(ctx, admin, "call-back", LifecycleAction.START)
    rid = records.create_record(
        ctx, admin, "contact", {"first_name": "Ana", "last_name": "Pop", "manager": "maria"}
    ).id
    assert records.get_record(ctx, rid).data["manager"] == maria.id  # records hold user ids

    runs.start_record(ctx, admin, "call-back", rid)
    [view] = run_views.record_status(ctx, admin, rid).enrollments
    [action] = view.step_runs[0].actions
    assert action["detail"] == "task for maria (the record's manager): Call Ana"
    # Maria's task list holds it under her username, like the tasks of every other kind of
    # responsibility: one list per person.
    with ctx.engine.connect() as conn:
        stored = conn.execute(
            sa.select(tasks.c.assignee_kind, tasks.c.assignee_ref).where(tasks.c.record_id == rid)
        ).one()
    assert tuple(stored) == ("user", "maria")
