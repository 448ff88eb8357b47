"""Inbound webhooks: `POST /hooks/{key}` starts the flows whose `webhook` trigger has that key."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from crmflow.api.deps import ServiceContext, WebhookId, WebhookSignature, WebhookTimestamp
from crmflow.api.limits import GuardedRoute, checked_raw_body
from crmflow.api.responses.flows import HookResult
from crmflow.services import webhooks_in

router = APIRouter(tags=["hooks"], route_class=GuardedRoute)

_bearer = HTTPBearer(
    auto_error=False,
    description="For a hook whose trigger has no secret: an API token of a user who can see "
    "the flow",
)

_BODY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "The record to start the flows for: by id, or the one record whose fields "
    "equal `match` (of `record_type`, which may be left out when the hook's flows share one).",
    "properties": {
        "record_id": {"type": "integer"},
        "record_type": {"type": "string"},
        "match": {"type": "object", "additionalProperties": True},
    },
    "examples": [{"record_id": 123}, {"record_type": "contact", "match": {"email": "a@b.org"}}],
}


async def _body(request: Request) -> bytes:
    """The body exactly as sent: the signature is computed over these bytes. Whatever its
    content type, it is held to the bounds of every JSON body (depth, number length, text)
    before the service parses it."""
    return await checked_raw_body(request, "the call")


@router.post(
    "/hooks/{key}",
    response_model=HookResult,
    openapi_extra={
        "requestBody": {"required": True, "content": {"application/json": {"schema": _BODY_SCHEMA}}}
    },
    responses={
        401: {"description": "Not signed, badly signed, too old, or no API token: says which"},
        200: {
            "description": "Per flow, the run the record entered or why it did not; for a signed "
            "call whose webhook-id was already taken, that call's answer again, with "
            '`"replayed": true` and a message: nothing is started twice'
        },
        404: {"description": "No started flow you may call has this hook key, or no record"},
        409: {
            "description": "Several records match, or the webhook-id was already taken with "
            "another body"
        },
    },
)
def receive_hook(
    ctx: ServiceContext,
    key: str,
    body: Annotated[bytes, Depends(_body)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    webhook_id: WebhookId = None,
    webhook_timestamp: WebhookTimestamp = None,
    webhook_signature: WebhookSignature = None,
) -> dict[str, Any]:
    """Start, for the record the body names, every started flow whose `webhook` trigger has
    this key: signed (Standard Webhooks) when the trigger has a `secret`, else with an API token.
    Answers, per flow, the run the record entered or why it did not (paused, draining, entry
    condition false, re-entry policy, loop guard). A signed call is taken once per webhook-id:
    a retry or replay of it is answered 200 with the first answer, marked as already received
    (a sender takes a 2xx as delivered and retries anything else; see services.webhooks_in)."""
    signature = webhooks_in.Signature(webhook_id, webhook_timestamp, webhook_signature)
    token = credentials.credentials if credentials is not None else None
    return webhooks_in.receive_hook(ctx, key, body, signature=signature, token=token).as_dict()
