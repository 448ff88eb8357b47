"""The outbox (`outbox`): the external effects (email, SMS, webhooks) a step run decided, each
to deliver once; the dispatcher (`crmflow.delivery`) sends them and writes each outcome on
the row (the functions at the end of this module).

A message's idempotency key is made of (enrollment, step run, action), so a step run retried
after a crash writes the same key, and the row already there is kept. Read by
`services.run_views`; pending messages of a cancelled run are cancelled when the batch runner
writes its end (`cancel_pending_of_cancelled`).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from crmflow.engine.runtime import EnrollmentStatus
from crmflow.store.flow_access import FlowFilter
from crmflow.store.idlists import IDS, among, among_bound, id_list
from crmflow.store.schema import enrollments, flows, outbox

__all__ = [
    "ACCEPTED_KEY",
    "OUTBOX_CHANNEL",
    "CaughtMail",
    "ClaimedMessage",
    "SentOutcome",
    "cancel_pending_of_cancelled",
    "caught_mail",
    "caught_mails",
    "claim_due",
    "claim_due_in",
    "count_emails_of_flow",
    "delete_of_runs",
    "earliest_due",
    "flow_messages",
    "insert_ignoring_duplicates",
    "mark_caught",
    "mark_delivered",
    "mark_failed",
    "mark_partly_sent",
    "mark_retrying",
    "mark_sent",
    "mark_suppressed",
    "messages_of",
    "next_due_at",
    "next_due_columns",
    "next_due_query",
    "notify_outbox",
    "put_back",
]

# NOTIFY'd by each transaction that writes outbox rows (PostgreSQL): idle dispatchers LISTEN
# (`store.outbox_signals`). Not the workers' channel: they are not woken by their own messages.
OUTBOX_CHANNEL = "crmflow_outbox"


def insert_ignoring_duplicates(
    conn: sa.Connection, rows: Sequence[dict[str, Any]], *, key: str = "idempotency_key"
) -> None:
    """Outbox rows; a row whose idempotency key is already there is left out (a retried step
    run produces the same keys, and must not send twice). Idle dispatchers are told at the
    commit (`notify_outbox`)."""
    if rows:
        insert = (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(outbox)
        conn.execute(insert.on_conflict_do_nothing(index_elements=[key]), rows)
        notify_outbox(conn)


def notify_outbox(conn: sa.Connection) -> None:
    """This transaction writes outbox rows: the idle dispatchers are woken once it commits (on
    PostgreSQL a NOTIFY, one per transaction however many are sent; on SQLite they watch the
    commits)."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text(f"NOTIFY {OUTBOX_CHANNEL}"))


def cancel_pending_of_cancelled(conn: sa.Connection, enrollment_ids: Collection[int]) -> None:
    """The messages not sent yet of those of `enrollment_ids` that ended cancelled (their
    states are saved) are cancelled: nothing is sent for a cancelled run. Those that finished
    or left keep theirs."""
    if not enrollment_ids:
        return
    dialect = conn.dialect.name
    conn.execute(_cancel_pending(dialect), {IDS: id_list(enrollment_ids, dialect)})


@cache
def _cancel_pending(dialect: str) -> sa.Update:
    """`cancel_pending_of_cancelled`'s statement, of the enrollments `:ids` (built once per
    dialect)."""
    cancelled = sa.select(enrollments.c.id).where(
        among_bound(enrollments.c.id, dialect),
        enrollments.c.status == EnrollmentStatus.CANCELLED.value,
    )
    return (
        outbox.update()
        .where(outbox.c.enrollment_id.in_(cancelled), outbox.c.status == "pending")
        .values(status="cancelled")
    )


def messages_of(conn: sa.Connection, enrollment_ids: Sequence[int]) -> list[sa.Row[Any]]:
    """The outbox messages of these enrollments: `.idempotency_key`, `.kind`, `.status`,
    `.not_before`, `.attempts`, and how delivery went: `.delivered_at`, `.next_attempt_at`,
    `.last_error`, `.server_reply`. The message of a run in test mode that went (delivered, or
    kept by the mail catcher) has the status `test`."""
    o = outbox.c
    went = sa.and_(o.test, o.status.in_(("delivered", "caught")))
    query = sa.select(
        o.idempotency_key,
        o.kind,
        sa.case((went, "test"), else_=o.status).label("status"),
        o.not_before,
        o.attempts,
        o.delivered_at,
        o.next_attempt_at,
        o.last_error,
        o.server_reply,
    ).where(o.enrollment_id.in_(enrollment_ids))
    return list(conn.execute(query))


def count_emails_of_flow(conn: sa.Connection, flow_id: int) -> int:
    """The email messages a flow's enrollments wrote to the outbox."""
    in_flow = sa.select(enrollments.c.id).where(enrollments.c.flow_id == flow_id)
    query = (
        sa.select(sa.func.count())
        .select_from(outbox)
        .where(outbox.c.enrollment_id.in_(in_flow), outbox.c.kind == "email")
    )
    return int(conn.execute(query).scalar_one())


def flow_messages(conn: sa.Connection, record_id: int | None = None) -> list[sa.Row[Any]]:
    """Every outbox message (of one record's runs, or of all), oldest first, with the record and
    the key of the flow that wrote it (`record_id`, `flow_key`): what `crmflow.testing` shows."""
    query = (
        sa.select(outbox, enrollments.c.record_id, flows.c.key.label("flow_key"))
        .join(enrollments, enrollments.c.id == outbox.c.enrollment_id)
        .join(flows, flows.c.id == enrollments.c.flow_id)
        .order_by(outbox.c.id)
    )
    if record_id is not None:
        query = query.where(enrollments.c.record_id == record_id)
    return list(conn.execute(query))


# --- Delivery (crmflow.delivery): claims, outcomes, the mail catcher's messages ---------------


@dataclass(frozen=True)
class ClaimedMessage:
    """An outbox message leased to a dispatcher: what it needs to send it. `attempts` counts
    this one."""

    id: int
    idempotency_key: str
    kind: str
    payload: dict[str, Any]
    attempts: int
    enrollment_id: int | None = None  # the run that wrote it (its archive line names it)
    priority: int = 0  # 1: transactional, sent before the bulk ones
    # The run's keys, as the worker's log lines carry them (crmflow.logs.in_run): the flow's
    # key and version, the record, the step that wrote the message. None: its run is gone.
    flow_key: str | None = None
    flow_version: int | None = None
    record_id: int | None = None
    step_key: str | None = None


@dataclass(frozen=True)
class CaughtMail:
    """A message the mail catcher kept instead of sending (no CRMFLOW_SMTP_URL)."""

    id: int
    enrollment_id: int
    record_id: int | None
    flow_key: str | None
    subject: str
    to: tuple[str, ...]
    caught_at: datetime | None
    rendered: str

    def summary(self) -> dict[str, Any]:
        """What a list shows of it."""
        return {
            "id": self.id,
            "record_id": self.record_id,
            "flow": self.flow_key,
            "to": list(self.to),
            "subject": self.subject,
            "caught_at": self.caught_at.isoformat() if self.caught_at else None,
        }

    def as_dict(self) -> dict[str, Any]:
        """All of it: the summary, the run, and the message as it would have gone."""
        return {**self.summary(), "enrollment_id": self.enrollment_id, "message": self.rendered}


def _due(now: datetime, kinds: Collection[str]) -> sa.ColumnElement[bool]:
    """Messages of `kinds` a dispatcher may take at `now`: pending ones past `not_before`,
    retries whose time has come, and those leased to a dispatcher whose lease ran out (it
    died while sending)."""
    o = outbox.c
    return sa.and_(
        o.kind.in_(kinds),
        sa.or_(
            sa.and_(o.status == "pending", o.not_before <= now),
            sa.and_(o.status == "retrying", o.next_attempt_at <= now),
            sa.and_(o.status == "sending", o.lease_until <= now),
        ),
    )


def claim_due(
    engine: sa.Engine,
    *,
    now: datetime,
    owner: str,
    limit: int,
    lease: timedelta,
    kinds: Collection[str],
) -> list[ClaimedMessage]:
    """`claim_due_in`, in a transaction of its own."""
    with engine.begin() as conn:
        return claim_due_in(conn, now=now, owner=owner, limit=limit, lease=lease, kinds=kinds)


def claim_due_in(
    conn: sa.Connection,
    *,
    now: datetime,
    owner: str,
    limit: int,
    lease: timedelta,
    kinds: Collection[str],
) -> list[ClaimedMessage]:
    """Lease up to `limit` due messages of `kinds` to `owner` (status `sending`, one more
    attempt), those of the highest `priority` first, then the oldest first, on the caller's
    transaction (the lease holds once it commits).

    On PostgreSQL the rows are locked with SKIP LOCKED, so concurrent dispatchers take
    different rows; on SQLite the transaction holds the single writer's lock. A dispatcher that
    dies leaves its rows `sending` until `lease_until`, when another one takes them over."""
    o = outbox.c
    # The priority lane first (few rows, found by their index), then the bulk ones: two
    # queries, each in an index's order, so a campaign's thousands are never sorted.
    ids: list[int] = []
    for lane in (o.priority > 0, o.priority <= 0):
        order = (o.priority.desc(), o.id)
        query = sa.select(o.id).where(_due(now, kinds), lane).order_by(*order)
        query = query.limit(limit - len(ids))
        if conn.dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        ids += conn.execute(query).scalars()
        if len(ids) >= limit:
            break
    if not ids:
        return []
    rows = conn.execute(
        outbox.update()
        .where(among(o.id, ids, conn))
        .values(
            status="sending",
            lease_owner=owner,
            lease_until=now + lease,
            attempts=o.attempts + 1,
        )
        .returning(
            o.id,
            o.idempotency_key,
            o.kind,
            o.payload,
            o.attempts,
            o.enrollment_id,
            o.priority,
            o.step_key,
        )
    )
    found = list(rows)
    keys = _run_keys(conn, {r.enrollment_id for r in found})
    gone: tuple[str | None, int | None, int | None] = (None, None, None)  # its run pruned
    claimed = []
    for r in found:
        flow_key, flow_version, record_id = keys.get(r.enrollment_id, gone)
        claimed.append(
            ClaimedMessage(
                r.id,
                r.idempotency_key,
                r.kind,
                r.payload,
                r.attempts,
                r.enrollment_id,
                r.priority,
                flow_key=flow_key,
                flow_version=flow_version,
                record_id=record_id,
                step_key=r.step_key,
            )
        )
    return sorted(claimed, key=lambda m: (-m.priority, m.id))


def _run_keys(
    conn: sa.Connection, enrollment_ids: Collection[int]
) -> dict[int, tuple[str, int, int]]:
    """The flow key, flow version and record of each of these runs (for the dispatcher's log
    lines): one query by their ids, after the claim (a join in the claim's query would be made
    for every due row before the sort)."""
    if not enrollment_ids:
        return {}
    e = enrollments.c
    query = (
        sa.select(e.id, flows.c.key.label("flow_key"), e.flow_version, e.record_id)
        .join(flows, flows.c.id == e.flow_id)
        .where(among(e.id, list(enrollment_ids), conn))
    )
    return {r.id: (r.flow_key, r.flow_version, r.record_id) for r in conn.execute(query)}


def _leased(conn: sa.Connection, message_id: int, owner: str, values: dict[str, Any]) -> bool:
    """Write `values` on the message if it is still `owner`'s (not taken over after its lease
    ran out); whether it was."""
    o = outbox.c
    result = conn.execute(
        outbox.update()
        .where(o.id == message_id, o.status == "sending", o.lease_owner == owner)
        .values(lease_owner=None, lease_until=None, **values)
    )
    return result.rowcount == 1


# A message that went keeps no trace of the retries before (their errors are in the log).
_NO_RETRY: dict[str, Any] = {"next_attempt_at": None, "last_error": None}


def mark_delivered(
    conn: sa.Connection, message_id: int, *, owner: str, at: datetime, reply: str
) -> bool:
    """The server accepted the message: `delivered`, with its reply."""
    values = {"status": "delivered", "delivered_at": at, "server_reply": reply, **_NO_RETRY}
    return _leased(conn, message_id, owner, values)


def mark_caught(
    conn: sa.Connection, message_id: int, *, owner: str, at: datetime, rendered: str
) -> bool:
    """The mail catcher kept the message (`caught`, the message as it would have gone)."""
    values = {"status": "caught", "delivered_at": at, "rendered": rendered, **_NO_RETRY}
    return _leased(conn, message_id, owner, values)


@dataclass(frozen=True)
class SentOutcome:
    """A message the server accepted (`reply`) or the catcher kept (`rendered`), at `at`."""

    id: int
    at: datetime
    reply: str | None = None
    rendered: str | None = None


def mark_sent(conn: sa.Connection, outcomes: Sequence[SentOutcome], *, owner: str) -> set[int]:
    """Messages delivered or caught, written together (as `mark_delivered` or `mark_caught`
    each, by one batched UPDATE): the ids of those still `owner`'s, the only ones written. On
    PostgreSQL those rows are locked until the commit; on SQLite the transaction holds the
    writer's lock."""
    if len(outcomes) <= 1:  # one statement, as when each outcome is committed on its own
        return {out.id for out in outcomes if _leased(conn, out.id, owner, _sent_values(out))}
    if conn.dialect.name == "postgresql":
        return _mark_sent_pg(conn, outcomes, owner)
    o = outbox.c
    mine = sa.select(o.id).where(
        among(o.id, [out.id for out in outcomes], conn),
        o.status == "sending",
        o.lease_owner == owner,
    )
    if conn.dialect.name == "postgresql":
        mine = mine.with_for_update()
    kept = {int(i) for i in conn.execute(mine).scalars()}
    update = (
        outbox.update()
        .where(o.id == sa.bindparam("b_id"))
        .values(
            status=sa.bindparam("b_status"),
            delivered_at=sa.bindparam("b_at"),
            server_reply=sa.bindparam("b_reply"),
            rendered=sa.bindparam("b_rendered"),
            lease_owner=None,
            lease_until=None,
            **_NO_RETRY,
        )
    )
    rows = [
        {
            "b_id": out.id,
            "b_status": "caught" if out.rendered is not None else "delivered",
            "b_at": out.at,
            "b_reply": out.reply if out.rendered is None else None,
            "b_rendered": out.rendered,
        }
        for out in outcomes
        if out.id in kept
    ]
    if rows:
        conn.execute(update, rows)
    return kept


# PostgreSQL: the outcomes as arrays, unnested, in one statement (one round trip, where a
# SELECT ... FOR UPDATE then an UPDATE took two); a row another dispatcher took over meanwhile
# is left as it is (its lease checked again once its lock is had, as READ COMMITTED does).
_MARK_SENT_PG = sa.text(
    "UPDATE outbox SET status = v.status, delivered_at = v.at, server_reply = v.reply, "
    "rendered = v.rendered, lease_owner = NULL, lease_until = NULL, next_attempt_at = NULL, "
    "last_error = NULL "
    "FROM unnest(:ids, :statuses, :ats, :replies, :rendered) AS v(id, status, at, reply, rendered) "
    "WHERE outbox.id = v.id AND outbox.status = 'sending' AND outbox.lease_owner = :owner "
    "RETURNING outbox.id"
).bindparams(
    sa.bindparam("ids", type_=postgresql.ARRAY(sa.BigInteger)),
    sa.bindparam("statuses", type_=postgresql.ARRAY(sa.Text)),
    sa.bindparam("ats", type_=postgresql.ARRAY(sa.DateTime(timezone=True))),
    sa.bindparam("replies", type_=postgresql.ARRAY(sa.Text)),
    sa.bindparam("rendered", type_=postgresql.ARRAY(sa.Text)),
    sa.bindparam("owner", type_=sa.Text),
)


def _mark_sent_pg(conn: sa.Connection, outcomes: Sequence[SentOutcome], owner: str) -> set[int]:
    params = {
        "ids": [out.id for out in outcomes],
        "statuses": ["caught" if out.rendered is not None else "delivered" for out in outcomes],
        "ats": [out.at for out in outcomes],
        "replies": [out.reply if out.rendered is None else None for out in outcomes],
        "rendered": [out.rendered for out in outcomes],
        "owner": owner,
    }
    return {int(i) for i in conn.execute(_MARK_SENT_PG, params).scalars()}


def _sent_values(out: SentOutcome) -> dict[str, Any]:
    if out.rendered is not None:
        return {"status": "caught", "delivered_at": out.at, "rendered": out.rendered, **_NO_RETRY}
    return {"status": "delivered", "delivered_at": out.at, "server_reply": out.reply, **_NO_RETRY}


def mark_retrying(
    conn: sa.Connection, message_id: int, *, owner: str, next_attempt_at: datetime, error: str
) -> bool:
    """The attempt failed for a reason that may pass: tried again at `next_attempt_at`."""
    values = {"status": "retrying", "next_attempt_at": next_attempt_at, "last_error": error}
    return _leased(conn, message_id, owner, values)


# The payload key of an email's recipients a server already accepted (`mark_partly_sent`): a
# later attempt leaves them out of its envelope. Not part of the engine's EmailPayload.
ACCEPTED_KEY = "accepted_recipients"


def mark_partly_sent(
    conn: sa.Connection,
    message: ClaimedMessage,
    *,
    owner: str,
    accepted: Sequence[str],
    next_attempt_at: datetime,
    error: str,
    reply: str,
) -> bool:
    """An email the server took for some recipients and refused for a while (4xx at RCPT TO)
    for others: retried at `next_attempt_at` for those others alone, the recipients accepted
    so far kept on the payload (`ACCEPTED_KEY`), the server's reply kept."""
    done = [*message.payload.get(ACCEPTED_KEY, ()), *accepted]
    values = {
        "status": "retrying",
        "next_attempt_at": next_attempt_at,
        "last_error": error,
        "server_reply": reply,
        "payload": {**message.payload, ACCEPTED_KEY: sorted(set(done))},
    }
    return _leased(conn, message.id, owner, values)


def put_back(conn: sa.Connection, due: Sequence[tuple[int, datetime]], *, owner: str) -> int:
    """Messages claimed but not sent (over a rate limit): back to what they were, due at the
    time given for each (a pending message's `not_before`, a retry's `next_attempt_at`), the
    attempt not counted; those still `owner`'s. How many were put back."""
    if not due:
        return 0
    o = outbox.c
    at = sa.bindparam("b_at", type_=o.not_before.type)
    was_retry = o.next_attempt_at.is_not(None)
    update = (
        outbox.update()
        .where(o.id == sa.bindparam("b_id"), o.status == "sending", o.lease_owner == owner)
        .values(
            status=sa.case((was_retry, "retrying"), else_="pending"),
            not_before=sa.case((was_retry, o.not_before), else_=at),
            next_attempt_at=sa.case((was_retry, at), else_=None),
            attempts=o.attempts - 1,
            lease_owner=None,
            lease_until=None,
        )
        .execution_options(preserve_rowcount=True)
    )
    result = conn.execute(update, [{"b_id": i, "b_at": when} for i, when in due])
    return int(result.rowcount)


def mark_failed(conn: sa.Connection, message_id: int, *, owner: str, error: str) -> bool:
    """The message will not go: a permanent refusal, or the last attempt failed."""
    values = {"status": "failed", "next_attempt_at": None, "last_error": error}
    return _leased(conn, message_id, owner, values)


def mark_suppressed(conn: sa.Connection, message_id: int, *, owner: str, reason: str) -> bool:
    """Not sent: a recipient is on the suppression list (`reason` says who and why)."""
    values = {"status": "suppressed", "next_attempt_at": None, "last_error": reason}
    return _leased(conn, message_id, owner, values)


def next_due_query(kinds: Collection[str]) -> sa.Select[Any]:
    """When the next message of `kinds` becomes due (pending, retrying, or a lease running
    out), in one statement: three scalar subqueries, each on the index of (status, its time).
    Read it with `earliest_due`."""
    return sa.select(*next_due_columns(kinds))


def next_due_columns(kinds: Collection[str]) -> list[sa.Label[Any]]:
    """`next_due_query`'s columns (`pending`, `retrying`, `leased`): what an idle dispatcher's
    look reads, with its heartbeat when one is due (`store.outbox_signals`)."""
    o = outbox.c
    in_kinds = o.kind.in_(kinds)
    times = {
        "pending": sa.select(sa.func.min(o.not_before)).where(in_kinds, o.status == "pending"),
        "retrying": sa.select(sa.func.min(o.next_attempt_at)).where(
            in_kinds, o.status == "retrying"
        ),
        "leased": sa.select(sa.func.min(o.lease_until)).where(in_kinds, o.status == "sending"),
    }
    return [query.scalar_subquery().label(name) for name, query in times.items()]


def earliest_due(row: Any) -> datetime | None:
    """The earliest of the times a `next_due_query` row holds; None when none waits."""
    found: list[datetime] = [t for t in (row.pending, row.retrying, row.leased) if t is not None]
    return min(found) if found else None


def next_due_at(conn: sa.Connection, kinds: Collection[str]) -> datetime | None:
    """When the next message of `kinds` becomes due (pending, retrying, or a lease running
    out); None when none waits. One statement."""
    return earliest_due(conn.execute(next_due_query(kinds)).one())


def _caught_query() -> sa.Select[Any]:
    return (
        sa.select(
            outbox.c.id,
            outbox.c.enrollment_id,
            enrollments.c.record_id,
            flows.c.key.label("flow_key"),
            outbox.c.payload,
            outbox.c.delivered_at,
            outbox.c.rendered,
        )
        .outerjoin(enrollments, enrollments.c.id == outbox.c.enrollment_id)
        .outerjoin(flows, flows.c.id == enrollments.c.flow_id)
        .where(outbox.c.status == "caught", outbox.c.kind == "email")  # caught SMS: not mail
    )


def _caught(row: sa.Row[Any]) -> CaughtMail:
    payload = row.payload or {}
    return CaughtMail(
        id=row.id,
        enrollment_id=row.enrollment_id,
        record_id=row.record_id,
        flow_key=row.flow_key,
        subject=str(payload.get("subject", "")),
        to=tuple(payload.get("to", ())),
        caught_at=row.delivered_at,
        rendered=row.rendered or "",
    )


def caught_mails(conn: sa.Connection, *, visible: FlowFilter, limit: int) -> list[CaughtMail]:
    """The newest `limit` messages the mail catcher kept of the runs of the flows `visible`
    selects, newest first."""
    query = _caught_query().where(visible).order_by(outbox.c.id.desc()).limit(limit)
    return [_caught(r) for r in conn.execute(query)]


def caught_mail(conn: sa.Connection, message_id: int, *, visible: FlowFilter) -> CaughtMail | None:
    """One message the mail catcher kept, if it is of a run of a flow `visible` selects."""
    row = conn.execute(_caught_query().where(outbox.c.id == message_id, visible)).first()
    return _caught(row) if row is not None else None


def delete_of_runs(
    conn: sa.Connection, enrollment_ids: Sequence[int], statuses: Collection[str]
) -> None:
    """Delete the messages of the runs `enrollment_ids` whose status is one of `statuses`
    (pruning, services.retention)."""
    if enrollment_ids:
        o = outbox.c
        conn.execute(
            outbox.delete().where(o.enrollment_id.in_(enrollment_ids), o.status.in_(statuses))
        )
