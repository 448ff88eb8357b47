"""The triggers of a flow that are failing, as its page shows them: the error, how many times
in a row, and when each is tried again (see `store.trigger_failures`)."""

from __future__ import annotations

from typing import Any

from crmflow.services.context import Context
from crmflow.store.database import read_connection
from crmflow.store.trigger_failures import failing

__all__ = ["failing_triggers"]


def failing_triggers(ctx: Context, flow_id: int) -> list[dict[str, Any]]:
    """The failing triggers of the flow `flow_id`, by trigger index (empty when all run)."""
    with read_connection(ctx.engine) as conn:
        found = failing(conn, [flow_id])
    return [f.as_dict() for f in found.get(flow_id, [])]
