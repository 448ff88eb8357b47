"""The `send_sms` action's document: an SMS (an outbox message)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from crmflow.engine.definition.action_base import ActionBase

__all__ = ["SendSmsAction"]


class SendSmsAction(ActionBase):
    """An SMS; `to` defaults to the record's `phone` field."""

    type: Literal["send_sms"]
    to: str | None = None
    message: Annotated[str, Field(min_length=1, max_length=1600)]
