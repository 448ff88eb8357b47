"""Users, groups and API tokens."""

from __future__ import annotations

import functools
import hashlib
import secrets
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pwdlib import PasswordHash

from crmflow.engine.recordtypes import normalise_email
from crmflow.errors import (
    AuthenticationError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
    Problem,
    TooManyRequestsError,
)
from crmflow.services.context import Actor, Context, Role
from crmflow.services.paging import Page, keyset_page, page_size
from crmflow.services.permissions import require_admin
from crmflow.services.throttle import Lockout, SignInThrottle
from crmflow.store import groups as stored_groups
from crmflow.store import users as stored_users
from crmflow.store import web_sessions as stored_web_sessions
from crmflow.store.database import Connection, IntegrityError, read_connection
from crmflow.store.users import (  # user_ids_by_name re-exported: services.flows uses it
    TokenRow,
    UserRow,
    user_ids_by_name,
    usernames_by_id,
)

__all__ = [
    "SYSTEM_USERNAME",
    "TokenCreated",
    "UserView",
    "actor_by_username",
    "add_group_member",
    "authenticate_token",
    "check_password",
    "create_group",
    "create_token",
    "create_user",
    "get_user",
    "hash_token",
    "list_groups",
    "list_users",
    "login",
    "remove_group_member",
    "revoke_token",
    "system_actor",
    "tokens_page",
    "update_user",
    "user_ids_by_name",
    "usernames",
    "users_page",
]

SYSTEM_USERNAME = "system"
TOKEN_PREFIX = "crm_"
_password_hash = PasswordHash.recommended()


@dataclass(frozen=True)
class UserView:
    id: int
    username: str
    display_name: str
    email: str | None
    role: Role
    active: bool
    groups: tuple[str, ...] = ()
    manager: str | None = None  # the manager's username

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "username": self.username,
            "display_name": self.display_name,
            "email": self.email,
            "role": self.role.value,
            "active": self.active,
            "groups": list(self.groups),
            "manager": self.manager,
        }


@dataclass(frozen=True)
class TokenCreated:
    id: int
    name: str
    token: str  # shown once; only its hash is stored


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _role(value: str) -> Role:
    try:
        return Role(value)
    except ValueError:
        raise InvalidInputError(
            "the user",
            [Problem("role", f"{value!r} is not a role", "use admin, manager or member")],
        ) from None


def _views(conn: Connection, rows: list[UserRow]) -> list[UserView]:
    """Views of users with their groups and managers, in three queries whatever the number of
    users."""
    groups_of = stored_groups.group_names_by_user(conn, [r.id for r in rows])
    managers = stored_users.usernames_by_id(conn, {r.manager_id for r in rows if r.manager_id})
    return [
        UserView(
            id=row.id,
            username=row.username,
            display_name=row.display_name,
            email=row.email,
            role=Role(row.role),
            active=row.active,
            groups=tuple(groups_of.get(row.id, ())),
            manager=managers.get(row.manager_id) if row.manager_id else None,
        )
        for row in rows
    ]


def _view(conn: Connection, row: UserRow) -> UserView:
    return _views(conn, [row])[0]


def ensure_system_user(ctx: Context) -> Actor:
    """The built-in admin that the command line acts as when no other user is named."""
    with ctx.engine.begin() as conn:
        return system_actor(conn, now=ctx.now())


def system_actor(conn: Connection, *, now: datetime) -> Actor:
    """`ensure_system_user` on the caller's transaction (the dispatcher acting on a run)."""
    row = stored_users.find_user_by_name(conn, SYSTEM_USERNAME)
    if row is None:
        user_id = stored_users.insert_user(
            conn,
            username=SYSTEM_USERNAME,
            display_name="crmflow (system)",
            email=None,
            role=Role.ADMIN.value,
            password_hash=None,
            created_at=now,
        )
        return Actor(user_id, SYSTEM_USERNAME, Role.ADMIN)
    return Actor(row.id, row.username, Role(row.role))


def create_user(
    ctx: Context,
    actor: Actor,
    *,
    username: str,
    role: str,
    display_name: str | None = None,
    email: str | None = None,
    password: str | None = None,
    manager: str | None = None,
) -> UserView:
    require_admin(actor, "create users")
    problems = []
    if not username or not username.replace("_", "").replace(".", "").replace("-", "").isalnum():
        problems.append(
            Problem("username", f"{username!r} is not a valid username", "letters, digits, . _ -")
        )
    checked_role = _role(role)
    if password is not None and len(password) < 8:
        problems.append(Problem("password", "is shorter than 8 characters"))
    email, email_problems = _email(email)
    problems += email_problems
    if problems:
        raise InvalidInputError("the user", problems)
    try:
        with ctx.engine.begin() as conn:
            view = _insert_user(conn, ctx, username, checked_role, display_name, email, password)
            if manager:
                stored_users.set_manager(conn, view.id, _manager_id(conn, username, manager))
                view = _view(conn, stored_users.get_user_by_id(conn, view.id))
            return view
    except IntegrityError:
        # Also when two requests create the same username at once: the unique index decides.
        raise ConflictError(f"a user named {username!r} already exists") from None


def _insert_user(
    conn: Connection,
    ctx: Context,
    username: str,
    role: Role,
    display_name: str | None,
    email: str | None,
    password: str | None,
) -> UserView:
    user_id = stored_users.insert_user(
        conn,
        username=username,
        display_name=display_name or username,
        email=email,
        role=role.value,
        password_hash=_password_hash.hash(password) if password else None,
        created_at=ctx.now(),
    )
    return _view(conn, stored_users.get_user_by_id(conn, user_id))


def update_user(
    ctx: Context,
    actor: Actor,
    username: str,
    *,
    role: str | None = None,
    display_name: str | None = None,
    email: str | None = None,
    password: str | None = None,
    active: bool | None = None,
    manager: str | None = None,
) -> UserView:
    """Change the given attributes of `username`; `manager=""` removes their manager."""
    require_admin(actor, "change users")
    checked_role = _role(role).value if role is not None else None
    if email is not None:
        email, email_problems = _email(email)
        if email_problems:
            raise InvalidInputError("the user", email_problems)
        email = email or ""  # "" clears the address (stored as given before: an empty text)
    password_hash = None
    if password is not None:
        if len(password) < 8:
            raise InvalidInputError(
                "the user", [Problem("password", "is shorter than 8 characters")]
            )
        password_hash = _password_hash.hash(password)
    with ctx.engine.begin() as conn:
        row = _user_row(conn, username)
        if active is False:
            _check_may_deactivate(actor, row)
        if checked_role is not None and checked_role != row.role:
            _check_may_change_role(actor, row)
        stored_users.update_user(
            conn,
            row.id,
            role=checked_role,
            display_name=display_name,
            email=email,
            password_hash=password_hash,
            active=active,
        )
        if active is False:
            # A deactivated user's web sessions end now (and do not come back with the user).
            stored_web_sessions.delete_sessions_of_user(conn, row.id)
        if manager is not None:
            manager_id = _manager_id(conn, username, manager) if manager else None
            stored_users.set_manager(conn, row.id, manager_id)
        return _view(conn, stored_users.get_user_by_id(conn, row.id))


def _check_may_deactivate(actor: Actor, row: UserRow) -> None:
    """Nobody deactivates themselves (their sessions would end with no way back in) nor the
    built-in `system` user (the command line and the worker act as it)."""
    if row.username == SYSTEM_USERNAME:
        raise ConflictError(
            f"the built-in user {SYSTEM_USERNAME!r} cannot be deactivated: the command line and "
            "the worker act as it"
        )
    if row.id == actor.id:
        raise ConflictError(
            f"you cannot deactivate yourself ({row.username!r}): you would be signed out with no "
            "way back in; another admin may do it"
        )


def _check_may_change_role(actor: Actor, row: UserRow) -> None:
    """Nobody takes their own admin role away (they would lose the pages to give it back), nor
    the built-in `system` user's (the command line and the worker act as it)."""
    if row.username == SYSTEM_USERNAME:
        raise ConflictError(
            f"the built-in user {SYSTEM_USERNAME!r} stays an admin: the command line and the "
            "worker act as it"
        )
    if row.id == actor.id:
        raise ConflictError(
            f"you cannot change your own role ({row.username!r}): you would lose the admin "
            "pages with no way back; another admin may do it"
        )


def _email(email: str | None) -> tuple[str | None, list[Problem]]:
    """A user's email address in its stored form (None when empty), or the problem with it:
    approvals and notifications are sent there."""
    if email is None or not email.strip():
        return None, []
    try:
        return normalise_email(email), []
    except ValueError as exc:
        return None, [Problem("email", str(exc), "give an address such as name@example.org")]


def _manager_id(conn: Connection, username: str, manager: str) -> int:
    """The id of user `manager`, checked as `username`'s manager: it exists, it is not
    `username` and `username` is not above it (no cycle)."""
    row = stored_users.find_user_by_name(conn, manager)
    if row is None:
        raise InvalidInputError(
            f"user {username!r}",
            [Problem("manager", f"no user named {manager!r}", "see `crmflow users list`")],
        )
    user = stored_users.find_user_by_name(conn, username)
    if manager == username or (user and user.id in stored_users.managers_above(conn, row.id)):
        chain = "themselves" if manager == username else f"{manager!r}, who reports to them"
        raise InvalidInputError(
            f"user {username!r}",
            [
                Problem(
                    "manager",
                    f"{username!r} cannot be managed by {chain}",
                    "choose a manager who is not in the user's own team",
                )
            ],
        )
    return row.id


def _user_row(conn: Connection, username: str) -> UserRow:
    row = stored_users.find_user_by_name(conn, username)
    if row is None:
        raise NotFoundError(f"no user named {username!r} (see `crmflow users list`)")
    return row


def get_user(ctx: Context, username: str) -> UserView:
    with read_connection(ctx.engine) as conn:
        return _view(conn, _user_row(conn, username))


def usernames(ctx: Context, user_ids: Collection[int]) -> dict[int, str]:
    """The username of each of `user_ids` that names a user (a user field shows it)."""
    if not user_ids:
        return {}
    with read_connection(ctx.engine) as conn:
        return usernames_by_id(conn, user_ids)


def list_users(ctx: Context) -> list[UserView]:
    with read_connection(ctx.engine) as conn:
        return _views(conn, stored_users.all_users(conn))


def users_page(ctx: Context, actor: Actor, *, after: int | None, limit: int) -> Page[UserView]:
    """The users by id, `limit` at a time after the id `after` (the admin pages); admins only."""
    require_admin(actor, "list users")
    size = page_size(ctx, limit)
    with read_connection(ctx.engine) as conn:
        rows = stored_users.users_after(conn, after, size + 1)
        page = keyset_page(rows, size)
        return Page(_views(conn, page.items), page.next_after)


def tokens_page(
    ctx: Context, actor: Actor, *, username: str | None, after: int | None, limit: int
) -> Page[TokenRow]:
    """The unrevoked API tokens (never their secret) by id, of `username` or, for an admin, of
    everyone (`username` None); a user who is not an admin sees only their own."""
    if username != actor.username:
        require_admin(actor, "list other users' tokens")
    size = page_size(ctx, limit)
    with read_connection(ctx.engine) as conn:
        user_id = _user_row(conn, username).id if username is not None else None
        rows = stored_users.tokens_after(conn, user_id=user_id, after_id=after, limit=size + 1)
    return keyset_page(rows, size)


def actor_by_username(ctx: Context, username: str) -> Actor:
    with read_connection(ctx.engine) as conn:
        row = _user_row(conn, username)
    if not row.active:
        raise AuthenticationError(f"user {username!r} is deactivated")
    return Actor(row.id, row.username, Role(row.role))


def create_token(ctx: Context, actor: Actor, username: str, name: str = "api") -> TokenCreated:
    """A new API token for `username` (admins for anyone; every user for themselves)."""
    if username != actor.username:
        require_admin(actor, "create tokens for other users")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with ctx.engine.begin() as conn:
        row = _user_row(conn, username)
        token_id = stored_users.insert_api_token(
            conn, user_id=row.id, name=name, token_hash=hash_token(token), created_at=ctx.now()
        )
    return TokenCreated(id=token_id, name=name, token=token)


def store_known_token(ctx: Context, username: str, token: str, name: str) -> None:
    """Register a token chosen by the caller (the demo data's documented tokens)."""
    with ctx.engine.begin() as conn:
        row = _user_row(conn, username)
        digest = hash_token(token)
        if stored_users.find_token_id_by_hash(conn, digest) is None:
            stored_users.insert_api_token(
                conn, user_id=row.id, name=name, token_hash=digest, created_at=ctx.now()
            )


def revoke_token(ctx: Context, actor: Actor, token_id: int) -> None:
    with ctx.engine.begin() as conn:
        owner_id = stored_users.token_user_id(conn, token_id)
        if owner_id is None:
            raise NotFoundError(f"no API token with id {token_id}")
        if owner_id != actor.id:
            require_admin(actor, "revoke other users' tokens")
        stored_users.revoke_api_token(conn, token_id, at=ctx.now())


def authenticate_token(ctx: Context, token: str) -> Actor:
    with read_connection(ctx.engine) as conn:
        row = stored_users.api_token_owner(conn, hash_token(token))
    if row is None or not row.active:
        raise AuthenticationError(
            "the API token is unknown, revoked, or its user is deactivated "
            "(create one with `crmflow users token USERNAME` or POST /api/auth/token)"
        )
    return Actor(row.user_id, row.username, Role(row.role))


def login(
    ctx: Context,
    username: str,
    password: str,
    *,
    address: str | None = None,
    throttle: SignInThrottle | None = None,
) -> TokenCreated:
    """Exchange a username and password for a new API token (the checks of `check_password`)."""
    actor = check_password(ctx, username, password, address=address, throttle=throttle)
    return create_token(ctx, actor, username, name="login")


def check_password(
    ctx: Context,
    username: str,
    password: str,
    *,
    address: str | None = None,
    throttle: SignInThrottle | None = None,
) -> Actor:
    """The active user a username and password sign in, for an API token or a web session.

    An unknown, deactivated or password-less user costs the same password check as a wrong
    password (against a dummy hash), so the time of the answer does not tell which usernames exist.
    With a `throttle`, failures are counted per username and per client `address`; past
    `settings.login_attempts` of them the sign-in is refused with TooManyRequestsError for
    `settings.login_lockout_seconds` (doubling while failures go on), even with the right password.
    """
    now = ctx.now()
    if throttle is not None:
        locked = throttle.check(now, username, address)
        if locked is not None:
            raise _too_many(locked)
    with read_connection(ctx.engine) as conn:
        row = stored_users.find_user_by_name(conn, username)
    stored = row.password_hash if row is not None and row.password_hash else _dummy_hash()
    matches = _verify_password(password, stored)
    if row is None or not row.active or not row.password_hash or not matches:
        if throttle is not None:
            settings = ctx.settings
            locked = throttle.failed(
                now,
                username,
                address,
                attempts=settings.login_attempts,
                lockout=timedelta(seconds=settings.login_lockout_seconds),
            )
            if locked is not None:
                raise _too_many(locked)
        raise AuthenticationError(
            "wrong username or password (the username is case-sensitive; an admin can set a "
            "password with PATCH /api/users/{username})"
        )
    if throttle is not None:
        throttle.succeeded(username)
    return Actor(row.id, row.username, Role(row.role))


@functools.cache
def _dummy_hash() -> str:
    """A hash of a random password, made once with the same parameters as real ones."""
    return _password_hash.hash(secrets.token_urlsafe(16))


def _verify_password(password: str, stored: str) -> bool:
    try:
        return _password_hash.verify(password, stored)
    except Exception:
        # A damaged stored hash must read as a wrong password, not a 500.
        _password_hash.verify(password, _dummy_hash())
        return False


def _too_many(locked: Lockout) -> TooManyRequestsError:
    subject = f"user {locked.value!r}" if locked.kind == "user" else f"address {locked.value}"
    return TooManyRequestsError(
        f"too many failed sign-ins for {subject}: sign-ins for it are refused for "
        f"{locked.retry_after} more seconds; wait that long and try again with the right "
        "password (each further failure doubles the wait)",
        retry_after=locked.retry_after,
    )


def create_group(ctx: Context, actor: Actor, name: str, description: str = "") -> dict[str, Any]:
    require_admin(actor, "create groups")
    try:
        with ctx.engine.begin() as conn:
            group_id = stored_groups.insert_group(
                conn, name=name, description=description, created_at=ctx.now()
            )
    except IntegrityError:
        raise ConflictError(f"a group named {name!r} already exists") from None
    return {"id": group_id, "name": name, "description": description, "members": []}


def _group_id(conn: Connection, name: str) -> int:
    gid = stored_groups.find_group_id(conn, name)
    if gid is None:
        raise NotFoundError(f"no group named {name!r} (see `crmflow groups list`)")
    return gid


def add_group_member(ctx: Context, actor: Actor, group: str, username: str) -> None:
    require_admin(actor, "change groups")
    with ctx.engine.begin() as conn:
        gid = _group_id(conn, group)
        stored_groups.add_member(conn, gid, _user_row(conn, username).id)


def remove_group_member(ctx: Context, actor: Actor, group: str, username: str) -> None:
    require_admin(actor, "change groups")
    with ctx.engine.begin() as conn:
        gid = _group_id(conn, group)
        stored_groups.remove_member(conn, gid, _user_row(conn, username).id)


def list_groups(ctx: Context) -> list[dict[str, Any]]:
    with read_connection(ctx.engine) as conn:
        rows = stored_groups.all_groups(conn)
        by_group = stored_groups.member_usernames_by_group(conn)
    return [
        {
            "id": r.id,
            "name": r.name,
            "description": r.description,
            "members": by_group.get(r.id, []),
        }
        for r in rows
    ]
