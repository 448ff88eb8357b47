"""The `send_email` action's document: a templated email (an outbox message).

Text fields are Jinja2 templates rendered in a sandbox (see crmflow.engine.templates).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from crmflow.engine.definition.action_base import ActionBase

__all__ = ["SendEmailAction"]


def _one_or_many(value: Any) -> Any:
    # `to: someone@example.org` reads more naturally than a one-item list.
    return [value] if isinstance(value, str) else value


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
