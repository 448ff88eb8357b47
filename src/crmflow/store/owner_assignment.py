"""What the `assign_owner` action (`services.owner_assignment`) reads to pick an owner: the ids
of the batch's flows, how many turns an action has taken (from the step-run logs), how many
records each candidate owns, and the lock that serialises one action's turns.

Reads only, across table groups (flows, step runs, records): the owner it picks is written by
`store.records.update_records`, the one write of a record change; the candidates are read from
`store.users` and `store.groups`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

from crmflow.store.retention import turn_ref
from crmflow.store.schema import enrollments, flow_history_counts, flows, records, step_runs

__all__ = ["flow_ids_by_key", "lock_turns", "owned_record_counts", "turns_taken"]


def flow_ids_by_key(conn: sa.Connection, keys: Collection[str]) -> dict[str, int]:
    """The ids of the flows among `keys` that exist, by key (one query)."""
    rows = conn.execute(sa.select(flows.c.id, flows.c.key).where(flows.c.key.in_(keys)))
    return {r.key: int(r.id) for r in rows}


def lock_turns(conn: sa.Connection, flow_id: int, step_key: str, action_ref: str) -> None:
    """PostgreSQL: hold a transaction-scoped advisory lock on the turns of one action (flow,
    step, action), so that two workers' batches never hand out the same turn. SQLite has a
    single writer already: nothing to do."""
    if conn.dialect.name != "postgresql":
        return
    digest = hashlib.sha256(f"assign_owner:{flow_id}:{step_key}:{action_ref}".encode()).digest()
    key = int.from_bytes(digest[:8], "big", signed=True)
    conn.execute(sa.select(sa.func.pg_advisory_xact_lock(key)))


def turns_taken(
    conn: sa.Connection,
    *,
    flow_id: int,
    step_key: str,
    action_key: str | None,
    action_index: int | None,
) -> int:
    """How many committed step runs of `step_key` in flow `flow_id` have this assign_owner
    action (by its key, or its index when it has none) `done`, with those pruned since
    (`store.retention`): the turns it has taken."""
    if action_key:
        pattern: dict[str, Any] = {"key": action_key}
    else:
        pattern = {"index": action_index}
    pattern |= {"type": "assign_owner", "status": "done"}
    if conn.dialect.name == "postgresql":
        done: Any = step_runs.c.actions.op("@>")(sa.cast(sa.literal([pattern], JSONB), JSONB))
    else:
        field, value = next(iter(pattern.items()))
        done = sa.exists(
            sa.select(sa.literal(1))
            .select_from(sa.func.json_each(step_runs.c.actions).table_valued("value").alias("a"))
            .where(
                sa.func.json_extract(sa.literal_column("a.value"), f"$.{field}") == value,
                sa.func.json_extract(sa.literal_column("a.value"), "$.type") == "assign_owner",
                sa.func.json_extract(sa.literal_column("a.value"), "$.status") == "done",
            )
        )
    query = (
        sa.select(sa.func.count())
        .select_from(step_runs.join(enrollments, enrollments.c.id == step_runs.c.enrollment_id))
        .where(
            enrollments.c.flow_id == flow_id,
            step_runs.c.step_key == step_key,
            done,
        )
    )
    # The turns of step runs that retention pruned were counted as they went.
    pruned = conn.execute(
        sa.select(flow_history_counts.c.count).where(
            flow_history_counts.c.flow_id == flow_id,
            flow_history_counts.c.kind == "turns",
            flow_history_counts.c.key == step_key,
            flow_history_counts.c.outcome == turn_ref(action_key, action_index),
        )
    ).scalar()
    return int(conn.execute(query).scalar_one()) + int(pruned or 0)


def owned_record_counts(
    conn: sa.Connection, record_type: str, owner_ids: Collection[int]
) -> dict[int, int]:
    """How many records of `record_type` each of `owner_ids` owns (one GROUP BY query; an
    owner of none is absent)."""
    rows = conn.execute(
        sa.select(records.c.owner_id, sa.func.count())
        .where(records.c.type == record_type, records.c.owner_id.in_(owner_ids))
        .group_by(records.c.owner_id)
    )
    return {int(owner): int(count) for owner, count in rows}
