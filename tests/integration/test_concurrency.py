"""Two writers at once must not lose each other's changes (SQLite and PostgreSQL)."""

from __future__ import annotations

import threading
import time

from crmflow.services import records
from crmflow.services.context import Actor, Context
from crmflow.store.schema import records as records_table


def test_concurrent_edits_of_one_record_both_survive(ctx: Context, admin: Actor) -> None:
    record = records.create_record(ctx, admin, "contact", {"last_name": "Pop"})
    first_read = threading.Event()
    errors: list[BaseException] = []

    def slow_writer() -> None:
        # A read-then-write transaction that pauses between its read and its write.
        try:
            with ctx.engine.begin() as conn:
                row = conn.execute(
                    records_table.select().where(records_table.c.id == record.id).with_for_update()
                ).one()
                first_read.set()
                time.sleep(0.5)
                conn.execute(
                    records_table.update()
                    .where(records_table.c.id == record.id)
                    .values(data={**row.data, "first_name": "Ana"})
                )
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    thread = threading.Thread(target=slow_writer)
    thread.start()
    assert first_read.wait(5)
    # This update starts while the slow writer holds its transaction: it must wait for it and
    # then apply on top of it, not on the stale state it would have read before.
    records.update_record(ctx, admin, record.id, {"email": "ana@example.org"})
    thread.join(10)
    assert not errors
    final = records.get_record(ctx, record.id).data
    assert final["first_name"] == "Ana"
    assert final["email"] == "ana@example.org"
