"""What routes depend on: the service Context and the authenticated Actor."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from crmflow.engine.source import decode_document
from crmflow.errors import AuthenticationError
from crmflow.services import users
from crmflow.services.context import Actor, Context

__all__ = ["CurrentActor", "PageLimit", "ServiceContext", "raw_body"]

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


async def raw_body(request: Request) -> tuple[str, str]:
    """The request body as text, with its content type (flows come as YAML or JSON).

    Decoded strictly: a body that is not UTF-8 is refused (422, naming the byte), never saved
    with its bad bytes replaced."""
    body = await request.body()
    text = decode_document(body, source="request body", what="the request body")
    return text, request.headers.get("content-type", "")
