"""The appliers, in the order they run, and the batch's entry point `apply_commands`.

Each command type has one applier (`batch.Applier`); an applier may take several types that
must be carried out together (record values and statuses in one write, joins and leaves in
order, tasks and notifications sharing one lookup of users). Adding an action kind whose
command is new: an applier in a module of this package and one line in `APPLIERS`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from crmflow.engine.commands import Command, CommandBase
from crmflow.services.context import Actor, Context
from crmflow.services.effects import (
    approval_emails,
    flows,
    groups,
    history,
    outbox,
    owners,
    people,
    records,
    related_records,
    sql,
)
from crmflow.services.effects.batch import Applied, Applier, EffectBatch
from crmflow.store.database import Connection
from crmflow.store.records import KnownRecords

__all__ = ["APPLIERS", "apply_commands"]

# Kinds apply in this order, so that each sees what the earlier ones wrote: record values and
# status, related records, owners, lists, history, tasks and notifications, outbox, follow-ups,
# and SQL last (an administrator's statement may read what the step just did).
APPLIERS: tuple[Applier, ...] = (
    records.RECORD_VALUES,
    related_records.RELATED_RECORDS,
    owners.OWNERS,
    groups.GROUPS,
    history.HISTORY,
    people.PEOPLE,
    approval_emails.APPROVAL_EMAILS,
    outbox.OUTBOX,
    flows.FOLLOW_UPS,
    flows.END_FLOW,
    sql.SQL,
)

_POSITION: dict[type[CommandBase], int] = {
    command: n for n, applier in enumerate(APPLIERS) for command in applier.commands
}
if len(_POSITION) != sum(len(a.commands) for a in APPLIERS):  # pragma: no cover - a typo above
    raise ValueError("a command type has two appliers")


def apply_commands(
    conn: Connection,
    ctx: Context,
    actor: Actor,
    commands: Sequence[Command],
    *,
    record_of: dict[int, int],
    flow_of: dict[int, str],
    now: datetime,
    known: KnownRecords | None = None,
) -> Applied:
    """Apply `commands` (in the order the engine gave them) on `conn`.

    `record_of` / `flow_of` map each enrollment id to its record id / flow key. `actor` is who
    the record changes are attributed to (the system user for the worker). `known`: the
    batch's records and record types as stored now, when the caller knows them: the record
    values are then written from them without reading them again.
    """
    batch = EffectBatch(
        conn, ctx, actor, record_of=record_of, flow_of=flow_of, now=now, known=known
    )
    pending: list[list[CommandBase]] = [[] for _ in APPLIERS]
    for command in commands:
        position = _POSITION.get(type(command))
        if position is None:
            batch.fail(command, f"{command.kind} is not supported by this server")
        else:
            pending[position].append(command)
    for applier, its_commands in zip(APPLIERS, pending, strict=True):
        applier.apply(batch, its_commands)
    return batch.applied
