"""send_sms: an SMS, rendered and written to the outbox."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field

from crmflow.engine.actions.base import ActionContext, ActionResult
from crmflow.engine.actions.kind import ActionChecker, Kind
from crmflow.engine.actions.on_failure import check_on_failure
from crmflow.engine.definition.delivery_policy import MessagingActionBase
from crmflow.engine.recordtypes import FieldType
from crmflow.engine.templates import is_template
from crmflow.errors import EvaluationError

if TYPE_CHECKING:
    from crmflow.engine.definition import ActionStep

__all__ = ["KIND", "SendSmsAction", "to_e164"]


class SendSmsAction(MessagingActionBase):
    """An SMS; `to` defaults to the record's `phone` field."""

    type: Literal["send_sms"]
    to: str | None = None
    message: Annotated[str, Field(min_length=1, max_length=1600)]


def to_e164(number: str) -> str:
    """`number` in E.164 (+40721234567), the form SMS providers take; ValueError says why it is
    not a number a message can go to. Numbers are written with their country code (+40 ...,
    0040 ...): there is no default country to guess one from."""
    # Imported here: phonenumbers loads its metadata on import (~30 ms), which `crmflow flows
    # validate` would pay for every flow otherwise.
    import phonenumbers  # noqa: PLC0415

    text = number.strip()
    if text.startswith("00"):
        text = "+" + text[2:]
    try:
        parsed = phonenumbers.parse(text, None)
    except phonenumbers.NumberParseException as exc:
        raise ValueError(
            f"{number!r} is not a phone number with its country code (+40 721 234 567): {exc}"
        ) from None
    if not phonenumbers.is_valid_number(parsed):
        raise ValueError(
            f"{number!r} is not a valid phone number (wrong length or no such number range "
            f"for +{parsed.country_code})"
        )
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def check(checker: ActionChecker, path: str, action: SendSmsAction, step: ActionStep) -> None:
    check_on_failure(checker, path, action, step)
    if action.to is None:
        checker.check_default_field(path, "phone", FieldType.PHONE, "to")
    elif is_template(action.to):
        checker.check_text(f"{path}.to", action.to)
    else:
        try:
            to_e164(action.to)
        except ValueError as exc:
            checker.add(f"{path}.to", str(exc), "or use a template")
    checker.check_text(f"{path}.message", action.message)


def run(action: SendSmsAction, index: int, ctx: ActionContext) -> ActionResult:
    from crmflow.engine.actions.messaging import outbox_message  # noqa: PLC0415 - runtime only
    from crmflow.engine.commands import SmsPayload  # noqa: PLC0415 - runtime only

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
