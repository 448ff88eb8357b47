"""The store's own conversions, on both backends: what goes in comes back the same.

The worker writes its hot rows through the driver (store.bulk) and reads date-times and JSON
with conversions of its own; these tests hold them to what SQLAlchemy's types did before.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import sqlalchemy as sa

from crmflow.services.context import Context
from crmflow.store.bulk import Writer
from crmflow.store.schema import record_changes, record_history

PARIS_SUMMER = timezone(timedelta(hours=2))


def test_date_times_come_back_as_the_same_instant_in_utc(ctx: Context) -> None:
    at = datetime(2026, 7, 14, 11, 30, 5, 123456, tzinfo=PARIS_SUMMER)
    with ctx.engine.begin() as conn:
        conn.execute(record_history.insert().values(record_id=1, message="core", at=at))
        writer = Writer(conn)
        writer.executemany(
            "insert into record_history (record_id, message, at) values (?, ?, ?)",
            [(2, "driver", writer.time(at)), (3, "later", writer.time(at + timedelta(days=1)))],
        )
    with ctx.engine.connect() as conn:
        rows = conn.execute(
            sa.select(record_history.c.message, record_history.c.at).order_by(record_history.c.id)
        ).all()
        # Compared in the database: the text SQLite keeps sorts as the instants do.
        later = conn.execute(
            sa.select(record_history.c.message).where(record_history.c.at > at)
        ).scalars()
        assert list(later) == ["later"]
    assert [r.message for r in rows] == ["core", "driver", "later"]
    assert rows[0].at == rows[1].at == at
    assert rows[0].at.tzinfo is not None and rows[0].at.utcoffset() == timedelta(0)
    assert rows[2].at == datetime(2026, 7, 15, 9, 30, 5, 123456, tzinfo=UTC)


def test_json_documents_keep_their_values_exactly(ctx: Context) -> None:
    document = {
        "big": 2**70,  # beyond 64 bits: must not come back as a float
        "text": "Émilie «quoted» \u2028",
        "float": 0.1,
        "nested": {"list": [1, None, True]},
    }
    with ctx.engine.begin() as conn:
        conn.execute(
            record_changes.insert().values(
                record_id=1,
                record_type="contact",
                kind="updated",
                before=document,
                after={},
                at=datetime(2026, 1, 1, tzinfo=UTC),
            )
        )
    with ctx.engine.connect() as conn:
        before = conn.execute(sa.select(record_changes.c.before)).scalar_one()
    assert before == document
    assert isinstance(before["big"], int)
