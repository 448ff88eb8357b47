"""Webhooks out: an outbox `webhook` payload -> one HTTP call, signed the Standard Webhooks way
when the flow gives a secret.

Each call carries `webhook-id` and `Idempotency-Key`, both the message's idempotency key, so
every attempt at a message carries the same ones and a receiver can tell a second copy (the
at-least-once window: docs/delivery.md). The address checks, timeouts and the sorting of the
answer are `crmflow.delivery.http`'s.
"""

from __future__ import annotations

from datetime import datetime

import httpx

from crmflow.delivery.email import DeliveryError, Sent
from crmflow.delivery.http import call_checked, new_client, post_checked
from crmflow.delivery.write_back import MAX_ANSWER_BYTES, WebhookSent
from crmflow.engine.commands import WebhookPayload
from crmflow.errors import InvalidInputError
from crmflow.services.webhook_signatures import sign
from crmflow.settings import Settings

__all__ = ["WebhookSender", "webhook_headers"]

USER_AGENT = "crmflow-webhooks"


def webhook_headers(payload: WebhookPayload, key: str, at: datetime, body: bytes) -> dict[str, str]:
    """The headers of a call: the flow's own, then the ones crmflow owns (they win over a flow
    header of the same name): JSON content type unless the flow names one, the Standard Webhooks
    id and timestamp, the signature when there is a secret, and Idempotency-Key."""
    headers = {name.lower(): value for name, value in payload.headers.items()}
    if body:
        headers.setdefault("content-type", "application/json")
    headers.setdefault("user-agent", USER_AGENT)
    headers["webhook-id"] = key
    headers["webhook-timestamp"] = str(int(at.timestamp()))
    headers["idempotency-key"] = key
    if payload.secret:
        try:
            headers["webhook-signature"] = sign(payload.secret, key, at, body)
        except InvalidInputError:
            raise DeliveryError(
                "the flow's webhook secret cannot sign (a whsec_ secret must be base64)",
                permanent=True,
            ) from None
    return headers


class WebhookSender:
    """Calls webhooks over one HTTP client per dispatcher."""

    def __init__(self, settings: Settings, client: httpx.Client | None = None) -> None:
        self.settings = settings
        self.client = client if client is not None else new_client()

    def send(self, payload: WebhookPayload, key: str, now: datetime) -> Sent:
        body = (payload.body or "").encode("utf-8")
        headers = webhook_headers(payload, key, now, body)
        if not payload.write_back:
            return post_checked(
                self.client,
                method=payload.method,
                url=payload.url,
                headers=headers,
                body=body or None,
                settings=self.settings,
                read_seconds=payload.timeout_seconds,
                now=now,
            )
        # The answer is written back (crmflow.delivery.write_back): read it whole (bounded),
        # as sent (the body is not inflated here: ask for none compressed).
        headers.setdefault("accept-encoding", "identity")
        sent, answer = call_checked(
            self.client,
            method=payload.method,
            url=payload.url,
            headers=headers,
            body=body or None,
            settings=self.settings,
            read_seconds=payload.timeout_seconds,
            now=now,
            read_bytes=MAX_ANSWER_BYTES,
        )
        return WebhookSent(sent.reply, payload=payload, answer=answer)

    def close(self) -> None:
        self.client.close()
