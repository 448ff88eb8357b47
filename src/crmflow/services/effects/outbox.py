"""Outbox messages (send_email, send_sms, webhook): rows for the dispatcher, with the rows other
appliers made (invitations), in one statement that keeps the row already there for a key
(`store.outbox`): a step run retried after a crash does not send twice."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from crmflow.engine.commands import OutboxMessage
from crmflow.engine.test_mode import rewritten_for_test
from crmflow.services.effects.batch import Applies, EffectBatch
from crmflow.store.enrollments import test_recipients_of
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
        }
        for c in commands
    ]
    insert_ignoring_duplicates(batch.conn, as_tests(batch, rows + batch.outbox_rows))


def as_tests(batch: EffectBatch, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows, those of runs in test mode rewritten for the flow's test recipients and
    marked `test` (`engine.test_mode`); one that has no test recipient of its kind is written
    failed, saying why, and never sent."""
    tests = test_recipients_of(batch.conn, {r["enrollment_id"] for r in rows}) if rows else {}
    if not tests:
        return rows
    out: list[dict[str, Any]] = []
    for row in rows:
        recipients = tests.get(row["enrollment_id"])
        if recipients is None:  # one executemany needs the same columns in every row
            out.append({**row, "test": False, "last_error": None})
            continue
        for suffix, payload, why in rewritten_for_test(row["kind"], row["payload"], recipients):
            key = row["idempotency_key"] + suffix
            written: dict[str, Any] = {"payload": payload, "last_error": None}
            if payload is None:
                written = {"status": "failed", "last_error": why}
            out.append({**row, "idempotency_key": key, "test": True, **written})
    return out


OUTBOX = Applies((OutboxMessage,), apply_outbox)
