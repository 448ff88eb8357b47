"""The answers of the record routes: records and their pages, change events, import reports,
record types, record groups (lists of records) and the not-entered decisions of triggers.

Timestamps are the strings the services render (`datetime.isoformat()`, e.g.
`2026-11-23T10:00:00+00:00`): typed `str` with the `date-time` format, so that pydantic passes
them through unchanged instead of re-rendering them."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from crmflow.api.responses.errors import ProblemBody
from crmflow.engine.recordtypes import FieldType

__all__ = [
    "ImportReport",
    "ImportRowError",
    "NextAfter",
    "NotEnteredDecision",
    "NotEnteredList",
    "Record",
    "RecordChange",
    "RecordChangePage",
    "RecordGroup",
    "RecordPage",
    "RecordType",
    "RecordTypeField",
    "SyncReport",
    "Timestamp",
]

Timestamp = Annotated[
    str,
    Field(
        json_schema_extra={"format": "date-time"},
        description="ISO 8601 date and time with its UTC offset",
    ),
]
NextAfter = Annotated[
    int | None,
    Field(description="Pass it back as `after` for the next page; null on the last page"),
]


class Record(BaseModel):
    """A record of any type: its typed fields are in `data`."""

    id: int
    type: str = Field(description="The record type's key (contact, company, ...)")
    version: int = Field(
        description="One more on every write; also the ETag: send it back as If-Match"
    )
    external_id: str | None = Field(
        default=None,
        description="The id an existing CRM knows the record by (unique per type); null if none",
    )
    owner_id: int | None = Field(description="The owning user's id; null when nobody owns it")
    owner: str | None = Field(description="The owning user's username; null when nobody owns it")
    created_at: Timestamp
    updated_at: Timestamp
    data: dict[str, Any] = Field(
        description="The field values by field key, in their stored form (dates `YYYY-MM-DD`, "
        "datetimes UTC `YYYY-MM-DDTHH:MM:SSZ`, users and references as ids)"
    )


class RecordPage(BaseModel):
    """One page of records, by id."""

    items: list[Record]
    next_after: NextAfter


class RecordChange(BaseModel):
    """One change event of a record: what triggers flows."""

    id: int = Field(description="The position in the change feed")
    record_id: int = Field(description="The record's id (the record may since be deleted)")
    record_type: str
    kind: Literal["created", "updated", "deleted"]
    before: dict[str, Any] | None = Field(
        description="The values before the change (field keys, and `_owner_id`); null on creation"
    )
    after: dict[str, Any] | None = Field(
        description="The values after the change (field keys, and `_owner_id`); null on deletion"
    )
    changed_fields: list[str] = Field(
        description="The keys whose value differs between before and after, sorted"
    )
    actor_id: int | None = Field(description="Who made the change; null when unknown")
    actor: str | None = Field(description="The username of who made the change")
    at: Timestamp


class RecordChangePage(BaseModel):
    """One page of change events, oldest first."""

    items: list[RecordChange]
    next_after: NextAfter


class ImportRowError(BaseModel):
    line: int = Field(description="The refused row's line in the file (1-based)")
    problems: list[ProblemBody]


class ImportReport(BaseModel):
    """What a bulk import did."""

    type: str = Field(description="The record type imported into")
    source: str = Field(description="The name of the file imported")
    all_or_nothing: bool = Field(description="Whether one bad row refused the whole file")
    upsert_by: str | None = Field(
        description="What names an existing record to update (`external_id` or a field key); "
        "null: every good row adds a record"
    )
    read: int = Field(description="Rows read")
    imported: int = Field(description="Records created")
    updated: int = Field(description="Records updated (with `upsert_by`)")
    unchanged: int = Field(description="Rows that named a record already as they are")
    rejected: int = Field(description="Rows refused")
    last_line: int = Field(description="The last line read: how far the import got")
    errors: list[ImportRowError] = Field(description="The refused rows, the first 1000 of them")
    errors_not_listed: int = Field(description="Refused rows past the ones listed in `errors`")


class SyncReport(BaseModel):
    """What a batch of changes from an existing CRM did (docs/integrations.md)."""

    type: str = Field(description="The record type the changes are to")
    read: int = Field(description="Lines read (blank lines are skipped)")
    created: int = Field(description="Records created by an upsert")
    updated: int = Field(description="Records changed by an upsert")
    unchanged: int = Field(description="Upserts that found the record already as they say")
    deleted: int = Field(description="Records deleted")
    absent: int = Field(description="Deletes of an external id no record has (nothing to do)")
    rejected: int = Field(description="Lines refused; every other line was applied")
    errors: list[ImportRowError] = Field(
        description="The refused lines, by line number, the first 1000 of them"
    )
    errors_not_listed: int = Field(description="Refused lines past the ones listed in `errors`")


class RecordTypeField(BaseModel):
    """A typed field of a record type. `required`, `choices` and `reference_type` are present
    only when set."""

    key: str
    type: FieldType
    label: str
    required: bool = Field(default=False, description="Present (true) only on required fields")
    choices: list[str] = Field(
        default_factory=list, description="The allowed values of a choice field"
    )
    reference_type: str | None = Field(
        default=None, description="The record type a reference field points to"
    )


class RecordType(BaseModel):
    key: str
    name: str
    builtin: bool = Field(description="Built in (contact, company, ...): it cannot be removed")
    fields: list[RecordTypeField]


class RecordGroup(BaseModel):
    """A list of records, the target of the add_to_group / remove_from_group actions."""

    id: int
    name: str
    description: str
    members: int = Field(description="How many records are in the list")
    created_at: Timestamp


class NotEnteredDecision(BaseModel):
    """A record a trigger proposed for a flow that did not enter it, and why."""

    id: int
    flow: str = Field(description="The flow's key")
    record_id: int
    trigger: str = Field(description="The trigger's type (record_created, schedule, ...)")
    change_id: int | None = Field(description="The change event that proposed it, if any")
    reason: str = Field(description="Why it did not enter (entry condition false, ...)")
    at: Timestamp


class NotEnteredList(BaseModel):
    """The not-entered decisions, newest first."""

    items: list[NotEnteredDecision]
