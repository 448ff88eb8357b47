"""What routes depend on: the service Context and the authenticated Actor."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import AfterValidator, Field
from pydantic_core import PydanticCustomError

from crmflow.engine.recordtypes import MAX_ROW_ID
from crmflow.engine.source import decode_document
from crmflow.errors import AuthenticationError
from crmflow.services import users
from crmflow.services.context import Actor, Context

__all__ = [
    "AfterId",
    "CurrentActor",
    "PageLimit",
    "RowId",
    "ServiceContext",
    "VersionNumber",
    "raw_body",
]

_bearer = HTTPBearer(auto_error=False, description="An API token: `Authorization: Bearer crm_...`")


def get_context(request: Request) -> Context:
    context: Context = request.app.state.context
    return context


ServiceContext = Annotated[Context, Depends(get_context)]


def get_actor(
    ctx: ServiceContext,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Actor:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise AuthenticationError(
            "every API call needs `Authorization: Bearer <token>`; get a token with "
            "POST /api/auth/token or `crmflow users token USERNAME`"
        )
    return users.authenticate_token(ctx, credentials.credentials)


CurrentActor = Annotated[Actor, Depends(get_actor)]


# The range is checked by the services (`services.paging.page_size`), so that the API, the CLI
# and Python callers refuse the same values with the same message.
PageLimit = Annotated[
    int,
    Query(
        description="Items per page: from 1 to the server's page_size_max (1000 unless "
        "configured); other values are refused (422). Follow `next_after` for more."
    ),
]


def _row_id(value: int) -> int:
    if not 1 <= value <= MAX_ROW_ID:
        # A custom error, so that the message is ours alone (no "Value error, " before it).
        raise PydanticCustomError(
            "row_id",
            "{value} is out of range: ids and version numbers are whole numbers from 1 to "
            "{largest} (2^63-1); use one that a list or a create answered",
            {"value": value, "largest": MAX_ROW_ID},
        )
    return value


def _position(value: int) -> int:
    if not 0 <= value <= MAX_ROW_ID:
        raise PydanticCustomError(
            "row_position",
            "{value} is out of range: `after` is 0 (the start) or an id, at most {largest}; "
            "pass back the `next_after` of the previous page",
            {"value": value, "largest": MAX_ROW_ID},
        )
    return value


# Ids in paths, query strings and bodies: 64-bit on both databases. A larger number names no row,
# and SQLite's driver cannot even bind it, so it is refused (422) before any query is built.
RowId = Annotated[
    int,
    AfterValidator(_row_id),
    Field(json_schema_extra={"minimum": 1, "maximum": MAX_ROW_ID}),
]
# A flow's version number: a 32-bit integer column on both databases.
MAX_VERSION = 2**31 - 1


def _version_number(value: int) -> int:
    if not 1 <= value <= MAX_VERSION:
        raise PydanticCustomError(
            "version_number",
            "{value} is out of range: a version is from 1 to {largest} "
            "(GET /api/flows/{{key}} says which the flow has)",
            {"value": value, "largest": MAX_VERSION},
        )
    return value


VersionNumber = Annotated[
    int,
    AfterValidator(_version_number),
    Field(json_schema_extra={"minimum": 1, "maximum": MAX_VERSION}),
]
# The keyset cursor of a list (`?after=`): 0 or an id.
AfterId = Annotated[
    int,
    AfterValidator(_position),
    Field(
        description="Start after this id: pass back `next_after` from the previous page",
        json_schema_extra={"minimum": 0, "maximum": MAX_ROW_ID},
    ),
]


async def raw_body(request: Request) -> tuple[str, str]:
    """The request body as text, with its content type (flows come as YAML or JSON).

    Decoded strictly: a body that is not UTF-8 is refused (422, naming the byte), never saved
    with its bad bytes replaced."""
    body = await request.body()
    text = decode_document(body, source="request body", what="the request body")
    return text, request.headers.get("content-type", "")


# The three headers of a Standard Webhooks signature, as every signed route takes them.
WebhookId = Annotated[str | None, Header(description="Standard Webhooks: the call's id")]
WebhookTimestamp = Annotated[
    str | None, Header(description="Standard Webhooks: Unix seconds when signed")
]
WebhookSignature = Annotated[
    str | None, Header(description="Standard Webhooks: `v1,<base64 HMAC-SHA256>`")
]
