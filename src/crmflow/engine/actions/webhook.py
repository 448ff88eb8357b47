"""webhook: an outbound HTTP call, rendered and written to the outbox.

`write_back: {field: "$.path.in[0].answer"}` writes values of the call's 2xx JSON answer to the
record's fields at delivery (crmflow.delivery.write_back): each field is one of the record
type's, each path a JSON path of names and list positions.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field

from crmflow.engine.actions.base import ActionContext, ActionResult
from crmflow.engine.actions.kind import ActionChecker, Kind
from crmflow.engine.actions.on_failure import check_on_failure
from crmflow.engine.definition.delivery_policy import MessagingActionBase

if TYPE_CHECKING:
    from crmflow.engine.definition import ActionStep

__all__ = ["KIND", "MAX_WRITE_BACK", "WRITE_BACK_PATH", "WebhookAction", "json_path"]

# A JSON path: `$`, then `.name` or `[position]` steps ("$.data.items[0].id").
WRITE_BACK_PATH = r"^\$(\.[A-Za-z_][A-Za-z0-9_-]*|\[[0-9]{1,6}\])*$"
MAX_WRITE_BACK = 50  # fields one call may write back
_STEP = re.compile(r"\.([A-Za-z_][A-Za-z0-9_-]*)|\[([0-9]{1,6})\]")


def json_path(path: str) -> tuple[str | int, ...]:
    """The steps of a write-back path: names and list positions ("$.a[0]" -> ("a", 0))."""
    return tuple(
        name if name else int(position) for name, position in _STEP.findall(path.removeprefix("$"))
    )


class WebhookAction(MessagingActionBase):
    """An outbound HTTP call, signed with `secret` (Standard Webhooks) when given."""

    type: Literal["webhook"]
    url: Annotated[str, Field(pattern=r"^https?://\S+$")]
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    headers: dict[str, str] = Field(default_factory=dict)
    body: str | None = None
    secret: str | None = None
    timeout_seconds: Annotated[float, Field(gt=0, le=60, strict=False)] = 10.0
    # field -> JSON path in the 2xx answer: the value written to the record's field
    write_back: Annotated[
        dict[str, Annotated[str, Field(pattern=WRITE_BACK_PATH)]],
        Field(max_length=MAX_WRITE_BACK),
    ] = Field(default_factory=dict)


def check(checker: ActionChecker, path: str, action: WebhookAction, step: ActionStep) -> None:
    check_on_failure(checker, path, action, step)
    checker.check_text(f"{path}.url", action.url)
    for name, value in action.headers.items():
        checker.check_text(f"{path}.headers.{name}", value)
    if action.body is not None:
        checker.check_text(f"{path}.body", action.body)
    for field in action.write_back:
        checker.check_field(f"{path}.write_back.{field}", field)


def run(action: WebhookAction, index: int, ctx: ActionContext) -> ActionResult:
    from crmflow.engine.actions.messaging import outbox_message  # noqa: PLC0415 - runtime only
    from crmflow.engine.commands import WebhookPayload  # noqa: PLC0415 - runtime only

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
        write_back=dict(action.write_back),
        record_id=ctx.scope.record.id if action.write_back else None,
    )
    message = outbox_message(ctx, index, action.key, payload)
    return ActionResult((message,), message.describe())


KIND = Kind(WebhookAction, check, run)
