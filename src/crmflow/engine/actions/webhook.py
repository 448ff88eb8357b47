"""webhook: an outbound HTTP call, rendered and written to the outbox."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field

from crmflow.engine.actions.base import ActionContext, ActionResult
from crmflow.engine.actions.kind import ActionChecker, Kind
from crmflow.engine.actions.messaging import outbox_message
from crmflow.engine.actions.on_failure import check_on_failure
from crmflow.engine.commands import WebhookPayload
from crmflow.engine.definition.delivery_policy import MessagingActionBase

if TYPE_CHECKING:
    from crmflow.engine.definition import ActionStep

__all__ = ["KIND", "WebhookAction"]


class WebhookAction(MessagingActionBase):
    """An outbound HTTP call, signed with `secret` (Standard Webhooks) when given."""

    type: Literal["webhook"]
    url: Annotated[str, Field(pattern=r"^https?://\S+$")]
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    headers: dict[str, str] = Field(default_factory=dict)
    body: str | None = None
    secret: str | None = None
    timeout_seconds: Annotated[float, Field(gt=0, le=60, strict=False)] = 10.0


def check(checker: ActionChecker, path: str, action: WebhookAction, step: ActionStep) -> None:
    check_on_failure(checker, path, action, step)
    checker.check_text(f"{path}.url", action.url)
    for name, value in action.headers.items():
        checker.check_text(f"{path}.headers.{name}", value)
    if action.body is not None:
        checker.check_text(f"{path}.body", action.body)


def run(action: WebhookAction, index: int, ctx: ActionContext) -> ActionResult:
    payload = WebhookPayload(
        url=ctx.render(action.url, field="url"),
        method=action.method,
        headers={
            name: ctx.render(value, field=f"headers.{name}")
            for name, value in action.headers.items()
        },
        body=ctx.render(action.body, field="body") if action.body is not None else None,
        secret=action.secret,
        timeout_seconds=action.timeout_seconds,
    )
    message = outbox_message(ctx, index, action.key, payload)
    return ActionResult((message,), message.describe())


KIND = Kind(WebhookAction, check, run)
