"""The calendar invitations of appointments (`invitations`): the one writer of the table.

One row per event record created with `invitation: ics`: its UID, the SEQUENCE last sent, the
attendee and organizer, and the run whose outbox carries its messages. `services.invitations`
decides what to send; this module only stores and reads.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from crmflow.store.idlists import among
from crmflow.store.schema import invitations

__all__ = ["ACTIVE", "CANCELLED", "active_invitations", "add_invitations", "set_sequences"]

ACTIVE = "active"
CANCELLED = "cancelled"


def add_invitations(conn: sa.Connection, rows: Sequence[dict[str, Any]]) -> None:
    """New invitations (each a dict of the table's columns), one executemany."""
    if rows:
        conn.execute(invitations.insert(), list(rows))


def active_invitations(conn: sa.Connection, record_ids: Collection[int]) -> dict[int, sa.Row[Any]]:
    """The invitations not cancelled of these event records, by record id, locked for the
    caller's transaction on PostgreSQL (two changes of one event must not both take one
    SEQUENCE)."""
    if not record_ids:
        return {}
    query = sa.select(invitations).where(
        among(invitations.c.record_id, record_ids, conn), invitations.c.status == ACTIVE
    )
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    return {int(row.record_id): row for row in conn.execute(query)}


def set_sequences(
    conn: sa.Connection, changes: Sequence[tuple[int, int, str]], *, now: datetime
) -> None:
    """(record id, new sequence, new status) for each invitation a new version was sent of."""
    if not changes:
        return
    statement = (
        invitations.update()
        .where(invitations.c.record_id == sa.bindparam("rid"))
        .values(sequence=sa.bindparam("seq"), status=sa.bindparam("st"), updated_at=now)
    )
    conn.execute(statement, [{"rid": r, "seq": s, "st": st} for r, s, st in changes])
