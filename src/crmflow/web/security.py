"""Security headers on the web pages: a Content-Security-Policy that allows the server only,
no framing, and no referrer to other sites. API answers keep their own (the Swagger UI page at
/docs has inline script).

No copy of an answer with data is kept: every web page (a signed-in user's records, an admin's
user list) and every API answer but the API's documentation says `Cache-Control: no-store`, so
that Back after signing out, or the next user of a shared computer, finds nothing on disk. An
API answer with an ETag (a record, a saved query, a flow, a file) says `no-cache, private`
instead: a client may keep it and must ask again each time (If-None-Match, 304). Static files
(/static/...) keep their caching, and an answer that sets its own Cache-Control keeps it."""

from __future__ import annotations

import json
from pathlib import Path

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["CONTENT_SECURITY_POLICY", "IMPORT_MAP", "SecurityHeaders", "is_api_path"]

_VENDOR = Path(__file__).parent / "static" / "vendor"
# CodeMirror's ES modules are resolved by an import map, which Chromium only takes inline: the
# policy allows that one script by its hash (scripts/vendor-frontend.sh writes both). A page
# inlines IMPORT_MAP's exact text, unescaped (`{{ import_map | safe }}`), before its modules.
IMPORT_MAP = (_VENDOR / "codemirror" / "importmap.json").read_text(encoding="utf-8")
_IMPORT_MAP_HASH = json.loads((_VENDOR / "vendor.json").read_text(encoding="utf-8"))[
    "importmap_csp_source"
]

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        f"script-src 'self' '{_IMPORT_MAP_HASH}'",
        # Inline styles, not scripts: mermaid styles the diagrams it draws and CodeMirror its
        # editor with <style> elements. Styles cannot run code; scripts stay 'self' only.
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "font-src 'self'",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
_HEADERS = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (b"x-content-type-options", b"nosniff"),
]
_NO_STORE = (b"cache-control", b"no-store")
_REVALIDATE = (b"cache-control", b"no-cache, private")
# Paths the API (crmflow.api) answers, with JSON or pages of its own.
_API_PREFIXES = ("/api/", "/hooks/", "/a/", "/u/")
_API_PATHS = ("/api", "/docs", "/openapi.json")


def is_api_path(path: str) -> bool:
    """Whether `path` belongs to the API (JSON errors) rather than to the web pages."""
    if path in _API_PATHS or path.startswith(_API_PREFIXES):
        return True
    return path.startswith("/static/") and not path.startswith("/static/web/")


def _kept_from_caches(path: str) -> bool:
    """Whether the answers of `path` carry data no cache may keep: all but the static files and
    the API's documentation."""
    return not (path.startswith("/static/") or path in ("/docs", "/openapi.json"))


class SecurityHeaders:
    """ASGI middleware: adds the headers above to every answer of a web path, and the
    Cache-Control of an answer with data (see the module's docstring) to web and API paths."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        api = is_api_path(path)
        uncached = _kept_from_caches(path)
        if api and not uncached:
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                extra = [] if api else [(n, v) for n, v in _HEADERS if n not in present]
                if uncached and b"cache-control" not in present:
                    revalidated = api and (b"etag" in present or message["status"] == 304)
                    extra.append(_REVALIDATE if revalidated else _NO_STORE)
                message["headers"] = [*headers, *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)
