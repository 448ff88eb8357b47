"""The effects a step transition asks for, as data: the store and the outbox carry them out.

Commands on crmflow's own data (record values, tasks, history, groups...) are applied by the
worker in the same transaction as the step. External effects (email, SMS, webhooks) become an
`OutboxMessage`, fully rendered, which the dispatcher delivers later. Each outbox message has an
idempotency key made from (enrollment id, step run number, action key or index): re-running the
same step run after a crash produces the same key, so a message is never sent twice. An email also
gets a Message-ID derived from that key, so a mail server can spot a duplicate too.

Every command says which enrollment, step run and action produced it. Commands are slotted
dataclasses with a `kind` tag (a batch makes one or more per record it moves, and a pydantic model
costs several times more to make); what they carry that is read from or written to JSON (an
assignee, an email's payload) is a pydantic model. `COMMANDS.dump_python(commands, mode="json")`
writes a list as JSON data and `COMMANDS.validate_python(data)` reads it back.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

__all__ = [
    "COMMANDS",
    "UNSUBSCRIBE_URL_MARKER",
    "AddToGroup",
    "AskByEmail",
    "AssignOwner",
    "Assignee",
    "Attachment",
    "Command",
    "CommandBase",
    "CreateRecord",
    "CreateTask",
    "EmailPayload",
    "EndFlow",
    "Notify",
    "OutboxMessage",
    "RecordFileRef",
    "RemoveFromGroup",
    "RunSql",
    "SetStatus",
    "SmsPayload",
    "StartFlow",
    "UpdateRecord",
    "WebhookPayload",
    "WriteHistory",
    "action_ref",
    "idempotency_key",
    "message_id",
]


def action_ref(action_key: str | None, action_index: int | None) -> str:
    """How an action is named in keys: its `key` when it has one, else `#<index>` in its step.

    The key wins because it survives re-ordering the actions of a step in a new version.
    """
    if action_key:
        return action_key
    if action_index is not None:
        return f"#{action_index}"
    return "step"


def idempotency_key(enrollment_id: int, step_run: int, ref: str) -> str:
    """`crmflow:<enrollment>:<step run>:<action>`: the same step run always gives the same key."""
    return f"crmflow:{enrollment_id}:{step_run}:{ref}"


def message_id(key: str, from_address: str | None = None) -> str:
    """A deterministic RFC 5322 Message-ID for the email of an idempotency key.

    The right-hand side is the sender's domain when there is one (what mail servers expect).
    """
    digest = hashlib.sha256(key.encode()).hexdigest()[:32]
    domain = "crmflow.local"
    if from_address and "@" in from_address:
        domain = from_address.rsplit("@", 1)[1].strip(" >").lower() or domain
    return f"<{digest}@{domain}>"


# A command is a value, never changed once made, but not frozen: a frozen dataclass sets each
# field through `object.__setattr__`, several times the cost of making one; `unsafe_hash` keeps
# them hashable as the frozen models they were. Keyword-only, as the models were.
@dataclass(slots=True, kw_only=True, unsafe_hash=True)
class CommandBase:
    """What every command carries: the enrollment, step run and action that produced it."""

    enrollment_id: int
    step_key: str
    step_run: int
    action_index: int | None = None  # position in the step's `actions` list; None: the step's own
    action_key: str | None = None

    @property
    def ref(self) -> str:
        return action_ref(self.action_key, self.action_index)

    def describe(self) -> str:  # pragma: no cover - every kind overrides it
        return self.__class__.__name__


@dataclass(slots=True, kw_only=True, unsafe_hash=True)
class UpdateRecord(CommandBase):
    kind: Literal["update_record"] = "update_record"
    values: dict[str, Any]

    def describe(self) -> str:
        return "update " + ", ".join([f"{k} = {v!r}" for k, v in self.values.items()])


@dataclass(slots=True, kw_only=True, unsafe_hash=True)
class SetStatus(CommandBase):
    kind: Literal["set_status"] = "set_status"
    status: str

    def describe(self) -> str:
        return f"set status {self.status!r}"


class Assignee(BaseModel):
    """A resolved responsibility: one user (username or id) or a group; `via` says how."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["user", "group"]
    ref: str | int
    via: str = ""
    # Why the responsibility fell back to the flow's controller ("the record's manager is
    # empty"); empty when it named someone.
    note: str = ""

    def named(self) -> str:
        """Who, and how they were found: "rita (manager of ana, the record's requester)"."""
        name = f"group {self.ref}" if self.kind == "group" else str(self.ref)
        return f"{name} ({self.via})" if self.via else name

    def __str__(self) -> str:
        return f"{self.named()}: {self.note}" if self.note else self.named()


@dataclass(slots=True, kw_only=True, unsafe_hash=True)
class CreateTask(CommandBase):
    """A task in a person's (or a group's) task list; an approval task carries its buttons."""

    kind: Literal["create_task"] = "create_task"
    title: str
    description: str = ""
    assignee: Assignee
    due_at: datetime | None = None
    buttons: tuple[tuple[str, str], ...] = ()  # approvals: (key, label) of each button
    # A due time set from a date of the record (`due: {field, offset_days}`): it moves with it.
    due_field: str | None = None
    due_offset_days: int = 0

    def describe(self) -> str:
        what = "approval" if self.buttons else "task"
        text = f"{what} for {self.assignee.named()}: {self.title}"
        if self.buttons:
            text += " [" + " / ".join(label for _, label in self.buttons) + "]"
        if self.due_at is not None:
            text += f" (due {self.due_at.isoformat()})"
        if self.assignee.note:
            text += f"; {self.assignee.note}"  # why the controller was asked
        return text


@dataclass(slots=True, kw_only=True, unsafe_hash=True)
class AskByEmail(CommandBase):
    """An approval's email to the person asked (each active member of a group asked): one
    signed link per button (`services.approval_links` signs them when the email is written)."""

    kind: Literal["ask_by_email"] = "ask_by_email"
    title: str
    assignee: Assignee
    buttons: tuple[tuple[str, str], ...]  # (key, label) of each button
    due_at: datetime | None = None

    def describe(self) -> str:
        return f"approval email to {self.assignee}: {self.title}"


@dataclass(slots=True, kw_only=True, unsafe_hash=True)
class Notify(CommandBase):
    kind: Literal["notify"] = "notify"
    users: tuple[str | int, ...] = ()
    groups: tuple[str, ...] = ()
    message: str

    def describe(self) -> str:
        to = [str(u) for u in self.users] + [f"group {g}" for g in self.groups]
        return f"notify {', '.join(to)}: {self.message}"


@dataclass(slots=True, kw_only=True, unsafe_hash=True)
class WriteHistory(CommandBase):
    kind: Literal["history"] = "history"
    message: str

    def describe(self) -> str:
        return f"history: {self.message}"


@dataclass(slots=True, kw_only=True, unsafe_hash=True)
class AddToGroup(CommandBase):
    kind: Literal["add_to_group"] = "add_to_group"
    group: str

    def describe(self) -> str:
        return f"add to group {self.group!r}"


@dataclass(slots=True, kw_only=True, unsafe_hash=True)
class RemoveFromGroup(CommandBase):
    kind: Literal["remove_from_group"] = "remove_from_group"
    group: str

    def describe(self) -> str:
        return f"remove from group {self.group!r}"


@dataclass(slots=True, kw_only=True, unsafe_hash=True)
class CreateRecord(CommandBase):
    """A related record; `link_field` of the new record points at `link_to` (this record)."""

    kind: Literal["create_record"] = "create_record"
    record_type: str
    values: dict[str, Any]
    link_field: str | None = None
    link_to: int | None = None
    invitation: Literal["ics"] | None = None

    def describe(self) -> str:
        return f"create a {self.record_type}: " + ", ".join(
            f"{k} = {v!r}" for k, v in self.values.items()
        )


@dataclass(slots=True, kw_only=True, unsafe_hash=True)
class AssignOwner(CommandBase):
    """The store picks the owner among the candidates, with its own counts (rotation, load)."""

    kind: Literal["assign_owner"] = "assign_owner"
    strategy: Literal["round_robin", "weighted", "least_loaded"]
    users: tuple[str, ...] = ()
    group: str | None = None
    weights: dict[str, int] = field(default_factory=dict)

    def describe(self) -> str:
        among = list(self.users) + ([f"group {self.group}"] if self.group else [])
        return f"assign an owner ({self.strategy.replace('_', ' ')}) among {', '.join(among)}"


@dataclass(slots=True, kw_only=True, unsafe_hash=True)
class StartFlow(CommandBase):
    """Start follow-up flow `flow` for record `record_id` at `at` (the end of the step + delay)."""

    kind: Literal["start_flow"] = "start_flow"
    flow: str
    record_id: int
    at: datetime

    def describe(self) -> str:
        return f"start flow {self.flow!r} for record {self.record_id} at {self.at.isoformat()}"


@dataclass(slots=True, kw_only=True, unsafe_hash=True)
class EndFlow(CommandBase):
    kind: Literal["end_flow"] = "end_flow"
    reason: str = ""

    def describe(self) -> str:
        return f"end the flow{': ' + self.reason if self.reason else ''}"


@dataclass(slots=True, kw_only=True, unsafe_hash=True)
class RunSql(CommandBase):
    """SQL with bound parameters; the store refuses it unless the server allows SQL actions."""

    kind: Literal["run_sql"] = "run_sql"
    sql: str
    params: dict[str, Any] = field(default_factory=dict)
    timeout_seconds: float = 5.0

    def describe(self) -> str:
        return f"run SQL: {self.sql[:80]}"


class Attachment(BaseModel):
    """A file sent with an email (e.g. the .ics invitation of an appointment)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    filename: str
    content_type: str
    content: str  # text content (an .ics file is text)


class RecordFileRef(BaseModel):
    """A file of a record an email carries (`attachments:` of send_email): a reference the
    dispatcher reads the bytes by when it sends, so the outbox never holds the file itself."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    record_id: int
    field: str
    label: str  # as the flow names it (`contract`, `company.logo`), for a failure's reason


# What `{{ unsubscribe_url }}` renders to in the engine; the dispatcher puts the recipient's
# signed link in its place (services.suppressions), the engine knowing no secret nor server.
UNSUBSCRIBE_URL_MARKER = "[[unsubscribe_url]]"


class EmailPayload(BaseModel):
    """A rendered email; `template` names a stored template the dispatcher renders instead of
    `body` (with `variables` and the record)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    channel: Literal["email"] = "email"
    message_id: str
    from_address: str | None = None  # None: the server's default sender
    to: tuple[str, ...]
    cc: tuple[str, ...] = ()
    bcc: tuple[str, ...] = ()
    reply_to: str | None = None
    subject: str
    body: str | None = None
    template: str | None = None
    variables: dict[str, str] = Field(default_factory=dict)
    archive: bool = True
    record_id: int | None = None
    attachments: tuple[Attachment, ...] = ()
    record_files: tuple[RecordFileRef, ...] = ()  # read from the record's files at send
    # marketing: List-Unsubscribe headers, not sent to an address that unsubscribed;
    # transactional: neither (a hard bounce still stops it). docs/delivery.md.
    category: Literal["marketing", "transactional"] = "marketing"

    def describe(self) -> str:
        text = f"email to {', '.join(self.to)}"
        if self.cc:
            text += f" (cc {', '.join(self.cc)})"
        text += f": {self.subject}"
        return text + (f" [template {self.template}]" if self.template else "")


class SmsPayload(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    channel: Literal["sms"] = "sms"
    to: str
    text: str

    def describe(self) -> str:
        return f"SMS to {self.to}: {self.text}"


class WebhookPayload(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    channel: Literal["webhook"] = "webhook"
    url: str
    method: str = "POST"
    headers: dict[str, str] = Field(default_factory=dict)
    body: str | None = None
    secret: str | None = None  # signs the call (Standard Webhooks); kept out of describe()
    timeout_seconds: float = 10.0
    # field -> "$.json.path": values of a 2xx JSON answer written to the record (`record_id`)
    write_back: dict[str, str] = Field(default_factory=dict)
    record_id: int | None = None

    def describe(self) -> str:
        return f"webhook {self.method} {self.url}"


@dataclass(slots=True, kw_only=True, unsafe_hash=True)
class OutboxMessage(CommandBase):
    """An external effect to deliver once: the dispatcher keys its delivery on `idempotency_key`.

    `not_before` is when it may leave (the end of the calendar's quiet hours, else the step's time).
    """

    kind: Literal["outbox"] = "outbox"
    idempotency_key: str
    not_before: datetime
    payload: Annotated[EmailPayload | SmsPayload | WebhookPayload, Field(discriminator="channel")]
    held: str | None = None  # why it waits past the step's time, in words (quiet hours)
    priority: int = 0  # 1: transactional, claimed before the bulk ones (docs/delivery.md)

    @property
    def channel(self) -> str:
        return self.payload.channel

    def describe(self) -> str:
        described = self.payload.describe()
        return f"{described}, {self.held}" if self.held else described


Command = Annotated[
    UpdateRecord
    | SetStatus
    | CreateTask
    | AskByEmail
    | Notify
    | WriteHistory
    | AddToGroup
    | RemoveFromGroup
    | CreateRecord
    | AssignOwner
    | StartFlow
    | EndFlow
    | RunSql
    | OutboxMessage,
    Field(discriminator="kind"),
]

COMMANDS: TypeAdapter[list[Command]] = TypeAdapter(list[Command])
