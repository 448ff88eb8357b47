"""The triggers of a flow that are failing, as its page shows them: the error, how many times
in a row, and when each is tried again (see `store.trigger_failures`); and how a trigger is
marked failing, or running again, the same way by the timed triggers and the change feed (the
row, the log with the traceback, one line in the flow's history)."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from crmflow.errors import CrmflowError
from crmflow.services.context import Context
from crmflow.store.database import Connection, read_connection
from crmflow.store.trigger_failures import (
    TriggerFailure,
    failing,
    note_in_flow_history,
    record_failure,
)

__all__ = ["error_text", "failing_triggers", "trigger_failed", "trigger_runs_again"]

log = logging.getLogger("crmflow.triggers")


def failing_triggers(ctx: Context, flow_id: int) -> list[dict[str, Any]]:
    """The failing triggers of the flow `flow_id`, by trigger index (empty when all run)."""
    with read_connection(ctx.engine) as conn:
        found = failing(conn, [flow_id])
    return [f.as_dict() for f in found.get(flow_id, [])]


def error_text(exc: Exception) -> str:
    """`exc` as a failing trigger's row says it: a crmflow error's own words (written for the
    user), anything else with its type (a bug, a database refusal)."""
    return str(exc) if isinstance(exc, CrmflowError) else f"{type(exc).__name__}: {exc}"


def trigger_failed(
    conn: Connection,
    *,
    flow_id: int,
    flow_name: str,
    trigger_index: int,
    trigger_type: str,
    error: str,
    exc: Exception,
    now: datetime,
    retry_at: datetime | None = None,
    retried: str = "retried with backoff",
) -> TriggerFailure:
    """Mark the trigger failing with `error` (see `record_failure` for `retry_at`): logged with
    the traceback (unless `exc` is a crmflow error, whose words are the whole story), and said
    once in the flow's history when it starts failing, `retried` telling when it is tried
    again."""
    failure = record_failure(
        conn,
        flow_id=flow_id,
        trigger_index=trigger_index,
        trigger_type=trigger_type,
        error=error,
        now=now,
        retry_at=retry_at,
    )
    log.error(
        "flow %s: trigger %d (%s) failed %d time(s), retried at %s: %s",
        flow_name,
        trigger_index,
        trigger_type,
        failure.failures,
        failure.retry_at.isoformat(),
        error,
        exc_info=None if isinstance(exc, CrmflowError) else exc,
    )
    if failure.failures == 1:
        note_in_flow_history(
            conn,
            flow_id=flow_id,
            note=f"trigger {trigger_index} ({trigger_type}) failed, {retried}: {error}",
            now=now,
        )
    return failure


def trigger_runs_again(
    conn: Connection,
    *,
    flow_id: int,
    flow_name: str,
    trigger_index: int,
    trigger_type: str,
    now: datetime,
) -> None:
    """A trigger that was failing ran (its row is already gone): logged and said in the flow's
    history."""
    log.info("flow %s: trigger %d runs again", flow_name, trigger_index)
    note_in_flow_history(
        conn,
        flow_id=flow_id,
        note=f"trigger {trigger_index} ({trigger_type}) runs again",
        now=now,
    )
