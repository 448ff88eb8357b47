"""send_email: a templated email, rendered completely and written to the outbox."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator

from crmflow.engine.actions.base import ActionContext, ActionResult
from crmflow.engine.actions.kind import ActionChecker, Kind
from crmflow.engine.actions.on_failure import check_on_failure
from crmflow.engine.definition.delivery_policy import MessagingActionBase
from crmflow.engine.recordtypes import FieldType
from crmflow.engine.recordtypes.values import normalise_email
from crmflow.engine.templates import is_template
from crmflow.errors import EvaluationError

if TYPE_CHECKING:
    from crmflow.engine.commands import RecordFileRef
    from crmflow.engine.definition import ActionStep

__all__ = ["KIND", "SendEmailAction"]


def _one_or_many(value: Any) -> Any:
    # `to: someone@example.org` reads more naturally than a one-item list.
    return [value] if isinstance(value, str) else value


class SendEmailAction(MessagingActionBase):
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
    # marketing: List-Unsubscribe headers, suppressed for an address that unsubscribed.
    category: Literal["marketing", "transactional"] = "marketing"
    # File fields of the record (`contract`) or of a record a reference field points to
    # (`company.logo`), sent as attachments; read by the dispatcher when it sends.
    attachments: list[str] = Field(default_factory=list)

    _one_or_many = field_validator("to", "cc", "bcc", "attachments", mode="before")(_one_or_many)


def check(checker: ActionChecker, path: str, action: SendEmailAction, step: ActionStep) -> None:
    check_on_failure(checker, path, action, step)
    extra = set(action.variables)
    for name, value in action.variables.items():
        if not name.isidentifier():
            checker.add(f"{path}.variables.{name}", f"{name!r} is not a valid variable name")
        checker.check_text(f"{path}.variables.{name}", value)
    if not action.to:
        checker.check_default_field(path, "email", FieldType.EMAIL, "to")
    for name in ("to", "cc", "bcc"):
        for index, address in enumerate(getattr(action, name)):
            _check_address(checker, f"{path}.{name}[{index}]", address)
    for name, address in (("from", action.from_), ("reply_to", action.reply_to)):
        if address is not None:
            _check_address(checker, f"{path}.{name}", address)
    checker.check_text(f"{path}.subject", action.subject, extra)
    if (action.body is None) == (action.template is None):
        checker.add(
            path,
            "an email needs exactly one of body (the text) or template (a stored template)",
        )
    if action.body is not None:
        checker.check_text(f"{path}.body", action.body, {*extra, "unsubscribe_url"})
    if action.template is not None:
        _check_stored_template(checker, path, action.template, {*extra, "unsubscribe_url"})
    for index, name in enumerate(action.attachments):
        _check_attachment(checker, f"{path}.attachments[{index}]", name)


def _check_attachment(checker: ActionChecker, path: str, name: str) -> None:
    """`name` is a file field of the record, or `reference.field` a file field of the record
    type a reference field points to."""
    rtype = checker.record_type
    if rtype is None:
        return
    if name.count(".") > 1 or not all(name.split(".")):
        checker.add(
            path,
            f"{name!r} is not a file field",
            "name a file field of the record (contract) or of a related record (company.logo)",
        )
        return
    if "." not in name:
        checker.check_field(path, name, {FieldType.FILE})
        return
    via, key = name.split(".")
    ref = checker.check_field(path, via, {FieldType.REFERENCE})
    if ref is None:
        return
    target = checker.scope.record_types.get(ref.reference_type or "")
    if target is None:
        return  # the record type's own check names the unknown type
    fdef = target.field(key)
    if fdef is None or fdef.type is not FieldType.FILE:
        files = [f.key for f in target.fields if f.type is FieldType.FILE]
        what = (
            f"the {target.key} record type (of {via}) has no field {key!r}"
            if fdef is None
            else f"{name!r} is a {fdef.type} field of the {target.key} record, not a file field"
        )
        checker.add(
            path,
            what,
            f"its file fields: {', '.join(files)}" if files else f"{target.key} has no file field",
        )


def _check_stored_template(
    checker: ActionChecker, path: str, name: str, variables: set[str]
) -> None:
    """The stored template's texts against the flow's record type and the action's variables,
    when the validator knows the templates (offline without --templates: not checked)."""
    templates = checker.scope.email_templates
    if templates is None:
        return
    found = templates.check(name, checker.record_type, variables)
    if found is None:
        checker.add(f"{path}.template", *templates.unknown(name))
        return
    for where, message, hint in found.problems:
        checker.add(f"{path}.template", f"the template {name!r}: {where}: {message}", hint)
    for where, message, hint in found.warnings:
        checker.warn(f"{path}.template", f"the template {name!r}: {where}: {message}", hint)


def _check_address(checker: ActionChecker, path: str, value: str) -> None:
    if is_template(value):
        checker.check_text(path, value)
        return
    address = value.rsplit("<", 1)[-1].rstrip(">").strip()
    try:
        normalise_email(address)  # plain addresses without loading email-validator (start-up)
    except ValueError as exc:
        reason = str(exc).split(": ", 1)[-1]
        checker.add(path, f"{value!r} is not an email address: {reason}", "or use a template")


def run(action: SendEmailAction, index: int, ctx: ActionContext) -> ActionResult:
    from crmflow.engine.actions.messaging import message_key, outbox_message  # noqa: PLC0415 - runtime only
    from crmflow.engine.commands import (  # noqa: PLC0415 - runtime only
        UNSUBSCRIBE_URL_MARKER,
        EmailPayload,
        message_id,
    )

    # Variables are templates themselves, rendered first without each other.
    variables = {
        name: ctx.render(text, field=f"variables.{name}") for name, text in action.variables.items()
    }
    # `{{ unsubscribe_url }}`: the recipient's link, put in at send (services.suppressions).
    texts = {"unsubscribe_url": UNSUBSCRIBE_URL_MARKER, **variables}
    to = _addresses(ctx, action.to, variables, "to")
    if not action.to:
        default = ctx.scope.record.values.get("email")
        if not default:
            raise EvaluationError("no recipient: the email has no `to` and the record no email")
        to = (str(default),)
    if not to:
        raise EvaluationError("no recipient: `to` rendered empty")
    sender = ctx.render(action.from_, variables, field="from") if action.from_ else None
    payload = EmailPayload(
        message_id=message_id(message_key(ctx, index, action.key), sender),
        from_address=sender,
        to=to,
        cc=_addresses(ctx, action.cc, variables, "cc"),
        bcc=_addresses(ctx, action.bcc, variables, "bcc"),
        reply_to=(
            ctx.render(action.reply_to, variables, field="reply_to") if action.reply_to else None
        ),
        subject=ctx.render(action.subject, variables, field="subject"),
        body=ctx.render(action.body, texts, field="body") if action.body is not None else None,
        template=action.template,
        variables=variables,
        archive=action.archive,
        record_id=ctx.scope.record.id,
        category=action.category,
        record_files=tuple(_file_ref(ctx, name) for name in action.attachments),
    )
    message = outbox_message(ctx, index, action.key, payload)
    return ActionResult((message,), message.describe())


def _file_ref(ctx: ActionContext, name: str) -> RecordFileRef:
    """Which record's file `name` names: the record's own, or (`company.logo`) the record its
    reference field points to; EvaluationError when that reference is empty."""
    from crmflow.engine.commands import RecordFileRef  # noqa: PLC0415 - runtime only

    record = ctx.scope.record
    if "." not in name:
        return RecordFileRef(record_id=record.id, field=name, label=name)
    via, key = name.split(".", 1)
    target = record.values.get(via)
    if type(target) is not int:
        raise EvaluationError(
            f"the attachment {name!r}: the record's {via} is empty, so there is no {via} "
            "record to take the file from"
        )
    return RecordFileRef(record_id=target, field=key, label=name)


def _addresses(
    ctx: ActionContext, items: list[str], variables: dict[str, str], field: str
) -> tuple[str, ...]:
    out: list[str] = []
    for number, item in enumerate(items):
        # One template may give several addresses ("a@x.org, b@x.org").
        rendered = ctx.render(item, variables, field=f"{field}[{number}]")
        out += [a.strip() for a in rendered.split(",") if a.strip()]
    return tuple(out)


KIND = Kind(SendEmailAction, check, run)
