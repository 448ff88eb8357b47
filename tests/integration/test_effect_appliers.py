"""The engine's commands are carried out by one applier per command type (services.effects),
on both backends: people named by id are kept under their username, an outbox message written
twice (a retried step run) is kept once, and a command no applier takes fails with a reason
while the rest of the batch is applied."""

from __future__ import annotations

import typing
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import sqlalchemy as sa

from crmflow.engine.commands import (
    Assignee,
    Command,
    CommandBase,
    CreateTask,
    Notify,
    OutboxMessage,
    SmsPayload,
    WriteHistory,
)
from crmflow.services import records
from crmflow.services.context import Actor, Context
from crmflow.services.effects import apply_commands
from crmflow.services.effects.registry import APPLIERS
from crmflow.store.schema import notifications, outbox, record_history, tasks
from tests.conftest import FrozenClock


def test_every_command_type_has_one_applier() -> None:
    (union, *_) = typing.get_args(Command)
    taken = [command for applier in APPLIERS for command in applier.commands]
    assert sorted(c.__name__ for c in taken) == sorted(c.__name__ for c in typing.get_args(union))


@dataclass(slots=True, kw_only=True)
class Teleport(CommandBase):
    """A command of a kind this server does not know."""

    kind: Literal["teleport"] = "teleport"


def test_a_batch_is_applied_by_the_appliers(
    ctx: Context, admin: Actor, member: Actor, clock: FrozenClock
) -> None:
    rid = records.create_record(ctx, admin, "contact", {"first_name": "Ana", "last_name": "Pop"}).id
    now: datetime = clock()
    ids: dict[str, Any] = {"enrollment_id": 5, "step_key": "hello", "step_run": 1}
    message = OutboxMessage(
        **ids,
        action_index=3,
        idempotency_key="crmflow:5:1:#3",
        not_before=now,
        payload=SmsPayload(to="+40700000000", text="hi"),
    )
    commands: list[CommandBase] = [
        CreateTask(
            **ids, action_index=0, title="Call", assignee=Assignee(kind="user", ref=member.id)
        ),
        Notify(**ids, action_index=1, users=(member.id, "nobody"), groups=("sales",), message="m"),
        WriteHistory(**ids, action_index=2, message="said hello"),
        message,
        message,  # the same step run retried: the same key
        Teleport(**ids, action_index=4),
    ]
    with ctx.engine.begin() as conn:
        applied = apply_commands(
            conn,
            ctx,
            admin,
            commands,  # type: ignore[arg-type]  # Teleport is not a Command: that is the point
            record_of={5: rid},
            flow_of={5: "welcome"},
            now=now,
        )
    assert applied.failures == {(5, 1, 4): "teleport is not supported by this server"}
    with ctx.engine.connect() as conn:
        task_rows = conn.execute(sa.select(tasks.c.assignee_ref, tasks.c.record_id)).all()
        note_rows = conn.execute(
            sa.select(notifications.c.target_kind, notifications.c.target_ref).order_by(
                notifications.c.id
            )
        ).all()
        history = conn.execute(
            sa.select(record_history.c.message).where(record_history.c.record_id == rid)
        ).all()
        messages = conn.execute(sa.select(outbox.c.idempotency_key, outbox.c.kind)).all()
    assert [tuple(r) for r in task_rows] == [("andrei", rid)]
    assert [tuple(r) for r in note_rows] == [
        ("user", "andrei"),  # the new task, told to whom it is given
        ("user", "andrei"),
        ("user", "nobody"),
        ("group", "sales"),
    ]
    assert [r.message for r in history] == ["said hello"]
    assert [tuple(r) for r in messages] == [("crmflow:5:1:#3", "sms")]
