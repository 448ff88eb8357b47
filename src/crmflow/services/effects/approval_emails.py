"""ask_by_email: an approval step's email to the person it asks (each active member of the group
it asks), with one signed link per button (`services.approval_links`). The rows join the
batch's outbox rows (`EffectBatch.outbox_rows`), written by the outbox applier. Whoever could
not be emailed (no address, deactivated, an empty group) is named in the record's history."""

from __future__ import annotations

from collections.abc import Sequence

from crmflow.engine.commands import AskByEmail
from crmflow.services.approval_links import approval_email_row, approval_recipients
from crmflow.services.effects.batch import Applies, EffectBatch
from crmflow.store.history import HistoryEntry, insert_history

__all__ = ["APPROVAL_EMAILS"]


def apply_approval_emails(batch: EffectBatch, commands: Sequence[AskByEmail]) -> None:
    lines: list[HistoryEntry] = []
    for command in commands:
        recipients, left_out = approval_recipients(batch.conn, command.assignee)
        if left_out:
            text = f"Step {command.step_key!r}: {left_out}; the decision is in the task lists"
            lines.append(
                HistoryEntry(batch.record_id(command), command.enrollment_id, text, batch.now)
            )
        batch.outbox_rows += [
            approval_email_row(
                batch.ctx,
                batch.conn,
                command,
                username=username,
                address=address,
                record_id=batch.record_id(command),
                flow_key=batch.flow_of[command.enrollment_id],
                now=batch.now,
            )
            for username, address in recipients
        ]
    insert_history(batch.conn, lines)


APPROVAL_EMAILS = Applies[AskByEmail]((AskByEmail,), apply_approval_emails)
