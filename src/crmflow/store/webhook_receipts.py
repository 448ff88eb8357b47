"""The webhook-ids of signed inbound calls that were taken (`webhook_receipts`): the one place
that writes the table. Why a call is taken once, and for how long its id is kept, is
`services.webhook_receipts`'s to say; a receipt is named by (hook key, sender, webhook-id)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from crmflow.store.schema import webhook_receipts

__all__ = [
    "delete_received_before",
    "delete_received_up_to",
    "find_receipt",
    "insert_receipt",
    "set_answer",
]


def _named(hook_key: str, sender: str, webhook_id: str) -> sa.ColumnElement[bool]:
    return sa.and_(
        webhook_receipts.c.hook_key == hook_key,
        webhook_receipts.c.sender == sender,
        webhook_receipts.c.webhook_id == webhook_id,
    )


def find_receipt(
    conn: sa.Connection, hook_key: str, sender: str, webhook_id: str
) -> sa.Row[Any] | None:
    """The receipt's row (`.body_sha256`, `.received_at`, `.answer`), or None."""
    query = sa.select(webhook_receipts).where(_named(hook_key, sender, webhook_id))
    return conn.execute(query).first()


def insert_receipt(
    conn: sa.Connection,
    hook_key: str,
    sender: str,
    webhook_id: str,
    *,
    body_sha256: str,
    now: datetime,
) -> bool:
    """Write the receipt in this transaction; False when one with that name exists. A
    concurrent transaction holding the name makes this wait for its end (ON CONFLICT DO
    NOTHING on the unique index)."""
    insert = (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(
        webhook_receipts
    )
    written = conn.execute(
        insert.values(
            hook_key=hook_key,
            sender=sender,
            webhook_id=webhook_id,
            body_sha256=body_sha256,
            received_at=now,
        )
        .on_conflict_do_nothing(index_elements=["hook_key", "sender", "webhook_id"])
        .returning(webhook_receipts.c.webhook_id)  # (rowcount is not told by every driver)
    )
    return written.first() is not None


def set_answer(
    conn: sa.Connection, hook_key: str, sender: str, webhook_id: str, answer: dict[str, Any]
) -> None:
    """Keep the answer the call got, for its replays."""
    conn.execute(
        sa.update(webhook_receipts)
        .where(_named(hook_key, sender, webhook_id))
        .values(answer=answer)
    )


def delete_received_before(conn: sa.Connection, cutoff: datetime) -> None:
    """Forget the receipts taken before `cutoff`."""
    conn.execute(sa.delete(webhook_receipts).where(webhook_receipts.c.received_at < cutoff))


def delete_received_up_to(conn: sa.Connection, upto: datetime) -> int:
    """Delete the receipts taken at or before `upto` (pruning, in batches); how many went."""
    w = webhook_receipts.c
    deleted = conn.execute(
        webhook_receipts.delete()
        .where(w.received_at <= upto)
        .execution_options(preserve_rowcount=True)
    )
    return int(deleted.rowcount)
