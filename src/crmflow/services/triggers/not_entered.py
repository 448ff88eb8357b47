"""Why records did not enter flows (`entry_decisions`), per flow or per record."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from crmflow.errors import NotFoundError
from crmflow.services.context import Actor, Context
from crmflow.services.flow_access import visible_flow, visible_flows
from crmflow.store.database import read_connection
from crmflow.store.entry_decisions import refusals_page
from crmflow.store.records import record_type_of

__all__ = ["MAX_DECISIONS", "NotEntered", "entry_decisions_for"]


@dataclass(frozen=True)
class NotEntered:
    id: int
    flow: str
    record_id: int
    trigger: str
    change_id: int | None
    reason: str
    at: datetime

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "flow": self.flow,
            "record_id": self.record_id,
            "trigger": self.trigger,
            "change_id": self.change_id,
            "reason": self.reason,
            "at": self.at.isoformat(),
        }


MAX_DECISIONS = 1_000


def entry_decisions_for(
    ctx: Context,
    actor: Actor,
    *,
    flow_key: str | None = None,
    record_id: int | None = None,
    record_type: str | None = None,
    limit: int = 100,
) -> list[NotEntered]:
    """Why records did not enter flows, newest first: of one flow, of one record, or both.
    Only flows `actor` can see are listed (a private flow's refusals stay private). With
    `record_type`, a record of another type is NotFoundError (the API's /records/{type}/{id})."""
    size = max(1, min(limit, MAX_DECISIONS))
    with read_connection(ctx.engine) as conn:
        flow_id = visible_flow(conn, actor, flow_key).id if flow_key is not None else None
        if record_id is not None and record_type is not None:
            found = record_type_of(conn, record_id)
            if found is not None and found != record_type:
                raise NotFoundError(f"no {record_type} record with id {record_id}")
        rows = refusals_page(
            conn, visible_flows(actor), flow_id=flow_id, record_id=record_id, limit=size
        )
    return [
        NotEntered(r.id, r.flow_key, r.record_id, r.trigger, r.change_id, r.reason, r.at)
        for r in rows
    ]
