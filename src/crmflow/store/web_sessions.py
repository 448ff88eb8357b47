"""The web application's sessions (`web_sessions`): the only module that reads or writes it.

A session is found by the SHA-256 of its cookie's token (the caller hashes); the user it belongs
to comes with it, active or not, so that the service decides who may still use it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from crmflow.store.schema import users, web_sessions

__all__ = [
    "SessionRow",
    "delete_session",
    "delete_sessions_of_user",
    "find_session",
    "insert_session",
    "touch_session",
]


@dataclass(frozen=True)
class SessionRow:
    """A stored session with its user's name, role and whether the user is active."""

    id: int
    user_id: int
    username: str
    role: str
    active: bool
    created_at: datetime
    last_seen_at: datetime


def insert_session(conn: sa.Connection, user_id: int, token_hash: str, *, at: datetime) -> int:
    result = conn.execute(
        web_sessions.insert().values(
            user_id=user_id, token_hash=token_hash, created_at=at, last_seen_at=at
        )
    )
    key = result.inserted_primary_key
    assert key is not None
    return int(key[0])


def find_session(conn: sa.Connection, token_hash: str) -> SessionRow | None:
    s = web_sessions.c
    row = conn.execute(
        sa.select(
            s.id,
            s.user_id,
            users.c.username,
            users.c.role,
            users.c.active,
            s.created_at,
            s.last_seen_at,
        )
        .join(users, users.c.id == s.user_id)
        .where(s.token_hash == token_hash)
    ).first()
    return SessionRow(*row) if row is not None else None


def touch_session(conn: sa.Connection, session_id: int, *, at: datetime) -> None:
    """Record that the session was used at `at` (its idle time starts again)."""
    conn.execute(
        web_sessions.update().where(web_sessions.c.id == session_id).values(last_seen_at=at)
    )


def delete_session(conn: sa.Connection, session_id: int) -> None:
    conn.execute(web_sessions.delete().where(web_sessions.c.id == session_id))


def delete_sessions_of_user(conn: sa.Connection, user_id: int) -> int:
    """End every session of a user (deactivated); how many there were."""
    result = conn.execute(web_sessions.delete().where(web_sessions.c.user_id == user_id))
    return result.rowcount
