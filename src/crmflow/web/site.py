"""The site: the API app with the web pages, their static files, error pages and headers."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from crmflow.api.app import create_app
from crmflow.services.context import Context
from crmflow.web.errors import install_error_pages
from crmflow.web.pages import routers
from crmflow.web.security import SecurityHeaders

__all__ = ["STATIC", "create_site"]

STATIC = Path(__file__).parent / "static"


def create_site(ctx: Context) -> FastAPI:
    """`crmflow.api.create_app(ctx)` plus the web application's pages at the root paths."""
    app = create_app(ctx)
    # Before the API's /static mount, which would otherwise take /static/web/... too.
    app.router.routes.insert(
        0, Mount("/static/web", app=StaticFiles(directory=STATIC), name="web-static")
    )
    for router in routers():
        app.include_router(router)
    install_error_pages(app)
    app.add_middleware(SecurityHeaders)
    return app
