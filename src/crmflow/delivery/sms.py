"""SMS: an outbox `sms` payload -> its number in E.164 -> a provider.

Providers are `SmsProvider`s: the generic HTTP provider posts to CRMFLOW_SMS_URL (the body made
from CRMFLOW_SMS_BODY, CRMFLOW_SMS_AUTH_HEADER sent with it, the same address checks and timeouts
as webhooks); with no CRMFLOW_SMS_URL the SMS log keeps each message on its outbox row (status
`caught`, like the mail catcher) and nothing leaves the machine.

Numbers are normalised at send (`to_e164`): a record's phone may be written any way; one that is
not a valid international number fails the message at once, saying why.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Protocol
from urllib.parse import quote_plus

import httpx

from crmflow.delivery.email import DeliveryError, Sent
from crmflow.delivery.http import new_client, post_checked
from crmflow.engine.actions.send_sms import to_e164
from crmflow.engine.commands import SmsPayload
from crmflow.settings import Settings

__all__ = ["HttpSmsProvider", "LogSmsProvider", "SmsProvider", "SmsSender", "sms_provider_for"]


class SmsProvider(Protocol):
    """Sends one SMS to `number` (E.164); `key` is the message's idempotency key, for providers
    that take one."""

    def send(self, number: str, text: str, key: str, now: datetime) -> Sent: ...

    def close(self) -> None: ...


class LogSmsProvider:
    """Keeps each SMS on its outbox row (`caught`) instead of sending it."""

    def send(self, number: str, text: str, key: str, now: datetime) -> Sent:
        return Sent(reply="caught", caught=f"To: {number}\n\n{text}")

    def close(self) -> None:
        pass


def render_body(template: str, number: str, text: str) -> tuple[bytes, str]:
    """CRMFLOW_SMS_BODY with {to} and {text} replaced, and its content type: a body that starts
    with { or [ is JSON (the values JSON-escaped, so a quote in the text cannot break it), any
    other a form (the values URL-encoded)."""
    as_json = template.lstrip().startswith(("{", "["))

    def escape(value: str) -> str:
        return json.dumps(value)[1:-1] if as_json else quote_plus(value)

    content_type = "application/json" if as_json else "application/x-www-form-urlencoded"
    body = template.replace("{to}", escape(number)).replace("{text}", escape(text))
    return body.encode("utf-8"), content_type


class HttpSmsProvider:
    """Posts each SMS to CRMFLOW_SMS_URL over one HTTP client."""

    def __init__(self, settings: Settings, client: httpx.Client | None = None) -> None:
        assert settings.sms_url, "the HTTP provider needs CRMFLOW_SMS_URL"
        self.settings = settings
        self.url = settings.sms_url
        self.client = client if client is not None else new_client()

    def send(self, number: str, text: str, key: str, now: datetime) -> Sent:
        body, content_type = render_body(self.settings.sms_body, number, text)
        headers = {"content-type": content_type, "idempotency-key": key}
        if self.settings.sms_auth_header:
            name, _, value = self.settings.sms_auth_header.partition(":")
            headers[name.strip().lower()] = value.strip()
        return post_checked(
            self.client,
            method="POST",
            url=self.url,
            headers=headers,
            body=body,
            settings=self.settings,
            now=now,
        )

    def close(self) -> None:
        self.client.close()


def sms_provider_for(settings: Settings) -> SmsProvider:
    """The HTTP provider for CRMFLOW_SMS_URL, or the SMS log when there is none."""
    if settings.sms_url:
        return HttpSmsProvider(settings)
    return LogSmsProvider()


class SmsSender:
    """An SMS payload normalised and handed to the provider."""

    def __init__(self, provider: SmsProvider) -> None:
        self.provider = provider

    def send(self, payload: SmsPayload, key: str, now: datetime) -> Sent:
        try:
            number = to_e164(payload.to)
        except ValueError as exc:
            raise DeliveryError(f"not sent: {exc}", permanent=True) from None
        return self.provider.send(number, payload.text, key, now)

    def close(self) -> None:
        self.provider.close()
