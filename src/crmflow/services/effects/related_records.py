"""create_record: related records (`services.related_records`); their .ics invitations become
outbox rows, which the outbox applier writes with the batch's messages."""

from __future__ import annotations

from collections.abc import Sequence

from crmflow.engine.commands import CreateRecord
from crmflow.services.effects.batch import Applies, EffectBatch
from crmflow.services.related_records import create_related_records

__all__ = ["RELATED_RECORDS"]


def apply_creations(batch: EffectBatch, commands: Sequence[CreateRecord]) -> None:
    if not commands:
        return
    items = [(c, batch.record_id(c)) for c in commands]
    _, invitations = create_related_records(
        batch.conn, batch.ctx, batch.actor, items, batch.fail, now=batch.now
    )
    batch.outbox_rows += invitations


RELATED_RECORDS = Applies((CreateRecord,), apply_creations)
