"""The mail catcher's emails (no CRMFLOW_SMTP_URL): those of the runs the caller can see."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from crmflow.api.deps import CurrentActor, PageLimit, RowId, ServiceContext
from crmflow.api.limits import GuardedRoute
from crmflow.api.responses.runs import Timestamp
from crmflow.services import mail

router = APIRouter(tags=["mail"], route_class=GuardedRoute)


class CaughtMailSummary(BaseModel):
    """An email the mail catcher kept instead of sending it."""

    id: int = Field(description="Its id (the outbox message's)")
    record_id: int | None = Field(description="The record whose run wrote it")
    flow: str | None = Field(description="The key of the flow that wrote it")
    to: list[str] = Field(description="Its To recipients")
    subject: str
    caught_at: Timestamp | None = Field(description="When the mail catcher kept it")


class CaughtMail(CaughtMailSummary):
    enrollment_id: int = Field(description="The run that wrote it")
    message: str = Field(
        description="The message as it would have been sent (RFC 5322); a signed link in it "
        "(an approval email's /a/TOKEN, an unsubscribe /u/TOKEN) has its token replaced by "
        "`[link for NAME only]` unless it is the caller's"
    )


@router.get("/api/mail", response_model=list[CaughtMailSummary])
def list_mail(
    ctx: ServiceContext,
    actor: CurrentActor,
    limit: PageLimit = 50,
) -> list[dict[str, Any]]:
    """The newest `limit` emails the mail catcher kept, of the runs the caller can see."""
    return [m.summary() for m in mail.list_caught(ctx, actor, limit=limit)]


@router.get("/api/mail/{mail_id}", response_model=CaughtMail)
def show_mail(ctx: ServiceContext, actor: CurrentActor, mail_id: RowId) -> dict[str, Any]:
    """One email the mail catcher kept, with the message as it would have been sent, its
    signed links only when they are the caller's."""
    return mail.caught(ctx, actor, mail_id).as_dict()
