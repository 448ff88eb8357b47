"""send_sms: an SMS, rendered and written to the outbox."""

from __future__ import annotations

from crmflow.engine.actions.base import ActionContext, ActionResult
from crmflow.engine.actions.kind import ActionChecker, Kind
from crmflow.engine.actions.messaging import outbox_message
from crmflow.engine.commands import SmsPayload
from crmflow.engine.definition import ActionStep, SendSmsAction
from crmflow.engine.recordtypes import FieldType
from crmflow.engine.steps.scope import EvaluationError

__all__ = ["KIND"]


def check(checker: ActionChecker, path: str, action: SendSmsAction, step: ActionStep) -> None:
    if action.to is None:
        checker.check_default_field(path, "phone", FieldType.PHONE, "to")
    else:
        checker.check_text(f"{path}.to", action.to)
    checker.check_text(f"{path}.message", action.message)


def run(action: SendSmsAction, index: int, ctx: ActionContext) -> ActionResult:
    to = (
        ctx.render(action.to, field="to")
        if action.to
        else str(ctx.scope.record.values.get("phone") or "")
    )
    if not to.strip():
        raise EvaluationError("no recipient: the SMS has no `to` and the record no phone")
    payload = SmsPayload(to=to.strip(), text=ctx.render(action.message, field="message"))
    message = outbox_message(ctx, index, action.key, payload)
    return ActionResult((message,), message.describe())


KIND = Kind(SendSmsAction, check, run)
