"""The change feed filters out in SQL the changes that no flow listens to, and still hears the
others in order: a contact created among many company changes enters its flow, and the feed's
count of consumed changes counts both."""

from __future__ import annotations

import sqlalchemy as sa

from crmflow.engine.lifecycle import LifecycleAction
from crmflow.services import flows, records, triggers
from crmflow.services.context import Actor, Context
from crmflow.store.feed import read_heard
from crmflow.store.schema import enrollments, record_changes

WELCOME = """\
schema_version: 1
key: welcome
name: Welcome
record_type: contact
owner: system
triggers: [{type: record_created}]
steps:
  - key: hello
    actions:
      - type: history
        message: "Welcomed {{ record.last_name }}"
"""


def _company_changes(ctx: Context, count: int) -> None:
    """`count` changes of companies (no flow runs on companies: nobody hears them)."""
    with ctx.engine.begin() as conn:
        conn.execute(
            record_changes.insert(),
            [
                {
                    "record_id": 9000 + i,
                    "record_type": "company",
                    "kind": "updated",
                    "at": ctx.now(),
                }
                for i in range(count)
            ],
        )


def test_a_change_someone_hears_among_many_nobody_hears_is_handled_and_counted(
    ctx: Context, admin: Actor
) -> None:
    flows.create_flow(ctx, admin, WELCOME)
    flows.change_status(ctx, admin, "welcome", LifecycleAction.START)
    assert triggers.ingest_changes(ctx) == 0  # the flow's own start made no record change
    _company_changes(ctx, 250)
    rid = records.create_record(ctx, admin, "contact", {"last_name": "Pop"}).id
    _company_changes(ctx, 250)
    with ctx.engine.connect() as conn:
        first = conn.execute(sa.select(sa.func.min(record_changes.c.id))).scalar_one()
        # What the database sends: the contact's creation alone, and how far the cursor goes.
        window = read_heard(conn, first - 1, 10, span=1000, any_kind={"contact"}, deleted=())
        assert window is not None and window.passed == 501 and not window.more
        assert [(r.record_type, r.kind) for r in window.wanted] == [("contact", "created")]
        # Only deletions of companies asked for: none there.
        none = read_heard(conn, first - 1, 10, span=1000, any_kind=(), deleted={"company"})
        assert none is not None and none.wanted == [] and none.passed == 501
        assert none.settled_to == first + 500 and not none.more
        # Cut at `span` changes: the cursor may pass those, and more are waiting.
        cut = read_heard(conn, first - 1, 10, span=100, any_kind=(), deleted={"company"})
        assert cut is not None and (cut.passed, cut.settled_to, cut.more) == (100, first + 99, True)
        heard_late = read_heard(conn, first - 1, 10, span=100, any_kind={"contact"}, deleted=())
        assert heard_late is not None and heard_late.wanted == [] and heard_late.more

    # Small transactions (10 heard changes at most each): all 501 are consumed.
    assert triggers.ingest_changes(ctx, limit=10) == 501
    with ctx.engine.connect() as conn:
        entered = conn.execute(sa.select(enrollments.c.record_id)).scalars().all()
    assert entered == [rid]
    assert triggers.ingest_changes(ctx, limit=10) == 0  # caught up


def test_a_change_still_in_flight_is_not_passed_over_on_postgresql(
    ctx: Context, admin: Actor
) -> None:
    """On PostgreSQL an id becomes visible when its transaction commits: the filter must not
    move the cursor past a change that may still commit, even one nobody hears."""
    if ctx.engine.dialect.name != "postgresql":
        return  # SQLite: one writer, ids in commit order
    flows.create_flow(ctx, admin, WELCOME)
    flows.change_status(ctx, admin, "welcome", LifecycleAction.START)
    row = {"record_id": 9000, "record_type": "company", "kind": "updated", "at": ctx.now()}
    with ctx.engine.connect() as slow:
        slow_tx = slow.begin()
        slow.execute(record_changes.insert(), row)  # its id is drawn, not yet visible
        rid = records.create_record(ctx, admin, "contact", {"last_name": "Pop"}).id
        assert triggers.ingest_changes(ctx) == 0  # held before the change in flight
        slow_tx.commit()
    assert triggers.ingest_changes(ctx) == 2
    with ctx.engine.connect() as conn:
        assert conn.execute(sa.select(enrollments.c.record_id)).scalars().all() == [rid]
