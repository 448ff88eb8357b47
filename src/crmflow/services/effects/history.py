"""history: lines in the records' history, written in one batch (`store.history`)."""

from __future__ import annotations

from collections.abc import Sequence

from crmflow.engine.commands import WriteHistory
from crmflow.services.effects.batch import Applies, EffectBatch
from crmflow.store.history import HistoryEntry, insert_history

__all__ = ["HISTORY"]


def apply_history(batch: EffectBatch, commands: Sequence[WriteHistory]) -> None:
    insert_history(
        batch.conn,
        [HistoryEntry(batch.record_id(c), c.enrollment_id, c.message, batch.now) for c in commands],
    )


HISTORY = Applies((WriteHistory,), apply_history)
