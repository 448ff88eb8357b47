"""The outbox (`outbox`): the external effects (email, SMS, webhooks) a step run decided, each
to deliver once; the dispatcher (next issue) sends them.

A message's idempotency key is made of (enrollment, step run, action), so a step run retried
after a crash writes the same key, and the row already there is kept. Read by
`services.run_views`; pending messages of a cancelled run are cancelled by
`services.enrollments`, whose statement belongs here when it moves.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from crmflow.store.schema import outbox

__all__ = ["insert_ignoring_duplicates"]


def insert_ignoring_duplicates(
    conn: sa.Connection, rows: Sequence[dict[str, Any]], *, key: str = "idempotency_key"
) -> None:
    """Outbox rows; a row whose idempotency key is already there is left out (a retried step
    run produces the same keys, and must not send twice)."""
    if rows:
        insert = (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(outbox)
        conn.execute(insert.on_conflict_do_nothing(index_elements=[key]), rows)
