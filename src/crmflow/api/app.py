"""The FastAPI application: routers per resource, errors rendered as JSON with their problems."""

from __future__ import annotations

import logging
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from crmflow import __version__
from crmflow.api import (
    approval_links,
    enrollments,
    flow_test_mode,
    flows,
    hooks,
    jobs,
    mail,
    meta,
    metrics,
    notifications,
    queries,
    record_files,
    record_groups,
    record_types,
    records,
    suppressions,
    tasks,
    templates,
    triggers,
    users,
)
from crmflow.api.error_responses import declare_error_responses
from crmflow.api.limits import RequestGuard
from crmflow.errors import AuthenticationError, CrmflowError, TooManyRequestsError
from crmflow.services.context import Context
from crmflow.services.throttle import SignInThrottle

__all__ = ["create_app"]

STATIC = Path(__file__).parent / "static"
log = logging.getLogger(__name__)


def create_app(ctx: Context) -> FastAPI:
    app = FastAPI(
        title="crmflow",
        version=__version__,
        description=(
            "Process automation for CRMs. Every call needs `Authorization: Bearer <token>` "
            "(POST /api/auth/token exchanges a username and password for one); an inbound webhook "
            "(POST /hooks/{key}) whose trigger has a secret takes signed calls instead."
        ),
        # The stock /docs page loads Swagger UI from a CDN; ours serves the vendored copy.
        docs_url=None,
        redoc_url=None,
    )
    app.state.context = ctx
    # Failed sign-ins are counted in memory, per app: per server process (several `crmflow
    # serve` processes each count on their own, so N of them allow N times the attempts), and
    # two apps in one process (tests) do not share their counts.
    app.state.sign_in_throttle = SignInThrottle()
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="crmflow API",
            swagger_js_url="/static/swagger-ui/swagger-ui-bundle.js",
            swagger_css_url="/static/swagger-ui/swagger-ui.css",
            swagger_favicon_url="/static/swagger-ui/favicon-32x32.png",
        )

    @app.exception_handler(CrmflowError)
    def _crmflow_error(_request: Request, exc: CrmflowError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, AuthenticationError) else None
        if isinstance(exc, TooManyRequestsError):
            headers = {"Retry-After": str(exc.retry_after)}
        return JSONResponse(exc.as_dict(), status_code=exc.status_code, headers=headers)

    @app.exception_handler(Exception)
    def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # The last resort: every input crmflow refuses is refused as a CrmflowError where it is
        # checked; what reaches here is a bug. Starlette re-raises it after this answer, so the
        # server logs its traceback; the caller gets no traceback.
        log.error("%s %s failed: %s", request.method, request.url.path, type(exc).__name__)
        return JSONResponse(
            {
                "error": "InternalError",
                "message": "the server failed on this request (a bug, logged with its "
                "traceback); try again, and report it if it happens again",
            },
            status_code=500,
        )

    # Outermost of the app's own layers: it sees the body before any route reads it.
    app.add_middleware(RequestGuard, max_body_bytes=ctx.settings.max_request_bytes)
    for module in (
        meta,
        metrics,
        users,
        record_types,
        record_files,  # before records: /records/{id}/files is not /records/{type}/{id}
        records,
        record_groups,
        queries,
        flows,
        flow_test_mode,
        enrollments,
        triggers,
        hooks,
        mail,
        templates,
        suppressions,
        approval_links,
        tasks,
        notifications,
        jobs,
    ):
        app.include_router(module.router)
    declare_error_responses(app)
    return app
