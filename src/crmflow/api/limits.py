"""The HTTP edge: what a request may be before any route sees it.

`RequestGuard` is an ASGI middleware (it sees the body as the server receives it, chunk by chunk,
before FastAPI or a route buffers it):

- a body larger than `max_body_bytes` is refused with 413, up front when Content-Length says so,
  else as soon as the streamed bytes (chunked bodies too) pass the limit, so the server never
  holds more than the limit of one request in memory;
- a JSON body is read whole (it is parsed whole anyway) and checked before the route parses it:
  nesting depth, the length of each number, and text that no database stores the same way (a NUL
  character, which PostgreSQL refuses and SQLite keeps; a lone UTF-16 surrogate, which is not a
  character and cannot be encoded) are refused with 422 naming the place in the body. Python's
  parser would otherwise answer deep nesting with RecursionError and a 100,000-digit number with
  ValueError, and the text would fail deep in the database driver;
- the address (path and query string) may not hold a NUL character either.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qsl

from crmflow.engine.recordtypes import text_refusal
from crmflow.errors import CrmflowError, InvalidInputError, PayloadTooLargeError, Problem

__all__ = [
    "MAX_JSON_DEPTH",
    "MAX_NUMBER_CHARS",
    "RequestGuard",
    "json_body_problems",
    "text_problem",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# No request crmflow takes nests this deep (a saved query's groups are the deepest, a few levels);
# well below Python's recursion limit, so the check itself can never overflow the stack.
MAX_JSON_DEPTH = 64
# A JSON number longer than this is no amount, id or count: refused before int() spends
# quadratic time on it (Python refuses ints past 4,300 digits with ValueError anyway).
MAX_NUMBER_CHARS = 400
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def text_problem(text: str, where: str) -> Problem | None:
    """Why `text` cannot be stored as it is (a NUL or a lone surrogate), or None."""
    # Lengths are the fields' own business (and the body's size is capped): only the characters.
    refusal = text_refusal(text, max_chars=sys.maxsize)
    if refusal is None:
        return None
    return Problem(where, refusal, "text values are UTF-8 without NUL characters")


class _LongNumber:
    """Stands in for a number too long to convert, so the walk can report where it was."""

    def __init__(self, text: str) -> None:
        self.length = len(text)
        self.start = text[:12]


def _number(convert: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        if len(text) > MAX_NUMBER_CHARS:
            return _LongNumber(text)
        return convert(text)

    return parse


def json_body_problems(body: bytes) -> list[Problem]:
    """What makes a JSON request body unsafe to hand to the route: each problem with its path.

    A body that is not JSON at all is not a problem here: the route answers it (422) as it does
    any malformed body.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        return [
            Problem(
                "",
                f"the body is not UTF-8: byte 0x{body[exc.start]:02x} at offset {exc.start}",
                "send JSON encoded as UTF-8",
            )
        ]
    try:
        value = json.loads(text, parse_int=_number(int), parse_float=_number(float))
    except RecursionError:
        return [_too_deep_in_text(text)]
    except ValueError:
        return []
    problems: list[Problem] = []
    _walk(value, "", 0, problems)
    return problems


# What json.loads makes that is always fine as it is.
_FINE = frozenset({int, float, bool, type(None)})


def _walk(value: Any, path: str, depth: int, problems: list[Problem]) -> None:
    if len(problems) >= 20:
        return
    if isinstance(value, str):
        found = text_problem(value, path)
        if found is not None:
            problems.append(found)
        return
    if isinstance(value, _LongNumber):
        problems.append(
            Problem(
                path,
                f"a number of {value.length:,} characters ({value.start}...)",
                f"numbers may have at most {MAX_NUMBER_CHARS} characters",
            )
        )
        return
    if not isinstance(value, dict | list):
        return
    if depth >= MAX_JSON_DEPTH:
        problems.append(
            Problem(
                path,
                f"the body is nested more than {MAX_JSON_DEPTH} levels deep here",
                "flatten it: no request needs that depth",
            )
        )
        return
    if isinstance(value, list):
        for index, item in enumerate(value):
            # Long lists of numbers (a saved query's `in` values) cost no call per item.
            if type(item) not in _FINE:
                _walk(item, f"{path}[{index}]", depth + 1, problems)
        return
    for key, item in value.items():
        found = text_problem(key, f"{path}.{key!r}" if path else repr(key))
        if found is not None:
            problems.append(found)
            continue
        if type(item) not in _FINE:
            _walk(item, f"{path}.{key}" if path else key, depth + 1, problems)


_JSON_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)


def _too_deep_in_text(text: str) -> Problem:
    """Where nesting passes the cap, for a body too deep to parse at all."""
    depth = 0
    offset = 0
    for token in _JSON_TOKEN.finditer(text):
        mark = token.group()
        if mark in ("[", "{"):
            depth += 1
            if depth > MAX_JSON_DEPTH:
                offset = token.start()
                break
        elif mark in ("]", "}"):
            depth -= 1
    line = text.count("\n", 0, offset) + 1
    return Problem(
        "",
        f"the body is nested more than {MAX_JSON_DEPTH} levels deep (at offset {offset})",
        "flatten it: no request needs that depth",
        line=line,
    )


class RequestGuard:
    """The ASGI middleware described in the module text."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    def too_large(self) -> PayloadTooLargeError:
        return PayloadTooLargeError(
            f"the request body is larger than {self.max_body_bytes:,} bytes, the server's limit "
            "(setting max_request_bytes, environment CRMFLOW_MAX_REQUEST_BYTES): send less, "
            "e.g. split an import into several files, or ask the operator to raise the limit"
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        address = _address_problems(scope)
        if address:
            await _answer(send, InvalidInputError("the request address", address))
            return
        headers = {k.lower(): v for k, v in scope.get("headers", ())}
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            await _answer(send, self.too_large())
            return
        if _is_json(scope["method"], headers.get(b"content-type")):
            await self._json(scope, receive, send)
        else:
            await self._streamed(scope, receive, send)

    async def _json(self, scope: Scope, receive: Receive, send: Send) -> None:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                await _answer(send, self.too_large())
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        problems = json_body_problems(body) if body else []
        if problems:
            await _answer(send, InvalidInputError("the request body", problems))
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _streamed(self, scope: Scope, receive: Receive, send: Send) -> None:
        size = 0
        overflow = False
        started = False

        async def counted() -> Message:
            nonlocal size, overflow
            message = await receive()
            if message["type"] == "http.request":
                size += len(message.get("body", b""))
                if size > self.max_body_bytes:
                    overflow = True
                    raise self.too_large()
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            if overflow:
                # Whatever the route made of the interrupted read (FastAPI turns a failed form
                # parse into a 400), the answer is the 413.
                if message["type"] == "http.response.start" and not started:
                    started = True
                    await _answer(send, self.too_large())
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except PayloadTooLargeError:
            if not started:
                await _answer(send, self.too_large())


def _is_json(method: str, content_type: bytes | None) -> bool:
    if content_type is None:
        # FastAPI reads a body without a content type as JSON.
        return method in _BODY_METHODS
    media = content_type.split(b";", 1)[0].strip().lower()
    return media == b"application/json" or media.endswith(b"+json")


def _address_problems(scope: Scope) -> list[Problem]:
    problems: list[Problem] = []
    if "\x00" in scope.get("path", ""):
        problems.append(
            Problem("path", "the address contains a NUL character (%00)", "remove it from the URL")
        )
    query = scope.get("query_string", b"")
    if b"%00" in query or b"\x00" in query:
        for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
            if "\x00" in name or "\x00" in value:
                problems.append(
                    Problem(
                        f"query.{name.replace(chr(0), '%00')}",
                        "contains a NUL character (%00)",
                        "remove it from the query string",
                    )
                )
    return problems


async def _answer(send: Send, error: CrmflowError) -> None:
    body = json.dumps(error.as_dict()).encode("utf-8")
    await send(
        {
            "type": "http.response.start",
            "status": error.status_code,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode("ascii")),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})
