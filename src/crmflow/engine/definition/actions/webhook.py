"""The `webhook` action's document: an outbound HTTP call (an outbox message)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from crmflow.engine.definition.action_base import ActionBase

__all__ = ["WebhookAction"]


class WebhookAction(ActionBase):
    """An outbound HTTP call, signed with `secret` (Standard Webhooks) when given."""

    type: Literal["webhook"]
    url: Annotated[str, Field(pattern=r"^https?://\S+$")]
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    headers: dict[str, str] = Field(default_factory=dict)
    body: str | None = None
    secret: str | None = None
    timeout_seconds: Annotated[float, Field(gt=0, le=60, strict=False)] = 10.0
