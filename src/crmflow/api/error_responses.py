"""The error answers of the API, declared in the OpenAPI document so that clients can be generated.

Every error crmflow refuses a request with has one JSON shape (`ErrorBody`, rendered from the
exception tree in `crmflow.errors`; a list of problems always by `crmflow.errors.refusal_body`).
Which statuses a route can answer follows from what the route is, so they are declared here from
the routes themselves rather than by hand on each of them:

- 401 and 403 on every route that needs a token (all but the health check and the sign-in);
- 404 on every route with a path parameter (an unknown key or id, or a private flow you may
  not see);
- 409 and 413 on every route that changes something (a state that does not allow it; a body over
  the configured limit);
- 412 on every route that takes `If-Match` (the row changed since it was read);
- 422 everywhere (a parameter, a body or a document that is refused, with its problems);
- 429 and 401 on the sign-in (too many failed attempts: `Retry-After` says when to try again);
- 503 on the health check (a worker or the database is not well).

A body that cannot be parsed at all is a 422 like any other refused input, not a bare 400.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from crmflow.api.responses.errors import ErrorBody, ProblemBody
from crmflow.errors import MAX_LISTED_PROBLEMS, Problem, refusal_body

__all__ = ["ErrorBody", "ProblemBody", "declare_error_responses"]

_WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


_DESCRIPTIONS = {
    401: "No token, or a token that is unknown or revoked; the message says how to get one",
    403: "Your role or the flow's membership does not allow this; the message says who may",
    404: "No such key or id (or a private flow you are not a member of)",
    409: "The current state does not allow it (the message says why and what to do)",
    412: "If-Match names a version that is no longer the current one: read it again",
    413: "The request body is larger than the server's limit (CRMFLOW_MAX_REQUEST_BYTES)",
    422: "Refused input: every problem with where it is and how to fix it",
    429: "Too many failed sign-ins: wait `retry_after` seconds (also the Retry-After header)",
    503: "A worker or the database is not well: the body says which",
}


def _statuses(method: str, path: str, operation: dict[str, Any]) -> set[int]:
    """What an operation can answer besides its success, from its place in the document."""
    if path == "/api/health":
        return {503}
    if path == "/api/auth/token":
        return {401, 413, 422, 429}
    statuses = {401, 403, 422}
    parameters = operation.get("parameters", [])
    if any(parameter.get("in") == "path" for parameter in parameters):
        statuses.add(404)
    if method.upper() in _WRITE_METHODS:
        statuses |= {409, 413}
    headers = {str(p.get("name", "")).lower() for p in parameters if p.get("in") == "header"}
    if "if-match" in headers:
        statuses.add(412)
    return statuses


def declare_error_responses(app: FastAPI) -> None:
    """Declare on every operation of the OpenAPI document the error statuses it can answer, with
    the ErrorBody schema (a route's own description of a status is kept), and render FastAPI's
    own refusals (an unparsable body, a parameter of the wrong type) in that shape."""
    plain_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = plain_openapi()
        schemas = document.setdefault("components", {}).setdefault("schemas", {})
        for model in (ProblemBody, ErrorBody):
            schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
            schema.pop("$defs", None)
            schemas[model.__name__] = schema
        error_content = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
        for path, operations in document.get("paths", {}).items():
            for method, operation in operations.items():
                responses = operation.setdefault("responses", {})
                for status in sorted(_statuses(method, path, operation)):
                    answer = responses.setdefault(str(status), {})
                    if status == 422:  # ours, not FastAPI's HTTPValidationError: one shape
                        answer["description"] = _DESCRIPTIONS[status]
                        answer["content"] = error_content
                    answer.setdefault("description", _DESCRIPTIONS[status])
                    answer.setdefault("content", error_content)
        app.openapi_schema = document
        return document

    app.openapi = openapi  # type: ignore[method-assign]
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)


async def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400:
        # FastAPI's "There was an error parsing the body": a refused input like any other.
        body = ErrorBody(
            error="InvalidInputError",
            message=f"the request body could not be read: {exc.detail}; send JSON (UTF-8) as "
            "the route's schema in /openapi.json describes",
        )
        return JSONResponse(body.model_dump(exclude_none=True), status_code=422)
    return JSONResponse(
        {"error": "HTTPError", "message": str(exc.detail)},
        status_code=exc.status_code,
        headers=getattr(exc, "headers", None),
    )


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    """A parameter or body FastAPI refused, rendered as every other refused input is (the same
    shape and cap); only the problems that will be listed are converted."""
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    problems = [
        Problem(
            ".".join(str(part) for part in error.get("loc", ()) if part != "body"),
            str(error.get("msg", "is not valid")),
            _validation_hint(error),
        )
        for error in errors[:MAX_LISTED_PROBLEMS]
    ]
    body = refusal_body("the request", problems, not_listed=len(errors) - len(problems))
    return JSONResponse(body, status_code=422)


def _validation_hint(error: Any) -> str:
    location = error.get("loc", ())
    if location and location[0] == "path":
        return "check the address: see /openapi.json for the parameter's type"
    if location and location[0] == "query":
        return "check the query string parameter"
    if location and location[0] == "header":
        return "check the request header"
    return "see the route's schema in /openapi.json"
