"""Signing in and out: `/sign-in` (a username and password make a session) and `/sign-out`."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import Form, Request
from fastapi.responses import JSONResponse, Response

from crmflow.errors import AuthenticationError, TooManyRequestsError
from crmflow.services import web_sessions
from crmflow.services.throttle import SignInThrottle
from crmflow.services.web_sessions import SESSION_COOKIE
from crmflow.web.auth import (
    PRESESSION_COOKIE,
    CurrentSession,
    CurrentUser,
    OptionalSession,
    context_of,
    cookie_secure,
    safe_next,
    web_router,
)
from crmflow.web.render import flash, render, see_other

router = web_router()


def _throttle(request: Request) -> SignInThrottle:
    """The app's count of failed sign-ins, shared with POST /api/auth/token."""
    throttle = request.app.state.sign_in_throttle
    assert isinstance(throttle, SignInThrottle)
    return throttle


@router.get("/sign-in")
def sign_in_page(request: Request, session: OptionalSession, next: str = "/") -> Response:
    if session is not None:
        return see_other(safe_next(next))
    return render(request, "sign_in.html", next=safe_next(next), username="", error=None)


@router.post("/sign-in")
def sign_in(
    request: Request,
    username: Annotated[str, Form(max_length=200)] = "",
    password: Annotated[str, Form(max_length=1000)] = "",
    next: Annotated[str, Form(max_length=2000)] = "/",
) -> Response:
    ctx = context_of(request)
    target = safe_next(next)
    address = request.client.host if request.client is not None else None
    try:
        if "\x00" in username:  # no username holds one, and PostgreSQL refuses it in a query
            raise AuthenticationError("no such user")
        signed_in = web_sessions.sign_in(
            ctx, username, password, address=address, throttle=_throttle(request)
        )
    except TooManyRequestsError as exc:
        retry_at = ctx.now() + timedelta(seconds=exc.retry_after)
        error = (
            f"Too many failed sign-ins. Try again in {exc.retry_after} seconds "
            f"(at {retry_at:%H:%M:%S} UTC)."
        )
        return render(
            request,
            "sign_in.html",
            status_code=429,
            headers={"Retry-After": str(exc.retry_after)},
            next=target,
            username=username,
            error=error,
        )
    except AuthenticationError:
        error = (
            "Wrong username or password. The username is case-sensitive; an administrator "
            "can set a new password."
        )
        return render(
            request, "sign_in.html", status_code=401, next=target, username=username, error=error
        )
    response = see_other(target)
    response.set_cookie(
        SESSION_COOKIE,
        signed_in.token,
        max_age=ctx.settings.web_session_max_hours * 3600,
        httponly=True,
        samesite="lax",
        secure=cookie_secure(request),
        path="/",
    )
    response.delete_cookie(PRESESSION_COOKIE, path="/")
    return response


@router.get("/session")
def session_state(session: CurrentSession) -> Response:
    """This browser's session, for a page about to send a form (app.js): who, and the CSRF token
    its forms must carry (a sign-in in another tab made a new session, and a new token). A
    session that has ended answers as to any htmx request (web/errors.py): 401, the banner."""
    return JSONResponse(
        {"user": session.actor.username, "csrf_token": session.csrf_token},
        headers={"cache-control": "no-store"},
    )


@router.get("/signed-in")
def signed_in_again(request: Request, user: CurrentUser) -> Response:
    """Where the banner of an ended session sends its sign-in (in another tab): go back."""
    return render(request, "signed_in_again.html")


@router.post("/sign-out")
def sign_out(request: Request) -> Response:
    web_sessions.sign_out(context_of(request), request.cookies.get(SESSION_COOKIE))
    response = see_other("/sign-in")
    response.delete_cookie(SESSION_COOKIE, path="/")
    flash(response, "You are signed out.", kind="info")
    return response
