"""The small HTML pages people reach from a link in an email (unsubscribe, approval): one
plain page shape, its title and body escaped by the caller where they hold data."""

from __future__ import annotations

import html

from fastapi.responses import HTMLResponse

from crmflow.errors import CrmflowError

__all__ = ["page", "refused"]

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport"
content="width=device-width, initial-scale=1"><meta name="robots" content="noindex">
<title>{title}</title></head>
<body style="font-family: sans-serif; max-width: 36em; margin: 3em auto; padding: 0 1em">
<h1 style="font-size: 1.4em">{title}</h1>
{body}
</body></html>
"""


def page(title: str, body: str, status_code: int = 200) -> HTMLResponse:
    """A page: `title` is escaped here, `body` is HTML the caller built (escaping its data)."""
    return HTMLResponse(_PAGE.format(title=html.escape(title), body=body), status_code)


def refused(exc: CrmflowError, status_code: int | None = None) -> HTMLResponse:
    """The page of a link that does not work, saying why (status: the error's, or given)."""
    body = f"<p>{html.escape(exc.message)}</p>"
    return page("This link does not work", body, status_code or exc.status_code)
