"""Actions that send something: an in-app notification, an email, an SMS, an outbound webhook.

Text fields are Jinja2 templates rendered in a sandbox (see crmflow.engine.templates).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator

from crmflow.engine.definition.action_base import ActionBase

__all__ = ["NotifyAction", "SendEmailAction", "SendSmsAction", "WebhookAction"]


def _one_or_many(value: Any) -> Any:
    # `to: someone@example.org` reads more naturally than a one-item list.
    return [value] if isinstance(value, str) else value


class NotifyAction(ActionBase):
    """An in-app notification to users and groups (and the step's responsible person)."""

    type: Literal["notify"]
    users: list[str] = Field(default_factory=list)
    groups: list[str] = Field(default_factory=list)
    responsible: bool = False
    message: str


class SendEmailAction(ActionBase):
    """A templated email; `to` defaults to the record's `email` field.

    `body` is the template text; `template` names a stored email template instead.
    """

    type: Literal["send_email"]
    from_: str | None = Field(default=None, alias="from")
    to: list[str] = Field(default_factory=list)
    cc: list[str] = Field(default_factory=list)
    bcc: list[str] = Field(default_factory=list)
    reply_to: str | None = None
    subject: str
    body: str | None = None
    template: str | None = None
    variables: dict[str, str] = Field(default_factory=dict)
    archive: bool = True

    _one_or_many = field_validator("to", "cc", "bcc", mode="before")(_one_or_many)


class SendSmsAction(ActionBase):
    """An SMS; `to` defaults to the record's `phone` field."""

    type: Literal["send_sms"]
    to: str | None = None
    message: Annotated[str, Field(min_length=1, max_length=1600)]


class WebhookAction(ActionBase):
    """An outbound HTTP call, signed with `secret` (Standard Webhooks) when given."""

    type: Literal["webhook"]
    url: Annotated[str, Field(pattern=r"^https?://\S+$")]
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    headers: dict[str, str] = Field(default_factory=dict)
    body: str | None = None
    secret: str | None = None
    timeout_seconds: Annotated[float, Field(gt=0, le=60, strict=False)] = 10.0
