"""Errors on web routes as HTML pages in plain words (API routes keep their JSON answers).

Each handler answers a web path with `error.html` and hands an API path to the API's own handler
(the ones `crmflow.api.create_app` installed), so one app serves both."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse, Response
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
from crmflow.web.render import render
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


def _sign_in_redirect(request: Request, next_path: str) -> Response:
    target = "/sign-in?next=" + quote(next_path, safe="/")
    if request.headers.get("hx-request"):
        # htmx follows redirects inside the page; this makes it load the sign-in page whole.
        return Response(status_code=200, headers={"HX-Redirect": target})
    return RedirectResponse(target, status_code=303)


def _crmflow_page(request: Request, exc: CrmflowError) -> Response:
    if isinstance(exc, SignInRequiredError):
        return _sign_in_redirect(request, exc.next_path)
    if isinstance(exc, AuthenticationError):
        return _sign_in_redirect(request, "/")
    if isinstance(exc, CsrfError):
        return _page(request, 403, exc.message, title="Reload the page")
    if isinstance(exc, TooManyRequestsError):
        headers = {"Retry-After": str(exc.retry_after)}
        return _page(request, 429, exc.message, headers=headers)
    if isinstance(exc, InvalidInputError):
        problems = [str(p) for p in exc.problems]
        return _page(request, exc.status_code, exc.message, problems=problems)
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
