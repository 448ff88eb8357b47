"""Users and their API tokens: the only module that reads or writes `users` and `api_tokens`
(the groups users belong to are in `store.groups`).

Services decide who may do what and hash passwords and tokens; here are the statements, so that
a user row is read the same way by sign-in, token checks and the admin pages.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from crmflow.store.schema import api_tokens, users

__all__ = [
    "TokenOwner",
    "TokenRow",
    "UserRow",
    "active_users_named",
    "all_users",
    "api_token_owner",
    "find_token_id_by_hash",
    "find_user_by_name",
    "get_user_by_id",
    "insert_api_token",
    "insert_user",
    "manager_of",
    "managers_above",
    "revoke_api_token",
    "set_manager",
    "team_of",
    "token_user_id",
    "tokens_after",
    "update_user",
    "user_ids_by_name",
    "usernames_by_id",
    "users_after",
    "users_named",
]


@dataclass(frozen=True)
class UserRow:
    """A row of `users`, as stored (the role as its text, the password as its hash)."""

    id: int
    username: str
    display_name: str
    email: str | None
    role: str
    password_hash: str | None
    active: bool
    manager_id: int | None = None


@dataclass(frozen=True)
class TokenOwner:
    """The user an unrevoked API token belongs to."""

    user_id: int
    username: str
    role: str
    active: bool


@dataclass(frozen=True)
class TokenRow:
    """An API token as listed (never its hash): whose, its name, when made and last used."""

    id: int
    username: str
    name: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


def _user(row: sa.Row[Any]) -> UserRow:
    return UserRow(
        id=row.id,
        username=row.username,
        display_name=row.display_name,
        email=row.email,
        role=row.role,
        password_hash=row.password_hash,
        active=row.active,
        manager_id=row.manager_id,
    )


def find_user_by_name(conn: sa.Connection, username: str) -> UserRow | None:
    row = conn.execute(sa.select(users).where(users.c.username == username)).first()
    return None if row is None else _user(row)


def users_named(conn: sa.Connection, names: Collection[str]) -> dict[str, UserRow]:
    """The users among `names`, by username, in one read (a name nobody has is left out)."""
    wanted = sorted(set(names))
    if not wanted:
        return {}
    rows = conn.execute(sa.select(users).where(users.c.username.in_(wanted)))
    return {row.username: _user(row) for row in rows}


def get_user_by_id(conn: sa.Connection, user_id: int) -> UserRow:
    """The user `user_id`, which the caller knows exists (it just wrote it)."""
    return _user(conn.execute(sa.select(users).where(users.c.id == user_id)).one())


def all_users(conn: sa.Connection) -> list[UserRow]:
    """Every user, by username."""
    return [_user(r) for r in conn.execute(sa.select(users).order_by(users.c.username))]


def users_after(conn: sa.Connection, after_id: int | None, limit: int) -> list[UserRow]:
    """At most `limit` users by id, after the id `after_id` (keyset paging)."""
    query = sa.select(users).order_by(users.c.id).limit(limit)
    if after_id is not None:
        query = query.where(users.c.id > after_id)
    return [_user(r) for r in conn.execute(query)]


def user_ids_by_name(conn: sa.Connection, names: set[str]) -> dict[str, int]:
    """The ids of the users named in `names` that exist (active or not)."""
    if not names:
        return {}
    rows = conn.execute(sa.select(users.c.username, users.c.id).where(users.c.username.in_(names)))
    return {r.username: r.id for r in rows}


def usernames_by_id(conn: sa.Connection, user_ids: Collection[int]) -> dict[int, str]:
    """The usernames of the users among `user_ids` that exist, by id (one query; none for no
    ids)."""
    if not user_ids:
        return {}
    query = sa.select(users.c.id, users.c.username).where(users.c.id.in_(sorted(user_ids)))
    return {r.id: r.username for r in conn.execute(query)}


def active_users_named(conn: sa.Connection, names: Collection[str]) -> dict[str, int]:
    """The ids of the active users among `names` (a deactivated user is left out)."""
    rows = conn.execute(
        sa.select(users.c.id, users.c.username).where(users.c.username.in_(names), users.c.active)
    )
    return {r.username: int(r.id) for r in rows}


def insert_user(
    conn: sa.Connection,
    *,
    username: str,
    display_name: str,
    email: str | None,
    role: str,
    password_hash: str | None,
    created_at: datetime,
) -> int:
    """A new active user; its id. A username taken already raises the unique index's
    IntegrityError (`store.database.IntegrityError`)."""
    return int(
        conn.execute(
            users.insert().values(
                username=username,
                display_name=display_name,
                email=email,
                role=role,
                password_hash=password_hash,
                active=True,
                created_at=created_at,
            )
        ).inserted_primary_key[0]  # type: ignore[index]
    )


def update_user(
    conn: sa.Connection,
    user_id: int,
    *,
    role: str | None = None,
    display_name: str | None = None,
    email: str | None = None,
    password_hash: str | None = None,
    active: bool | None = None,
) -> None:
    """Change the given columns of user `user_id` (None leaves a column as it is); no
    statement at all when nothing is given."""
    given = {
        "role": role,
        "display_name": display_name,
        "email": email,
        "password_hash": password_hash,
        "active": active,
    }
    values = {column: value for column, value in given.items() if value is not None}
    if values:
        conn.execute(users.update().where(users.c.id == user_id).values(**values))


def manager_of(conn: sa.Connection, user_id: int) -> UserRow | None:
    """The manager of user `user_id` (active or not), or None when they have none."""
    manager = users.alias("manager")
    row = conn.execute(
        sa.select(manager)
        .join(users, users.c.manager_id == manager.c.id)
        .where(users.c.id == user_id)
    ).first()
    return None if row is None else _user(row)


def team_of(conn: sa.Connection, manager_id: int) -> list[UserRow]:
    """The users whose manager is `manager_id` (active or not), by username."""
    query = sa.select(users).where(users.c.manager_id == manager_id).order_by(users.c.username)
    return [_user(r) for r in conn.execute(query)]


def managers_above(conn: sa.Connection, user_id: int, *, limit: int = 1000) -> list[int]:
    """The ids of `user_id`'s manager, their manager, and so on up (at most `limit`; stops at
    a user seen already, so a damaged chain cannot loop)."""
    chain: list[int] = []
    current: int | None = user_id
    while current is not None and len(chain) < limit:
        current = conn.execute(sa.select(users.c.manager_id).where(users.c.id == current)).scalar()
        if current is None or current in chain or current == user_id:
            break
        chain.append(int(current))
    return chain


def set_manager(conn: sa.Connection, user_id: int, manager_id: int | None) -> None:
    """Set (or, with None, clear) the manager of user `user_id`; the caller checked it."""
    conn.execute(users.update().where(users.c.id == user_id).values(manager_id=manager_id))


def insert_api_token(
    conn: sa.Connection, *, user_id: int, name: str, token_hash: str, created_at: datetime
) -> int:
    """A new API token of `user_id`, stored by its hash only; its id."""
    return int(
        conn.execute(
            api_tokens.insert().values(
                user_id=user_id, name=name, token_hash=token_hash, created_at=created_at
            )
        ).inserted_primary_key[0]  # type: ignore[index]
    )


def find_token_id_by_hash(conn: sa.Connection, token_hash: str) -> int | None:
    """The id of the token with this hash, revoked or not."""
    token_id = conn.execute(
        sa.select(api_tokens.c.id).where(api_tokens.c.token_hash == token_hash)
    ).scalar()
    return None if token_id is None else int(token_id)


def token_user_id(conn: sa.Connection, token_id: int) -> int | None:
    """The id of the user token `token_id` belongs to, or None when there is no such token."""
    row = conn.execute(sa.select(api_tokens).where(api_tokens.c.id == token_id)).first()
    return None if row is None else int(row.user_id)


def tokens_after(
    conn: sa.Connection, *, user_id: int | None, after_id: int | None, limit: int
) -> list[TokenRow]:
    """At most `limit` unrevoked tokens by id after `after_id`, of `user_id` or of everyone."""
    query = (
        sa.select(
            api_tokens.c.id,
            users.c.username,
            api_tokens.c.name,
            api_tokens.c.created_at,
            api_tokens.c.last_used_at,
            api_tokens.c.revoked_at,
        )
        .join(users, users.c.id == api_tokens.c.user_id)
        .where(api_tokens.c.revoked_at.is_(None))
        .order_by(api_tokens.c.id)
        .limit(limit)
    )
    if user_id is not None:
        query = query.where(api_tokens.c.user_id == user_id)
    if after_id is not None:
        query = query.where(api_tokens.c.id > after_id)
    return [TokenRow(*r) for r in conn.execute(query)]


def revoke_api_token(conn: sa.Connection, token_id: int, *, at: datetime) -> None:
    conn.execute(api_tokens.update().where(api_tokens.c.id == token_id).values(revoked_at=at))


def api_token_owner(conn: sa.Connection, token_hash: str) -> TokenOwner | None:
    """The user of the unrevoked token with this hash (active or not: the caller says which
    may sign in), or None when no such token is in use."""
    row = conn.execute(
        sa.select(users.c.id, users.c.username, users.c.role, users.c.active, api_tokens.c.id)
        .join(api_tokens, api_tokens.c.user_id == users.c.id)
        .where(api_tokens.c.token_hash == token_hash)
        .where(api_tokens.c.revoked_at.is_(None))
    ).first()
    if row is None:
        return None
    return TokenOwner(user_id=row[0], username=row.username, role=row.role, active=row.active)
