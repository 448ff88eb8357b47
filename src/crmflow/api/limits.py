"""The HTTP edge: what a request may be before any route sees it.

`RequestGuard` is an ASGI middleware (it sees the body as the server receives it, chunk by chunk,
before FastAPI or a route buffers it):

- a body larger than `max_body_bytes` is refused with 413, up front when Content-Length says so,
  else as soon as the streamed bytes (chunked bodies too) pass the limit, so the server never
  holds more than the limit of one request in memory;
- a JSON body is read whole (it is parsed whole anyway) and checked before the route parses it:
  nesting depth, the length of each number (the caps of every document, `engine.source`), and
  text that no database stores the same way (a NUL character, which PostgreSQL refuses and SQLite
  keeps; a lone UTF-16 surrogate, which is not a character and cannot be encoded) are refused with
  422 naming the place in the body. Python's parser would otherwise answer deep nesting with
  RecursionError and a 100,000-digit number with ValueError, and the text would fail deep in the
  database driver. The check runs in a worker thread, not on the event loop: parsing a 10 MB
  body takes a second or more, and on the loop every other request (`/api/health` too) would
  wait for it. The routes (`GuardedRoute`) take the body as the guard parsed it instead of
  parsing it again on the loop;
- the address (path and query string) may not hold a NUL character either.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Awaitable, Callable, Coroutine, MutableMapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import anyio.to_thread
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response

from crmflow.engine.recordtypes import text_refusal
from crmflow.engine.source import MAX_NESTING_DEPTH, MAX_NUMBER_CHARS
from crmflow.errors import (
    MAX_LISTED_PROBLEMS,
    CrmflowError,
    InvalidInputError,
    PayloadTooLargeError,
    Problem,
)

__all__ = [
    "CheckedBody",
    "GuardedRoute",
    "RequestGuard",
    "check_json_body",
    "checked_raw_body",
    "json_body_refusal",
    "text_problem",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Where the guard leaves a JSON body it parsed, in the request's ASGI scope, for the route.
_PARSED_BODY = "crmflow.parsed_json_body"
# Set in the scope when the guard checked the body (a JSON content type): not checked again.
_CHECKED_BODY = "crmflow.checked_json_body"


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


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """What json.loads makes of an object, as it would by default. Being Python code, it lets
    the parsing thread hand over the GIL between objects: without it the C parser holds it for
    the whole body (a second for 5 MB of nested objects), and every other thread, the event
    loop's included, stands still meanwhile."""
    return dict(pairs)


def _loads(body: bytes) -> Any:
    return json.loads(body, object_pairs_hook=_object)


@dataclass(frozen=True)
class CheckedBody:
    """A JSON request body as the guard read it."""

    refusal: InvalidInputError | None  # why it may not reach the route, if it may not
    parsed: bool  # False: not JSON at all, which the route answers as any malformed body (422)
    value: Any = None  # what json.loads makes of it, when parsed and not refused


def check_json_body(body: bytes, what: str) -> CheckedBody:
    """Parse a JSON request body and find what makes it unsafe to hand to the route: each
    problem with its path, the first MAX_LISTED_PROBLEMS kept and the others counted.

    CPU-bound (a second or more for 10 MB): call it off the event loop.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        problem = Problem(
            "",
            f"the body is not UTF-8: byte 0x{body[exc.start]:02x} at offset {exc.start}",
            "send JSON encoded as UTF-8",
        )
        return CheckedBody(InvalidInputError(what, [problem]), parsed=False)
    try:
        value = json.loads(
            text, parse_int=_number(int), parse_float=_number(float), object_pairs_hook=_object
        )
    except RecursionError:
        return CheckedBody(InvalidInputError(what, [_too_deep_in_text(text)]), parsed=False)
    except ValueError:
        return CheckedBody(None, parsed=False)
    found = _Found()
    _walk(value, "", 0, found)
    if found.problems:
        refusal = InvalidInputError(what, found.problems, not_listed=found.not_listed)
        return CheckedBody(refusal, parsed=True)
    # No problem: no number was too long, so the value is exactly what json.loads makes.
    return CheckedBody(None, parsed=True, value=value)


def json_body_refusal(body: bytes, what: str) -> InvalidInputError | None:
    """Why a JSON body is unsafe to hand on (see `check_json_body`), or None when it is safe."""
    return check_json_body(body, what).refusal


async def checked_raw_body(request: Request, what: str) -> bytes:
    """The body exactly as sent, held to the bounds of every JSON body whatever its content
    type: checked here, in a worker thread, unless the guard already checked it (a JSON
    content type), so that a large body is not parsed twice for nothing."""
    body = await request.body()
    if body and not request.scope.get(_CHECKED_BODY):
        refusal = await anyio.to_thread.run_sync(json_body_refusal, body, what)
        if refusal is not None:
            raise refusal
    return body


class _Found:
    """The problems of a body: the first MAX_LISTED_PROBLEMS kept, the others only counted (a
    body of a million NUL strings must not make a million Problems)."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []
        self.not_listed = 0

    def add(self, problem: Problem) -> None:
        if len(self.problems) < MAX_LISTED_PROBLEMS:
            self.problems.append(problem)
        else:
            self.not_listed += 1


# What json.loads makes that is always fine as it is.
_FINE = frozenset({int, float, bool, type(None)})


def _walk(value: Any, path: str, depth: int, found: _Found) -> None:
    if isinstance(value, str):
        problem = text_problem(value, path)
        if problem is not None:
            found.add(problem)
        return
    if isinstance(value, _LongNumber):
        found.add(
            Problem(
                path,
                f"a number of {value.length:,} characters ({value.start}...)",
                f"numbers may have at most {MAX_NUMBER_CHARS} characters",
            )
        )
        return
    if not isinstance(value, dict | list):
        return
    if depth >= MAX_NESTING_DEPTH:
        found.add(
            Problem(
                path,
                f"the body is nested more than {MAX_NESTING_DEPTH} levels deep here",
                "flatten it: no request needs that depth",
            )
        )
        return
    if isinstance(value, list):
        for index, item in enumerate(value):
            # Long lists of numbers (a saved query's `in` values) cost no call per item.
            if type(item) not in _FINE:
                _walk(item, f"{path}[{index}]", depth + 1, found)
        return
    for key, item in value.items():
        problem = text_problem(key, f"{path}.{key!r}" if path else repr(key))
        if problem is not None:
            found.add(problem)
            continue
        if type(item) not in _FINE:
            _walk(item, f"{path}.{key}" if path else key, depth + 1, found)


_JSON_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)


def _too_deep_in_text(text: str) -> Problem:
    """Where nesting passes the cap, for a body too deep to parse at all."""
    depth = 0
    offset = 0
    for token in _JSON_TOKEN.finditer(text):
        mark = token.group()
        if mark in ("[", "{"):
            depth += 1
            if depth > MAX_NESTING_DEPTH:
                offset = token.start()
                break
        elif mark in ("]", "}"):
            depth -= 1
    line = text.count("\n", 0, offset) + 1
    return Problem(
        "",
        f"the body is nested more than {MAX_NESTING_DEPTH} levels deep (at offset {offset})",
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
        if _is_json(scope["method"], headers.get(b"content-type"), scope.get("path", "")):
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
        if body:
            # In a worker thread: the event loop goes on serving the other requests meanwhile.
            checked = await anyio.to_thread.run_sync(check_json_body, body, "the request body")
            if checked.refusal is not None:
                await _answer(send, checked.refusal)
                return
            scope[_CHECKED_BODY] = True
            if checked.parsed:
                scope[_PARSED_BODY] = checked.value  # for GuardedRoute: not parsed again
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


class _GuardedRequest(Request):
    """A request whose JSON body is the one the guard parsed (in a thread), if it did; else it
    is parsed in a thread here (never on the event loop)."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            if _PARSED_BODY in self.scope:
                self._json = self.scope[_PARSED_BODY]
            else:
                self._json = await anyio.to_thread.run_sync(_loads, await self.body())
        return self._json


class GuardedRoute(APIRoute):
    """The route class of every router: FastAPI reads a JSON body with `request.json()`, which
    would parse it again, on the event loop; this route hands it the guard's parse instead."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            return await handler(_GuardedRequest(request.scope, request.receive))

        return handle


# Routes whose body is a file, not JSON: a file sent without a content type (`curl -T`) is bytes.
_FILE_BODY_PATH = re.compile(r"/api/records/[^/]+/files/[^/]+")


def _is_json(method: str, content_type: bytes | None, path: str) -> bool:
    if content_type is None:
        # FastAPI reads a body without a content type as JSON, except where the body is a file.
        return method in _BODY_METHODS and not _FILE_BODY_PATH.fullmatch(path)
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
