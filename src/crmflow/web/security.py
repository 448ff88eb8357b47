"""Security headers on the web pages: a Content-Security-Policy that allows the server only,
no framing, and no referrer to other sites. API answers are left as they are (the Swagger UI
page at /docs has inline script)."""

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
# Paths the API (crmflow.api) answers, with JSON or pages of its own.
_API_PREFIXES = ("/api/", "/hooks/", "/a/", "/u/")
_API_PATHS = ("/api", "/docs", "/openapi.json")


def is_api_path(path: str) -> bool:
    """Whether `path` belongs to the API (JSON errors) rather than to the web pages."""
    if path in _API_PATHS or path.startswith(_API_PREFIXES):
        return True
    return path.startswith("/static/") and not path.startswith("/static/web/")


class SecurityHeaders:
    """ASGI middleware: adds the headers above to every answer of a web path."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or is_api_path(scope["path"]):
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(n, v) for n, v in _HEADERS if n not in present]
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)
