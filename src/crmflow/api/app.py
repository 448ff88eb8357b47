"""The FastAPI application: routers per resource, errors rendered as JSON with their problems."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from crmflow import __version__
from crmflow.api import flows, meta, queries, record_types, records, users
from crmflow.errors import AuthenticationError, CrmflowError
from crmflow.services.context import Context

__all__ = ["create_app"]


def create_app(ctx: Context) -> FastAPI:
    app = FastAPI(
        title="crmflow",
        version=__version__,
        description=(
            "Process automation for CRMs. Every call needs `Authorization: Bearer <token>` "
            "(POST /api/auth/token exchanges a username and password for one)."
        ),
    )
    app.state.context = ctx

    @app.exception_handler(CrmflowError)
    def _crmflow_error(_request: Request, exc: CrmflowError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, AuthenticationError) else None
        return JSONResponse(exc.as_dict(), status_code=exc.status_code, headers=headers)

    for module in (meta, users, record_types, records, queries, flows):
        app.include_router(module.router)
    return app
