"""Rendering pages: the Jinja2 templates of `crmflow/web/templates/`, autoescaped, with what
every page shows (user, CSRF token, unread count, flash messages, nav)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import jinja2
from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from crmflow.errors import CrmflowError, InvalidInputError, SignInRequiredError
from crmflow.services import notifications
from crmflow.web.auth import (
    PRESESSION_COOKIE,
    context_of,
    cookie_secure,
    csrf_token_for,
    session_of,
)

__all__ = ["NAV", "act_then_see", "environment", "flash", "render", "see_other"]

TEMPLATES = Path(__file__).parent / "templates"
FLASH_COOKIE = "crmflow_flash"
_FLASH_KINDS = ("ok", "info", "error")
# The pages of the nav, in its order: (path, label).
NAV: tuple[tuple[str, str], ...] = (
    ("/", "Dashboard"),
    ("/flows", "Flows"),
    ("/records", "Records"),
    ("/queries", "Queries"),
    ("/tasks", "Tasks"),
    ("/stats", "Statistics"),
    ("/messages", "Messages"),
    ("/simulate", "Simulate"),
    ("/inbox", "Inbox"),
    ("/admin", "Admin"),
)

_MEMBER_NAV = tuple(item for item in NAV if item[0] != "/admin")

environment = jinja2.Environment(
    loader=jinja2.FileSystemLoader(TEMPLATES),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def unread_label(count: int) -> str:
    """An unread count as the badge says it: "999+" once it reaches the count's limit."""
    cap = notifications.UNREAD_COUNT_LIMIT
    return f"{cap - 1}+" if count >= cap else str(count)


environment.filters["unread_label"] = unread_label


def _flashes(request: Request) -> list[dict[str, str]]:
    raw = request.cookies.get(FLASH_COOKIE)
    if not raw:
        return []
    try:
        items = json.loads(unquote(raw))
    except ValueError:
        return []
    if not isinstance(items, list):
        return []
    return [
        {"kind": i["kind"], "text": i["text"]}
        for i in items[:5]
        if isinstance(i, dict) and i.get("kind") in _FLASH_KINDS and isinstance(i.get("text"), str)
    ]


def flash(response: Response, text: str, kind: str = "ok") -> None:
    """Leave a message for the next page rendered (after a redirect): `kind` ok, info or error."""
    value = quote(json.dumps([{"kind": kind, "text": text[:500]}]))
    response.set_cookie(FLASH_COOKIE, value, httponly=True, samesite="lax", path="/")


def see_other(url: str) -> RedirectResponse:
    """The answer to a POST that worked: go to `url` with a GET (303)."""
    return RedirectResponse(url, status_code=303)


def act_then_see(target: str, done: str, action: Callable[[], object]) -> Response:
    """Run `action` (a service call) and go to `target`, leaving `done` as the message or,
    refused, the service's reason in its own words. Signing in again is not a refusal: it
    propagates, so the browser is sent to the sign-in page."""
    response = see_other(target)
    try:
        action()
    except SignInRequiredError:
        raise
    except InvalidInputError as exc:
        flash(response, "; ".join(str(p) for p in exc.problems) or exc.message, kind="error")
    except CrmflowError as exc:
        flash(response, exc.message, kind="error")
    else:
        flash(response, done)
    return response


def render(
    request: Request,
    name: str,
    *,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
    **context: Any,
) -> HTMLResponse:
    """The template `name` with `context` and what every page shows."""
    session = session_of(request)
    user = session.actor if session is not None else None
    unread = notifications.unread_count(context_of(request), user) if user is not None else 0
    flashes = _flashes(request)
    values: dict[str, Any] = {
        "request": request,
        "user": user,
        "csrf_token": csrf_token_for(request),
        "unread": unread,
        "flashes": flashes,
        # The admin pages answer 403 to anyone else: not offered to them.
        "nav": NAV if user is not None and user.is_admin else _MEMBER_NAV,
        "current_path": request.url.path,
        **context,
    }
    body = environment.get_template(name).render(values)
    response = HTMLResponse(body, status_code=status_code, headers=headers)
    if flashes or FLASH_COOKIE in request.cookies:
        response.delete_cookie(FLASH_COOKIE, path="/")
    new_presession = getattr(request.state, "new_presession", None)
    if new_presession:
        response.set_cookie(
            PRESESSION_COOKIE,
            new_presession,
            max_age=3600 * 12,
            httponly=True,
            samesite="lax",
            secure=cookie_secure(request),
            path="/",
        )
    return response
