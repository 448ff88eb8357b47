"""update_record and set_status: new values for the records the flows run on, through the one
write path of a record change (`services.records.update_records_in`), in one call for the batch
and in the engine's order (changes to one record apply one after the other)."""

from __future__ import annotations

from collections.abc import Sequence

from crmflow.engine.commands import SetStatus, UpdateRecord
from crmflow.services.effects.batch import Applies, EffectBatch
from crmflow.services.records import FieldChange, update_records_in

__all__ = ["RECORD_VALUES"]


def apply_record_values(batch: EffectBatch, commands: Sequence[UpdateRecord | SetStatus]) -> None:
    if not commands:
        return
    changes = [
        FieldChange(
            batch.record_id(c), c.values if isinstance(c, UpdateRecord) else {"status": c.status}
        )
        for c in commands
    ]
    results = update_records_in(batch.conn, batch.ctx, batch.actor, changes, known=batch.known)
    for command, problem in zip(commands, results, strict=True):
        if problem is not None:
            batch.fail(command, f"not applied: {problem}")


RECORD_VALUES = Applies[UpdateRecord | SetStatus]((UpdateRecord, SetStatus), apply_record_values)
