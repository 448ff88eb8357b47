"""The webhook-ids of signed inbound webhook calls that were taken: a call is taken once.

A signed call is taken once per `webhook-id` (per hook key and sender: the secrets that signed
it), as the Standard Webhooks spec asks of a receiver. A sender retries a call whose answer it
did not get (a timeout, a lost connection) with the same id and a fresh timestamp and signature,
and a captured call can be replayed as it is for the 5 minutes of its signature; neither must
start the records a second time. So the call's id is written (`webhook_receipts`, with a hash of
the body and the answer) in the transaction of its starts (`take`, then `keep_answer`), and a
later call with the same id and body is answered 200 with the answer the first call got, marked
`"replayed": true` and a message saying it was already received: nothing is started again
(`answer_taken`). 200 rather than 409 because a sender takes any 2xx as delivered and anything
else as a failure to retry: the retry exists because the first answer was lost, and a 409 would
turn one lost answer into a run of failed retries and, with many senders, an endpoint disabled
for failing. The same id with another body is a sender's bug (ids reused across calls), which
taking silently would hide: that is a 409 saying so. A call that failed (a bad body, no such
record, an error) wrote no id, so it can be retried with its id once the cause is fixed. The
check comes after the signature's (see `webhooks_in.receive_hook`), so only a sender holding the
secret learns whether an id was taken. Ids are kept RECEIPT_RETENTION (3 days: longer than
senders' retry schedules, e.g. about a day for Svix, not only the 5 minutes in which a captured
call could be replayed as it is); accepted signed calls delete the older ones, at most once
every 10 minutes per process, in a transaction of their own (`prune`).
"""

from __future__ import annotations

import hashlib
import logging
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from crmflow.errors import ConflictError, InvalidInputError, Problem
from crmflow.services.context import Context
from crmflow.store import webhook_receipts as store
from crmflow.store.database import Connection, DatabaseError, Engine

__all__ = [
    "RECEIPT_RETENTION",
    "HookReplay",
    "Receipt",
    "answer_taken",
    "check_webhook_id",
    "keep_answer",
    "prune",
    "take",
]

# How long the id of a signed call that was taken is remembered (see the module's text).
RECEIPT_RETENTION = timedelta(days=3)
_PRUNE_EVERY = timedelta(minutes=10)
_WEBHOOK_ID_MAX = 255  # webhook_receipts.webhook_id

log = logging.getLogger("crmflow.webhooks")


@dataclass(frozen=True)
class HookReplay:
    """The answer to a signed call whose webhook-id was already taken: the first call's."""

    webhook_id: str
    received_at: datetime
    answer: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.answer,
            "replayed": True,
            "message": f"already received (webhook-id {self.webhook_id}, taken at "
            f"{self.received_at.isoformat()}): nothing was started again; this is the answer "
            "the first call got",
        }


@dataclass(frozen=True)
class Receipt:
    """What identifies a signed call: its hook key, its sender and its webhook-id; and its
    body's hash. The sender is a hash of the secrets that signed the call: flows with their own
    secrets may share a hook key, and their senders choose their ids without knowing of each
    other (`evt_1` from two of them are two calls)."""

    key: str
    sender: str
    webhook_id: str
    body_sha256: str

    @classmethod
    def of(cls, key: str, secrets: Iterable[str], webhook_id: str, body: bytes) -> Receipt:
        sender = hashlib.sha256("\n".join(sorted(set(secrets))).encode()).hexdigest()
        return cls(key, sender, webhook_id, hashlib.sha256(body).hexdigest())


def check_webhook_id(webhook_id: str) -> None:
    """InvalidInputError for an id too long to keep."""
    if len(webhook_id) > _WEBHOOK_ID_MAX:
        raise InvalidInputError(
            "the call",
            [
                Problem(
                    "webhook-id",
                    f"is {len(webhook_id)} characters long, at most {_WEBHOOK_ID_MAX}",
                    "a webhook-id is a short id unique to the call, e.g. msg_2mAuWq0BzY",
                )
            ],
        )


def answer_taken(conn: Connection, receipt: Receipt) -> HookReplay | None:
    """The answer a call with this id got, if one was taken; ConflictError if it had another
    body (a sender that reuses ids: taking the call silently would lose it)."""
    row = store.find_receipt(conn, receipt.key, receipt.sender, receipt.webhook_id)
    if row is None:
        return None
    if row.body_sha256 != receipt.body_sha256:
        raise ConflictError(
            f"webhook-id {receipt.webhook_id} was already taken on hook {receipt.key!r} (at "
            f"{row.received_at.isoformat()}) for a different body: give each call its own "
            "webhook-id (a retry of a call keeps its id and its body)"
        )
    return HookReplay(receipt.webhook_id, row.received_at, dict(row.answer or {}))


def take(conn: Connection, receipt: Receipt, *, now: datetime) -> bool:
    """Write the call's id in this transaction; False when a call with that id was taken. A
    concurrent call holding the id makes this wait for its end: taken (False) or rolled back
    (the id is this call's)."""
    return store.insert_receipt(
        conn,
        receipt.key,
        receipt.sender,
        receipt.webhook_id,
        body_sha256=receipt.body_sha256,
        now=now,
    )


def keep_answer(conn: Connection, receipt: Receipt, answer: dict[str, Any]) -> None:
    """The answer the call taken in this transaction got, for its replays."""
    store.set_answer(conn, receipt.key, receipt.sender, receipt.webhook_id, answer)


# When each database's receipts were last pruned by this process.
_PRUNED: weakref.WeakKeyDictionary[Engine, datetime] = weakref.WeakKeyDictionary()


def prune(ctx: Context, *, now: datetime) -> None:
    """Forget the ids taken more than RECEIPT_RETENTION (or retention_webhook_receipts_days,
    when longer) ago: done by accepted signed calls (and by the worker's pruning), at
    most once every _PRUNE_EVERY per process and database, after their own transaction (a
    delete that several processes may run at once never holds up a call's starts). A failure is
    logged, not answered: the call itself was taken."""
    last = _PRUNED.get(ctx.engine)
    if last is not None and last <= now < last + _PRUNE_EVERY:
        return
    _PRUNED[ctx.engine] = now
    try:
        with ctx.engine.begin() as conn:
            kept = timedelta(days=ctx.settings.retention_webhook_receipts_days)
            store.delete_received_before(conn, now - max(kept, RECEIPT_RETENTION))
    except DatabaseError:
        log.warning("could not prune old webhook receipts", exc_info=True)
