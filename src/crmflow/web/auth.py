"""Who is signed in to a web request, and the CSRF check of the requests that change something.

`CurrentUser` (the services' Actor) and `CurrentSession` are what page routes depend on; without a
live session they raise SignInRequiredError, which the site answers with a redirect to
`/sign-in?next=...`. `web_router()` is the router every page module uses: it checks the CSRF token
of every POST, PUT, PATCH and DELETE before the route runs.

Before signing in there is no session, yet the sign-in form is protected too: its token is
derived from a random value in a short-lived cookie of its own (`crmflow_presession`)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Request
from starlette.datastructures import FormData

from crmflow.errors import CsrfError, InvalidInputError, Problem, SignInRequiredError
from crmflow.services import web_sessions
from crmflow.services.context import Actor, Context
from crmflow.services.web_sessions import SESSION_COOKIE, WebSession

__all__ = [
    "PRESESSION_COOKIE",
    "CurrentSession",
    "CurrentUser",
    "OptionalSession",
    "check_csrf",
    "context_of",
    "cookie_secure",
    "csrf_token_for",
    "safe_next",
    "session_of",
    "web_router",
]

PRESESSION_COOKIE = "crmflow_presession"
# Sent by the fragments a page polls on its own (htmx `every Ns`, `hx-headers`): such a request
# reads the session but is not the person using it, so it does not extend its idle expiry.
POLL_HEADER = "x-crmflow-poll"
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
_UNSET = object()


def context_of(request: Request) -> Context:
    ctx: Context = request.app.state.context
    return ctx


def session_of(request: Request) -> WebSession | None:
    """The live session of the request's cookie (looked up once per request), or None. A
    polling request (POLL_HEADER) does not count as use: a page left open does not keep its
    session alive."""
    found = getattr(request.state, "web_session", _UNSET)
    if found is _UNSET:
        found = web_sessions.session_for(
            context_of(request),
            request.cookies.get(SESSION_COOKIE),
            touch=POLL_HEADER not in request.headers,
        )
        request.state.web_session = found
    assert found is None or isinstance(found, WebSession)
    return found


def _here(request: Request) -> str:
    url = request.url
    return url.path + (f"?{url.query}" if url.query else "")


def _require_session(request: Request) -> WebSession:
    session = session_of(request)
    if session is None:
        raise SignInRequiredError(_here(request))
    return session


def _require_user(session: Annotated[WebSession, Depends(_require_session)]) -> Actor:
    return session.actor


CurrentSession = Annotated[WebSession, Depends(_require_session)]
CurrentUser = Annotated[Actor, Depends(_require_user)]
OptionalSession = Annotated[WebSession | None, Depends(session_of)]


def _presession_token(value: str) -> str:
    return hashlib.sha256(b"crmflow-presession\x00" + value.encode()).hexdigest()


def csrf_token_for(request: Request) -> str:
    """The CSRF token the request's pages must send back: the session's, or before signing in
    the one of the pre-session cookie (made here when missing: `render` sets it)."""
    session = session_of(request)
    if session is not None:
        return session.csrf_token
    value = request.cookies.get(PRESESSION_COOKIE) or getattr(request.state, "new_presession", "")
    if not value:
        value = secrets.token_urlsafe(24)
        request.state.new_presession = value
    return _presession_token(value)


def _expected_csrf(request: Request) -> str | None:
    session = session_of(request)
    if session is not None:
        return session.csrf_token
    value = request.cookies.get(PRESESSION_COOKIE)
    return _presession_token(value) if value else None


async def check_csrf(request: Request) -> None:
    """Refuse (CsrfError) a request that changes something without the page's CSRF token, in
    the `X-CSRF-Token` header (htmx) or the `csrf_token` form field."""
    if request.method in _SAFE_METHODS:
        return
    given = request.headers.get("x-csrf-token")
    form = None
    if request.headers.get("content-type", "").startswith(_FORM_TYPES):
        form = await request.form()
        field = form.get("csrf_token")
        given = given if given is not None else (field if isinstance(field, str) else None)
    expected = _expected_csrf(request)
    if expected is None or given is None or not hmac.compare_digest(expected, given):
        raise CsrfError(
            "this form is out of date or did not come from this site's pages (its security "
            "token is missing or stale, e.g. after signing in again): reload the page and try "
            "again"
        )
    if form is not None:
        _refuse_nul_characters(form)


def _refuse_nul_characters(form: FormData) -> None:
    """A NUL character is no text any form asks for, and PostgreSQL refuses to store one: the
    form is refused here, for every page at once, naming its fields (JSON bodies are checked
    by the API's RequestGuard)."""
    fields = sorted(
        {name for name, value in form.multi_items() if isinstance(value, str) and "\x00" in value}
    )
    if fields:
        raise InvalidInputError(
            "the form",
            [
                Problem(name, "contains a NUL character (\\0)", "remove it and send again")
                for name in fields
            ],
        )


def web_router() -> APIRouter:
    """The router of a page module: left out of the OpenAPI document, CSRF checked."""
    return APIRouter(include_in_schema=False, dependencies=[Depends(check_csrf)])


_UNSAFE_NEXT = set(string.whitespace) | {"\\"} | {chr(c) for c in range(32)} | {"\x7f"}


def safe_next(value: str | None) -> str:
    """Where to go after signing in: `value` when it is a path of this site, else `/`. A full
    URL, `//host`, a backslash or a control character (browsers read `/\\host` and `/\\t/host`
    as another host) are refused."""
    if not value or len(value) > 2000 or not value.startswith("/") or value.startswith("//"):
        return "/"
    if any(ch in _UNSAFE_NEXT for ch in value):
        return "/"
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return "/"
    return value


def cookie_secure(request: Request) -> bool:
    """Whether cookies get the Secure flag: over https, or when the settings say so (behind a
    TLS proxy that talks plain HTTP to the server)."""
    return request.url.scheme == "https" or context_of(request).settings.web_cookie_secure
