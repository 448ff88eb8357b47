"""The `assign_owner` action (a lead distributor): picks the record's new owner among candidate
users and writes the change, with its change event, in the step's transaction.

Candidates are the action's `users` in the order given, then the `group`'s members by username;
inactive and unknown users are left out (a deactivated salesperson gets no new leads).

Strategies:
- round_robin: candidate number `n mod len(candidates)`, where `n` is how many times this action
  (this flow, step and action) assigned an owner before. `n` is derived from the step-run logs
  (runs of the step where the action is `done`), so no rotation table is needed and a failed
  assignment does not use a turn.
- weighted: the same counter walks a smooth weighted round robin (the nginx one) over the
  weights, a user without a weight weighing 1: over each cycle of sum(weights) assignments every
  user gets exactly their weight, spread out rather than in runs.
- least_loaded: the candidate owning the fewest records of the record's type (ties: candidate
  order). Owned records, not enrollments: that is what a person handles, whichever flow gave it.

On PostgreSQL a transaction-scoped advisory lock per action serialises concurrent batches, so two
workers never hand out the same turn (SQLite has a single writer already).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

from crmflow.engine.commands import AssignOwner
from crmflow.services.context import Actor
from crmflow.services.records import snapshot
from crmflow.store.schema import (
    enrollments,
    flows,
    group_members,
    groups,
    record_changes,
    records,
    step_runs,
    users,
)

__all__ = ["assign_owners", "smooth_weighted_cycle"]

Fail = Callable[[Any, str], None]


def smooth_weighted_cycle(weights: Sequence[int]) -> list[int]:
    """One cycle (sum(weights) picks) of smooth weighted round robin, as candidate positions.

    Each pick adds every weight to its candidate's score, takes the highest score (the first on
    a tie) and takes the total off it: {a: 5, b: 1, c: 1} gives a a b a c a a, not a a a a a b c.
    """
    total = sum(weights)
    scores = [0] * len(weights)
    cycle: list[int] = []
    for _ in range(total):
        for i, w in enumerate(weights):
            scores[i] += w
        best = max(range(len(weights)), key=lambda i: (scores[i], -i))
        scores[best] -= total
        cycle.append(best)
    return cycle


@dataclass(frozen=True)
class _Candidate:
    id: int
    username: str


def _lock_key(flow_id: int, step: str, ref: str) -> int:
    digest = hashlib.sha256(f"assign_owner:{flow_id}:{step}:{ref}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _turns_taken(conn: sa.Connection, flow_id: int, command: AssignOwner) -> int:
    """How many times this action has assigned an owner in committed step runs."""
    if command.action_key:
        pattern: dict[str, Any] = {"key": command.action_key}
    else:
        pattern = {"index": command.action_index}
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
            step_runs.c.step_key == command.step_key,
            done,
        )
    )
    return int(conn.execute(query).scalar_one())


def _candidates(conn: sa.Connection, commands: Sequence[AssignOwner]) -> list[list[_Candidate]]:
    """The active candidate users of each command, in two queries for the whole batch."""
    names = sorted({u for c in commands for u in c.users})
    group_names = sorted({c.group for c in commands if c.group})
    by_name = {
        r.username: _Candidate(r.id, r.username)
        for r in conn.execute(
            sa.select(users.c.id, users.c.username).where(
                users.c.username.in_(names), users.c.active
            )
        )
    }
    members: dict[str, list[_Candidate]] = {}
    if group_names:
        rows = conn.execute(
            sa.select(groups.c.name, users.c.id, users.c.username)
            .select_from(
                group_members.join(groups, groups.c.id == group_members.c.group_id).join(
                    users, users.c.id == group_members.c.user_id
                )
            )
            .where(groups.c.name.in_(group_names), users.c.active)
            .order_by(users.c.username)
        )
        for r in rows:
            members.setdefault(r.name, []).append(_Candidate(r.id, r.username))
    out: list[list[_Candidate]] = []
    for c in commands:
        found = [by_name[u] for u in c.users if u in by_name]
        seen = {x.id for x in found}
        found += [m for m in members.get(c.group or "", []) if m.id not in seen]
        out.append(found)
    return out


def assign_owners(
    conn: sa.Connection,
    actor: Actor,
    items: Sequence[tuple[AssignOwner, int]],
    fail: Fail,
    *,
    flow_of: dict[int, str],
    now: datetime,
) -> None:
    """Pick and set the owner for each (command, record id), in the batch's order."""
    if not items:
        return
    commands = [c for c, _ in items]
    candidates = _candidates(conn, commands)
    flow_ids = {
        r.key: int(r.id)
        for r in conn.execute(
            sa.select(flows.c.id, flows.c.key).where(
                flows.c.key.in_(sorted({flow_of[c.enrollment_id] for c in commands}))
            )
        )
    }
    ids = sorted({rid for _, rid in items})
    rows = {
        r.id: r
        for r in conn.execute(
            sa.select(records.c.id, records.c.type, records.c.owner_id, records.c.data)
            .where(records.c.id.in_(ids))
            .with_for_update()
        )
    }
    turns: dict[tuple[int, str, str], int] = {}
    loads: dict[str, dict[int, int]] = {}  # record type -> user id -> records owned
    owner_now = {rid: row.owner_id for rid, row in rows.items()}
    for (command, record_id), found in zip(items, candidates, strict=True):
        row = rows.get(record_id)
        if row is None:
            fail(command, f"record {record_id} no longer exists")
            continue
        if not found:
            among = ", ".join(
                [*command.users, *([f"group {command.group}"] if command.group else [])]
            )
            fail(command, f"no active user to choose from among {among}")
            continue
        if command.strategy == "least_loaded":
            load = loads.get(row.type)
            if load is None:
                load = loads[row.type] = _loads(conn, row.type, commands, candidates)
            chosen = min(found, key=lambda u: load.get(u.id, 0))  # min keeps the first on a tie
            previous = owner_now[record_id]
            if previous is not None and previous in load:
                load[previous] -= 1
            load[chosen.id] = load.get(chosen.id, 0) + 1
        else:
            identity = (flow_ids[flow_of[command.enrollment_id]], command.step_key, command.ref)
            if identity not in turns:
                if conn.dialect.name == "postgresql":
                    conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_lock_key(*identity))))
                turns[identity] = _turns_taken(conn, identity[0], command)
            turn = turns[identity]
            turns[identity] = turn + 1
            if command.strategy == "weighted":
                cycle = smooth_weighted_cycle([command.weights.get(u.username, 1) for u in found])
                chosen = found[cycle[turn % len(cycle)]]
            else:
                chosen = found[turn % len(found)]
        owner_now[record_id] = chosen.id
    _write_owners(conn, actor, rows, owner_now, now=now)


def _loads(
    conn: sa.Connection,
    record_type: str,
    commands: Sequence[AssignOwner],
    candidates: list[list[_Candidate]],
) -> dict[int, int]:
    """Records of `record_type` owned by each least_loaded candidate (one GROUP BY query)."""
    ids = sorted(
        {
            u.id
            for c, found in zip(commands, candidates, strict=True)
            if c.strategy == "least_loaded"
            for u in found
        }
    )
    rows = conn.execute(
        sa.select(records.c.owner_id, sa.func.count())
        .where(records.c.type == record_type, records.c.owner_id.in_(ids))
        .group_by(records.c.owner_id)
    )
    return {int(owner): int(count) for owner, count in rows}


def _write_owners(
    conn: sa.Connection,
    actor: Actor,
    rows: dict[int, Any],
    owner_now: dict[int, int | None],
    *,
    now: datetime,
) -> None:
    """One UPDATE (executemany) and one INSERT of change events for the records whose owner
    changed; a record given to its current owner is left as it is, with no event."""
    changed = sorted(rid for rid, row in rows.items() if owner_now[rid] != row.owner_id)
    if not changed:
        return
    conn.execute(
        records.update()
        .where(records.c.id == sa.bindparam("rid"))
        .values(
            owner_id=sa.bindparam("new_owner"),
            updated_at=sa.bindparam("new_at"),
            version=records.c.version + 1,  # If-Match readers must see the owner changed
        ),
        [{"rid": rid, "new_owner": owner_now[rid], "new_at": now} for rid in changed],
    )
    conn.execute(
        record_changes.insert(),
        [
            {
                "record_id": rid,
                "record_type": rows[rid].type,
                "kind": "updated",
                "before": snapshot(rows[rid].data, rows[rid].owner_id),
                "after": snapshot(rows[rid].data, owner_now[rid]),
                "actor_id": actor.id,
                "at": now,
            }
            for rid in changed
        ],
    )
