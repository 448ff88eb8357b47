"""The answers about records in flows: a run with its step runs, a record's runs and history,
a flow's list of runs and its progress. They mirror `crmflow.services.run_views` as_dict()."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field, WithJsonSchema

from crmflow.api.responses.records import NextAfter
from crmflow.engine.runtime import EnrollmentStatus

__all__ = [
    "ActionMessage",
    "FlowProgress",
    "HistoryEntry",
    "RecordRuns",
    "RunDetail",
    "RunPage",
    "RunSummary",
    "StepAction",
    "StepRun",
    "Timestamp",
]

# The views write times with datetime.isoformat(): declared a string (parsing it into a datetime
# would re-serialize it differently, e.g. "Z" for "+00:00") documented as a date-time.
Timestamp = Annotated[str, WithJsonSchema({"type": "string", "format": "date-time"})]


class ActionMessage(BaseModel):
    """The outbox message an action wrote, as it stands now."""

    kind: str = Field(description="email, sms, webhook, ...")
    status: str = Field(
        description="pending, sending, delivered, caught (kept by the mail catcher), retrying, "
        "failed, cancelled, or another state delivery gives (suppressed, test); what there is "
        "to know of it is in the fields below"
    )
    not_before: Timestamp = Field(description="Not sent before this time")
    attempts: int = Field(description="Delivery attempts made so far")
    delivered_at: Timestamp | None = Field(
        default=None, description="When the server accepted it (or the mail catcher kept it)"
    )
    next_attempt_at: Timestamp | None = Field(
        default=None, description="A retrying message: when it is tried again"
    )
    last_error: str | None = Field(
        default=None, description="Why the last attempt did not deliver (retrying, failed)"
    )
    server_reply: str | None = Field(
        default=None, description="The server's reply when it accepted the message"
    )


class StepAction(BaseModel):
    """What one action of a step run did, or why it did not."""

    index: int = Field(description="Position of the action in the step's `actions` list")
    key: str | None = Field(description="The action's key in the flow, when it has one")
    type: str = Field(description="The action type (send_email, update_record, ...)")
    status: str = Field(description="done, skipped or failed")
    detail: str = Field(description="What it did (e.g. 'email to a@b.org: Hello Ana') or why not")
    message: ActionMessage | None = Field(
        default=None,
        description="The message the action wrote, with its delivery state; the key is absent "
        "(never null) when the action wrote none",
    )


class StepRun(BaseModel):
    """One run of a step for the record (a step run again after a restart is a new run)."""

    run: int = Field(description="Run number within the enrollment, from 1")
    step: str = Field(description="The step's key")
    type: str = Field(description="The step type (action, wait, approval, end, ...)")
    status: str = Field(description="done, skipped, waiting, failed or ended")
    reason: str = Field(description="Why it went as it did, in words; may be empty")
    started_at: Timestamp
    finished_at: Timestamp | None = Field(description="null while the step holds the record")
    actions: list[StepAction]


class RunDetail(BaseModel):
    """One record's run through a flow (an enrollment): where it is and what each step did."""

    id: int = Field(description="The run (enrollment) id, used by /api/runs/{id}/...")
    flow: str = Field(description="The flow's key")
    flow_version: int = Field(description="The flow version the run follows")
    record_id: int
    status: EnrollmentStatus
    step: str | None = Field(description="The current (or last) step's key; null before entry")
    waiting_for: str = Field(description="What the current step waits for, in words; or empty")
    buttons: list[str] = Field(description="Keys of the buttons of the approval waited at")
    due_at: Timestamp | None = Field(description="When the run moves next, if it is due")
    entered_at: Timestamp
    finished_at: Timestamp | None = Field(description="null while the run goes on")
    end_reason: str = Field(description="Why the run ended, in words; empty while it goes on")
    emails: str = Field(
        description="Emails delivered (or kept by the mail catcher) / emails in the flow's "
        "sequence, e.g. '2/5'; an email written but not sent yet is not counted"
    )
    step_runs: list[StepRun] = Field(description="Each step run, oldest first")


class HistoryEntry(BaseModel):
    """A line of the record's history."""

    at: Timestamp
    enrollment_id: int | None = Field(description="The run it is about; null when none")
    message: str


class RecordRuns(BaseModel):
    """The flows a record is or was in (those the caller may see) and its history."""

    record_id: int
    record_type: str | None = Field(description="The record's type; null if it was deleted")
    flows: list[RunDetail] = Field(description="Its runs, oldest first")
    history: list[HistoryEntry]


class RunSummary(BaseModel):
    """One run in the list of a flow's runs."""

    id: int = Field(description="The run (enrollment) id")
    record_id: int
    record_name: str = Field(
        description="First and last name, or name / title; empty when the type has none"
    )
    status: EnrollmentStatus
    step: str | None = Field(description="The current (or last) step's key; null before entry")
    due_at: Timestamp | None = Field(description="When a running run moves next; null if ended")
    entered_at: Timestamp
    finished_at: Timestamp | None
    end_reason: str = Field(description="Why the run ended; empty while it goes on")


class RunPage(BaseModel):
    """A page of a flow's runs, in enrollment order."""

    items: list[RunSummary]
    next_after: NextAfter


class FlowProgress(BaseModel):
    """How a flow is doing."""

    flow: str = Field(description="The flow's key")
    entered: int = Field(description="Runs ever started")
    inside: int = Field(description="Runs going on (active or waiting)")
    finished: int
    left: int
    cancelled: int
    per_step: dict[str, int] = Field(
        description="Running records at each step now, by step key ('(not entered yet)' for "
        "those due to enter)"
    )
    funnel: dict[str, int] = Field(
        description="Records that went through each step (done or failed; an end step: "
        "reached), in step order"
    )
    emails: int = Field(description="Email messages the flow wrote to the outbox")
