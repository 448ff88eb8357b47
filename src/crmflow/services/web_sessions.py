"""Web sessions: signing in to the web application with a username and password, the session a
cookie names, and signing out.

The cookie carries a random token; the database keeps only its SHA-256 (`store.web_sessions`), so
a copy of the database signs nobody in. A session ends when it has been idle for
`settings.web_session_idle_minutes`, `settings.web_session_max_hours` after sign-in, at sign-out
(its row is deleted), or when its user is deactivated. Each session has a CSRF token derived from
its token (a different hash of it): the pages put it in their forms and the server compares it on
every request that changes something, so another site cannot post in the user's name.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta

from crmflow.services.context import Actor, Context, Role
from crmflow.services.throttle import SignInThrottle
from crmflow.services.users import check_password
from crmflow.store import web_sessions as stored
from crmflow.store.database import read_connection

__all__ = [
    "SESSION_COOKIE",
    "SignedIn",
    "WebSession",
    "csrf_matches",
    "session_for",
    "sign_in",
    "sign_out",
]

SESSION_COOKIE = "crmflow_session"
# last_seen_at is written at most this often: a page that loads five fragments writes once.
_TOUCH_EVERY = timedelta(seconds=60)


@dataclass(frozen=True)
class WebSession:
    """A live session: whose it is and the CSRF token its pages carry."""

    id: int
    actor: Actor
    csrf_token: str


@dataclass(frozen=True)
class SignedIn:
    """A new session and the token its cookie must carry (only here in clear)."""

    token: str
    session: WebSession


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _csrf_token(token: str) -> str:
    return hashlib.sha256(b"crmflow-csrf\x00" + token.encode()).hexdigest()


def csrf_matches(session: WebSession, given: str | None) -> bool:
    """Whether a request's CSRF token is the session's (in constant time)."""
    return given is not None and hmac.compare_digest(session.csrf_token, given)


def sign_in(
    ctx: Context,
    username: str,
    password: str,
    *,
    address: str | None = None,
    throttle: SignInThrottle | None = None,
) -> SignedIn:
    """A new session for the user a username and password sign in (the same checks, messages
    and failed-sign-in limit as POST /api/auth/token: AuthenticationError, TooManyRequestsError).
    """
    actor = check_password(ctx, username, password, address=address, throttle=throttle)
    token = secrets.token_urlsafe(32)
    with ctx.engine.begin() as conn:
        session_id = stored.insert_session(conn, actor.id, _hash(token), at=ctx.now())
    return SignedIn(token, WebSession(session_id, actor, _csrf_token(token)))


def session_for(ctx: Context, token: str | None, *, touch: bool = True) -> WebSession | None:
    """The live session a cookie's token names, or None when there is none: unknown, signed
    out, idle too long, too old, or its user deactivated (an ended session's row is deleted).
    `touch`: the request is someone using the session, so its idle time starts again (a page
    polling a fragment on its own is not: False)."""
    if not token or len(token) > 200:
        return None
    token_hash = _hash(token)
    with read_connection(ctx.engine) as conn:
        row = stored.find_session(conn, token_hash)
    if row is None:
        return None
    now = ctx.now()
    settings = ctx.settings
    expired = (
        not row.active
        or now - row.last_seen_at >= timedelta(minutes=settings.web_session_idle_minutes)
        or now - row.created_at >= timedelta(hours=settings.web_session_max_hours)
    )
    if expired:
        with ctx.engine.begin() as conn:
            stored.delete_session(conn, row.id)
        return None
    if touch and now - row.last_seen_at >= _TOUCH_EVERY:
        with ctx.engine.begin() as conn:
            stored.touch_session(conn, row.id, at=now)
    actor = Actor(row.user_id, row.username, Role(row.role))
    return WebSession(row.id, actor, _csrf_token(token))


def sign_out(ctx: Context, token: str | None) -> None:
    """End the session a cookie's token names (nothing when there is none)."""
    if not token or len(token) > 200:
        return
    with ctx.engine.begin() as conn:
        row = stored.find_session(conn, _hash(token))
        if row is not None:
            stored.delete_session(conn, row.id)
