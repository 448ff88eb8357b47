"""Errors on web routes as HTML pages in plain words (API routes keep their JSON answers).

Each handler answers a web path with `error.html` and hands an API path to the API's own handler
(the ones `crmflow.api.create_app` installed), so one app serves both."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote, urlsplit

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from crmflow.errors import (
    AuthenticationError,
    ConflictError,
    CrmflowError,
    CsrfError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
    SignInRequiredError,
    TooManyRequestsError,
)
from crmflow.web.auth import safe_next, session_of
from crmflow.web.render import environment, render
from crmflow.web.security import is_api_path

__all__ = ["install_error_pages"]

log = logging.getLogger(__name__)
Handler = Callable[[Request, Any], Response | Awaitable[Response]]

_TITLES = {
    400: "This request was refused",
    401: "Sign in first",
    403: "You may not do this",
    404: "Page not found",
    405: "Not allowed here",
    409: "This conflicts with the current state",
    412: "This changed meanwhile",
    413: "Too large",
    422: "This input was refused",
    429: "Too many attempts",
}


def _page(
    request: Request,
    status: int,
    message: str,
    *,
    problems: list[str] | None = None,
    title: str | None = None,
    hint: str = "",
    headers: dict[str, str] | None = None,
) -> Response:
    return render(
        request,
        "error.html",
        status_code=status,
        headers=headers,
        title=title or _TITLES.get(status, "Something went wrong"),
        status=status,
        message=message,
        problems=problems or [],
        hint=hint,
    )


def _is_htmx(request: Request) -> bool:
    return bool(request.headers.get("hx-request"))


def _sign_in_redirect(request: Request, next_path: str) -> Response:
    if _is_htmx(request):
        return _session_ended(request)
    target = "/sign-in?next=" + quote(next_path, safe="/")
    return RedirectResponse(target, status_code=303)


def _session_ended(request: Request) -> Response:
    """The answer to an htmx request of a page whose session has ended (idle too long, signed
    out in another tab). Not a redirect: the page would go, and what was typed in its forms
    with it. A 401 whose body is the banner `#session-ended` (session_ended.html) that htmx
    swaps in place of the page's hidden one (HX-Retarget, HX-Reswap, HX-Reselect; app.js lets a
    401 swap); X-Crmflow-Sign-In is where app.js takes a page in which nothing was typed."""
    page = urlsplit(request.headers.get("hx-current-url", ""))
    here = safe_next(page.path + (f"?{page.query}" if page.query else ""))
    body = environment.get_template("session_ended.html").render(shown=True)
    headers = {
        "HX-Retarget": "#session-ended",
        "HX-Reswap": "outerHTML",
        "HX-Reselect": "#session-ended",
        "X-Crmflow-Sign-In": "/sign-in?next=" + quote(here, safe="/"),
        "cache-control": "no-store",
    }
    return HTMLResponse(body, status_code=401, headers=headers)


def _crmflow_page(request: Request, exc: CrmflowError) -> Response:
    if isinstance(exc, SignInRequiredError):
        return _sign_in_redirect(request, exc.next_path)
    if isinstance(exc, AuthenticationError):
        return _sign_in_redirect(request, "/")
    if isinstance(exc, CsrfError):
        if _is_htmx(request) and session_of(request) is None:
            # The page's token was its session's, and the session has ended.
            return _session_ended(request)
        return _page(request, 403, exc.message, title="Reload the page")
    if isinstance(exc, TooManyRequestsError):
        headers = {"Retry-After": str(exc.retry_after)}
        return _page(request, 429, exc.message, headers=headers)
    if isinstance(exc, InvalidInputError):
        # The headline ("the flow was refused (2 problems):"): the page lists the problems
        # under it, which the message's other lines repeat.
        problems = [str(p) for p in exc.problems]
        headline = f"{exc.headline}:" if problems else exc.message
        return _page(request, exc.status_code, headline, problems=problems)
    if isinstance(exc, NotFoundError | PermissionDeniedError):
        return _page(request, exc.status_code, exc.message)
    if isinstance(exc, ConflictError):
        # Refused for the state things are in (a flow archived, a name taken, a count that
        # changed): the services refuse before they write, so nothing was changed.
        hint = (
            "Nothing was changed. Go back, reload the page to see how things are now, and try "
            "again."
        )
        return _page(request, exc.status_code, exc.message, hint=hint)
    return _page(request, exc.status_code, exc.message)


def _http_page(request: Request, exc: StarletteHTTPException) -> Response:
    if exc.status_code == 404:
        message = (
            f"There is no page at {request.url.path}. Use the menu above, or go back to the "
            "dashboard."
        )
    elif exc.status_code == 405:
        message = f"{request.method} is not possible at {request.url.path}."
    else:
        message = str(exc.detail)
    return _page(request, exc.status_code, message, headers=getattr(exc, "headers", None))


def _validation_page(request: Request, exc: RequestValidationError) -> Response:
    problems = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error.get("loc", ()) if p not in ("body", "query"))
        problems.append(f"{where}: {error.get('msg', 'is not valid')}")
    return _page(request, 422, "Some of what was sent is not valid:", problems=problems)


def _internal_page(request: Request, exc: Exception) -> Response:
    log.error("%s %s failed: %s", request.method, request.url.path, type(exc).__name__)
    return _page(
        request,
        500,
        "The server failed on this request. It is logged; try again, and tell your "
        "administrator if it happens again.",
        title="Something went wrong",
    )


def _either(web: Handler, api: Handler | None) -> Handler:
    async def handle(request: Request, exc: Any) -> Response:
        if api is not None and is_api_path(request.url.path):
            answer = api(request, exc)
        else:
            answer = web(request, exc)
        if isinstance(answer, Response):
            return answer
        return await answer

    return handle


def install_error_pages(app: FastAPI) -> None:
    """Answer errors on web paths with pages; the API's handlers keep the API paths."""
    api = dict(app.exception_handlers)
    pages: dict[type[Exception], Handler] = {
        CrmflowError: _crmflow_page,
        StarletteHTTPException: _http_page,
        RequestValidationError: _validation_page,
        Exception: _internal_page,
    }
    for kind, page in pages.items():
        app.add_exception_handler(kind, _either(page, api.get(kind)))
