"""Outbox messages (send_email, send_sms, webhook): rows for the dispatcher, with the rows other
appliers made (invitations), in one statement that keeps the row already there for a key
(`store.outbox`): a step run retried after a crash does not send twice."""

from __future__ import annotations

from collections.abc import Sequence

from crmflow.engine.commands import OutboxMessage
from crmflow.services.effects.batch import Applies, EffectBatch
from crmflow.services.test_mode import as_tests
from crmflow.store.outbox import insert_ignoring_duplicates

__all__ = ["OUTBOX"]


def apply_outbox(batch: EffectBatch, commands: Sequence[OutboxMessage]) -> None:
    rows = [
        {
            "enrollment_id": c.enrollment_id,
            "step_key": c.step_key,
            "step_run": c.step_run,
            "idempotency_key": c.idempotency_key,
            "kind": c.channel,
            "payload": c.payload.model_dump(mode="json"),
            "status": "pending",
            "not_before": c.not_before,
            "attempts": 0,
            "created_at": batch.now,
            "priority": c.priority,
        }
        for c in commands
    ]
    # One executemany needs the same columns in every row: the other appliers' rows are bulk.
    others = [{"priority": 0, **row} for row in batch.outbox_rows]
    insert_ignoring_duplicates(batch.conn, as_tests(batch.conn, rows + others))


OUTBOX = Applies((OutboxMessage,), apply_outbox)
