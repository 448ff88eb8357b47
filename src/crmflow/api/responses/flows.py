"""The answers of the flows routes (`/api/flows...`) and of inbound webhooks (`/hooks/{key}`).

Times are the ISO 8601 strings the services write (`2026-11-23T10:00:00+00:00`), kept as strings
so that the JSON is byte for byte what it was: a datetime field would re-render them (`Z`)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from crmflow.api.responses.errors import ProblemBody
from crmflow.engine.definition import FlowStatus
from crmflow.engine.definition.flow import Visibility
from crmflow.engine.runtime import EnrollmentStatus

__all__ = [
    "FailingTrigger",
    "Flow",
    "FlowChange",
    "FlowSummary",
    "FlowValidated",
    "FlowVersion",
    "HookAnswer",
    "HookEntered",
    "HookNotEntered",
    "HookReplay",
    "HookResult",
    "HookRun",
    "StartList",
    "StepImpact",
    "Timestamp",
]

Timestamp = Annotated[str, Field(json_schema_extra={"format": "date-time"})]
FreeForm = dict[str, Any]


class FlowSummary(BaseModel):
    """A flow as lists show it: its status, version, access and dates (no document)."""

    key: str
    name: str
    record_type: str
    status: FlowStatus
    version: int = Field(description="The current version of the document (1, 2, ...)")
    revision: int = Field(
        description="One more on every change (edit, status, members): the ETag, to send back "
        "as If-Match"
    )
    owner: str | None = Field(description="The owner's username (null: none)")
    visibility: Visibility
    members: list[str] = Field(description="Usernames of the members (who see a private flow)")
    start_at: Timestamp | None = Field(description="When the flow starts on its own, if set")
    archive_at: Timestamp | None = Field(description="When the flow is archived on its own")
    started_at: Timestamp | None = Field(description="When the flow was first started")
    created_at: Timestamp
    updated_at: Timestamp
    records_inside: int = Field(description="Records inside the flow now (active or waiting)")


class Flow(FlowSummary):
    """A flow with its current document (created, or after a status change)."""

    document: FreeForm = Field(
        description="The current version's document as JSON, with the flow's status and "
        "members as they are now (see GET /api/schema/flow)"
    )


class FailingTrigger(BaseModel):
    """A trigger whose last runs raised (e.g. its saved query went bad): retried with backoff.
    Listed by GET /api/flows/{key}/trigger-failures, apart from the flow, whose ETag (its
    revision) does not change when a trigger starts or stops failing."""

    trigger_index: int = Field(description="0-based position in the document's `triggers`")
    trigger_type: str
    failures: int = Field(description="Failures in a row")
    last_error: str
    first_failed_at: Timestamp
    last_failed_at: Timestamp
    retry_at: Timestamp = Field(description="When the trigger is tried again")


class FlowValidated(BaseModel):
    """A valid document (an invalid one is a 422 listing every problem)."""

    valid: Literal[True]
    key: str
    steps: int = Field(description="How many steps the document has")
    warnings: list[ProblemBody] = Field(
        default_factory=list,
        description="What does not make the flow invalid but may surprise (a template showing "
        "a field that may be empty), each with its path and a hint",
    )


class FlowVersion(BaseModel):
    """One version of a flow's document, as it was saved."""

    key: str
    version: int
    document: FreeForm = Field(description="The validated document as JSON")
    source: str = Field(description="The text as it was sent (YAML or JSON)")
    source_format: Literal["yaml", "json"]
    created_at: Timestamp


class FlowChange(BaseModel):
    """One line of a flow's history: a status change, an edit or a change of members."""

    at: Timestamp
    actor: str | None = Field(description="Who made the change (null: crmflow itself)")
    from_: FlowStatus | None = Field(alias="from", description="null when the flow was created")
    to: FlowStatus
    version: int = Field(description="The document's version after the change")
    note: str


class StartList(BaseModel):
    """How many records starting the flow would enter now."""

    key: str
    has_start_list: bool = Field(description="Whether the flow has start lists")
    count: int | None = Field(
        description="Records in its start lists now (null: none); confirm a start with it"
    )


class StepImpact(BaseModel):
    """Records at one step of an older version, and what resuming does to them."""

    step: str
    records: int
    versions: list[int] = Field(description="The versions these records are on now")
    fate: Literal["stays", "restarts", "removed"] = Field(
        description="`removed`: the new version has no such step; say where its records go"
    )
    detail: str
    move_to: str | None = Field(description="For a removed step: the choice given, if any")


class HookRun(BaseModel):
    id: int = Field(description="The run (enrollment) id")
    status: EnrollmentStatus
    step: str | None = Field(description="The step it is at (null once it is over)")


class HookEntered(BaseModel):
    flow: str
    entered: Literal[True]
    run: HookRun


class HookNotEntered(BaseModel):
    flow: str
    entered: Literal[False]
    reason: str = Field(
        description="Why not: paused, draining, entry condition false, re-entry policy, ..."
    )


class _HookAnswerBase(BaseModel):
    hook: str = Field(description="The hook key called")
    record_id: int
    record_type: str
    entered: int = Field(description="How many flows the record entered")
    # Told apart by `entered` (true/false); not an OpenAPI discriminator, which must be a string.
    flows: list[HookEntered | HookNotEntered] = Field(
        description="Per flow: the run the record entered, or why it did not"
    )
    runs: str = Field(description="Where the record's runs are listed")


class HookAnswer(_HookAnswerBase):
    """What the call did."""


class HookReplay(_HookAnswerBase):
    """A signed call whose webhook-id was already taken: the first call's answer again."""

    replayed: Literal[True]
    message: str = Field(description="When the first call was taken: nothing started again")


# A replay is also a valid HookAnswer (its two more keys ignored): try it first.
HookResult = Annotated[HookReplay | HookAnswer, Field(union_mode="left_to_right")]
