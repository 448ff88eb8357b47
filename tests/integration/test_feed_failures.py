"""One flow whose handling of record changes raises fails alone (issue 8): the other flows that
listen to the same changes go on, the feed moves on, the failing flow's change trigger is
listed in its failing triggers with the change and the error, its records are told why they
did not enter, and the next change it handles without error clears it (SQLite and PostgreSQL,
frozen clock)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
import sqlalchemy as sa

from crmflow.engine.lifecycle import LifecycleAction
from crmflow.runner import move_batch
from crmflow.services import enrollments as runs
from crmflow.services import flows, records, triggers
from crmflow.services.context import Actor, Context
from crmflow.services.triggers.failures import failing_triggers
from crmflow.store import enrollments as repo
from crmflow.store.schema import enrollments, flow_status_changes
from tests.conftest import FrozenClock
from tests.integration.helpers import history


def _flow(ctx: Context, admin: Actor, key: str, trigger: str) -> int:
    text = f"""\
schema_version: 1
key: {key}
name: {key}
record_type: contact
triggers:
  - {{type: manual}}
  - {trigger}
steps:
  - key: hello
    actions: [{{type: history, message: "{key} says hello"}}]
"""
    view = flows.create_flow(ctx, admin, text)
    flows.change_status(ctx, admin, key, LifecycleAction.START)
    return view.id


def _contact(ctx: Context, admin: Actor, name: str) -> int:
    return records.create_record(ctx, admin, "contact", {"first_name": name, "last_name": "M"}).id


def _inside(ctx: Context, flow_id: int) -> list[int]:
    with ctx.engine.connect() as conn:
        return list(
            conn.execute(
                sa.select(enrollments.c.record_id)
                .where(enrollments.c.flow_id == flow_id)
                .order_by(enrollments.c.id)
            ).scalars()
        )


def _flow_history(ctx: Context, flow_id: int) -> list[str]:
    with ctx.engine.connect() as conn:
        return [
            str(note)
            for note in conn.execute(
                sa.select(flow_status_changes.c.note)
                .where(flow_status_changes.c.flow_id == flow_id)
                .where(flow_status_changes.c.note.is_not(None))
                .order_by(flow_status_changes.c.id)
            ).scalars()
        ]


def _break_flow(monkeypatch: pytest.MonkeyPatch, flow_id: int) -> None:
    """The first steps of the records that enter `flow_id` raise (as a bug would): every other
    flow's run as usual."""

    def failing(
        conn: sa.Connection,
        ctx: Context,
        actor: Actor,
        rows: Sequence[repo.EnrollmentRow],
        **kw: Any,
    ) -> Any:
        if any(r.flow_id == flow_id for r in rows):
            raise RuntimeError(f"flow {flow_id} is broken")
        return move_batch(conn, ctx, actor, rows, **kw)

    monkeypatch.setattr("crmflow.services.triggers.record_changes.move_batch", failing)


def test_a_failing_flow_does_not_stop_another_flow_listening_to_the_same_changes(
    ctx: Context, admin: Actor, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = _flow(ctx, admin, "good", "type: record_created")
    bad = _flow(ctx, admin, "bad", "type: record_created")
    clock.advance(minutes=1)
    _break_flow(monkeypatch, bad)
    claire, ana = _contact(ctx, admin, "Claire"), _contact(ctx, admin, "Ana")

    assert triggers.ingest_changes(ctx) == 2

    # The good flow's work is kept; the bad one's is rolled back, and its records say why.
    assert _inside(ctx, good) == [claire, ana]
    assert history(ctx, claire) == ["good says hello"]
    assert _inside(ctx, bad) == []
    reasons = {
        d.record_id: d.reason for d in triggers.entry_decisions_for(ctx, admin, flow_key="bad")
    }
    assert reasons == dict.fromkeys(
        [claire, ana],
        f"could not enter: RuntimeError: flow {bad} is broken; "
        "start it by hand once the flow is fixed",
    )
    # Its change trigger (the second) is failing, with the change and the error; the feed went
    # on (nothing is read again).
    [failure] = failing_triggers(ctx, bad)
    assert (failure["trigger_index"], failure["trigger_type"]) == (1, "record_created")
    assert failure["last_error"].startswith("change ")
    assert failure["last_error"].endswith(f"(and 1 more): RuntimeError: flow {bad} is broken")
    assert failure["failures"] == 1
    assert failing_triggers(ctx, good) == []
    assert _flow_history(ctx, bad)[-1].startswith(
        "trigger 1 (record_created) failed, tried again with the next change: change "
    )
    assert triggers.ingest_changes(ctx) == 0

    # Still broken: the next change fails it again, alone.
    clock.advance(minutes=1)
    paul = _contact(ctx, admin, "Paul")
    assert triggers.ingest_changes(ctx) == 1
    assert _inside(ctx, good) == [claire, ana, paul]
    [failure] = failing_triggers(ctx, bad)
    assert failure["failures"] == 2
    assert (
        failure["last_error"] == f"change {_last_change(ctx)}: RuntimeError: flow {bad} is broken"
    )

    # Fixed: the next change it handles clears the failure, and the flow's history says so.
    monkeypatch.undo()
    clock.advance(minutes=1)
    lea = _contact(ctx, admin, "Lea")
    assert triggers.ingest_changes(ctx) == 1
    assert _inside(ctx, bad) == [lea]
    assert _inside(ctx, good) == [claire, ana, paul, lea]
    assert failing_triggers(ctx, bad) == []
    assert _flow_history(ctx, bad)[-1] == "trigger 1 (record_created) runs again"


def _last_change(ctx: Context) -> int:
    with ctx.engine.connect() as conn:
        return int(conn.execute(sa.text("select max(id) from record_changes")).scalar_one())


def test_a_flow_whose_records_inside_fail_to_hear_a_change_is_marked_failing_alone(
    ctx: Context, admin: Actor, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Both flows' records wait for a change of the email; the bad flow's cannot hear it.
    waiting = """\
  - key: wait
    type: wait
    fields: [email]
    timeout: {amount: 30, unit: days}
  - key: seen
    actions: [{type: history, message: "%s heard the change"}]
"""
    ids: dict[str, int] = {}
    for key in ("good", "bad"):
        text = f"""\
schema_version: 1
key: {key}
name: {key}
record_type: contact
triggers: [{{type: manual}}]
steps:
{waiting % key}"""
        ids[key] = flows.create_flow(ctx, admin, text).id
        flows.change_status(ctx, admin, key, LifecycleAction.START)
    claire = _contact(ctx, admin, "Claire")
    for key in ids:
        runs.start_record(ctx, admin, key, claire)
    triggers.ingest_changes(ctx)
    clock.advance(minutes=1)
    _break_flow(monkeypatch, ids["bad"])
    records.update_record(ctx, admin, claire, {"email": "claire@example.org"})

    assert triggers.ingest_changes(ctx) == 1

    assert history(ctx, claire) == ["good heard the change"]
    [failure] = failing_triggers(ctx, ids["bad"])
    # No change trigger of the flow fired: the failure is the feed's own (index -1).
    assert (failure["trigger_index"], failure["trigger_type"]) == (-1, "record_change")
    assert failure["last_error"] == (
        f"change {_last_change(ctx)}: RuntimeError: flow {ids['bad']} is broken"
    )
