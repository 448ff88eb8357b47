"""The approval email links that were used (`approval_link_uses`): the only module that writes
it. A link's token is kept as its SHA-256, with what it decided and when."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from crmflow.store.schema import approval_link_uses, enrollments, flows

__all__ = ["LinkUse", "LinkedRun", "find_link_use", "linked_run", "token_hash", "use_link"]


@dataclass(frozen=True)
class LinkedRun:
    """The run a link names, as its page needs it: its flow, record and state (JSON)."""

    flow_key: str
    record_id: int
    state: dict[str, Any] | None


def linked_run(conn: sa.Connection, enrollment_id: int) -> LinkedRun | None:
    """The run `enrollment_id` with its flow's key, or None when it is gone."""
    e = enrollments.c
    row = conn.execute(
        sa.select(flows.c.key, e.record_id, e.state)
        .join(flows, flows.c.id == e.flow_id)
        .where(e.id == enrollment_id)
    ).first()
    return LinkedRun(row.key, row.record_id, row.state) if row is not None else None


@dataclass(frozen=True)
class LinkUse:
    """A link that decided: its run, button, user and when."""

    enrollment_id: int
    step_run: int
    button: str
    username: str
    used_at: datetime


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def find_link_use(conn: sa.Connection, token: str) -> LinkUse | None:
    """When and how the link of `token` was used, or None when it was not."""
    t = approval_link_uses.c
    row = conn.execute(
        sa.select(t.enrollment_id, t.step_run, t.button, t.username, t.used_at).where(
            t.token_hash == token_hash(token)
        )
    ).first()
    return LinkUse(*row) if row is not None else None


def _insert(conn: sa.Connection) -> Any:
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    return dialect.insert(approval_link_uses)


def use_link(conn: sa.Connection, token: str, use: LinkUse) -> bool:
    """Mark the link of `token` used; False when it was used already (by another request at
    the same moment: the primary key decides)."""
    values = {
        "token_hash": token_hash(token),
        "enrollment_id": use.enrollment_id,
        "step_run": use.step_run,
        "button": use.button,
        "username": use.username,
        "used_at": use.used_at,
    }
    insert = _insert(conn).values(values).on_conflict_do_nothing()
    return conn.execute(insert.returning(approval_link_uses.c.token_hash)).first() is not None
