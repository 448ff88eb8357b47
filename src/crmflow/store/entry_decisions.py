"""Why records did not enter flows (`entry_decisions`): one row per refusal, with the reason
written for the person who asks "why did this record not enter?" (the rules are the engine's,
`engine.entry`). The one place that writes the table."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from crmflow.engine.entry import Decision
from crmflow.store.schema import entry_decisions

__all__ = ["insert_decisions"]


def insert_decisions(conn: sa.Connection, decisions: Sequence[Decision], *, now: datetime) -> None:
    """Keep `decisions`, made at `now`, in one statement."""
    if decisions:
        conn.execute(entry_decisions.insert(), [_decision_row(d, now) for d in decisions])


def _decision_row(d: Decision, now: datetime) -> dict[str, Any]:
    return {
        "flow_id": d.flow_id,
        "record_id": d.record_id,
        "trigger": d.trigger,
        "change_id": d.change_id,
        "reason": d.reason,
        "at": now,
    }
