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

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from crmflow.engine.commands import AssignOwner
from crmflow.services.context import Actor
from crmflow.store import groups as stored_groups
from crmflow.store import owner_assignment as stored
from crmflow.store import records as stored_records
from crmflow.store import users as stored_users
from crmflow.store.database import Connection
from crmflow.store.records import RecordUpdate, StoredRecord

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


def _candidates(conn: Connection, commands: Sequence[AssignOwner]) -> list[list[_Candidate]]:
    """The active candidate users of each command, in two queries for the whole batch."""
    names = sorted({u for c in commands for u in c.users})
    group_names = sorted({c.group for c in commands if c.group})
    by_name = {
        username: _Candidate(user_id, username)
        for username, user_id in stored_users.active_users_named(conn, names).items()
    }
    members: dict[str, list[_Candidate]] = {}
    if group_names:
        for m in stored_groups.active_members_of_groups(conn, group_names):
            members.setdefault(m.group, []).append(_Candidate(m.user_id, m.username))
    out: list[list[_Candidate]] = []
    for c in commands:
        found = [by_name[u] for u in c.users if u in by_name]
        seen = {x.id for x in found}
        found += [m for m in members.get(c.group or "", []) if m.id not in seen]
        out.append(found)
    return out


def assign_owners(
    conn: Connection,
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
    flow_ids = stored.flow_ids_by_key(conn, sorted({flow_of[c.enrollment_id] for c in commands}))
    rows = stored_records.lock_records(conn, sorted({rid for _, rid in items}))
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
                stored.lock_turns(conn, *identity)
                turns[identity] = stored.turns_taken(
                    conn,
                    flow_id=identity[0],
                    step_key=command.step_key,
                    action_key=command.action_key,
                    action_index=command.action_index,
                )
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
    conn: Connection,
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
    return stored.owned_record_counts(conn, record_type, ids)


def _write_owners(
    conn: Connection,
    actor: Actor,
    rows: dict[int, StoredRecord],
    owner_now: dict[int, int | None],
    *,
    now: datetime,
) -> None:
    """The records whose owner changed are written as any record change is
    (`store.records.update_records`: one executemany of the records, their version one more so
    that If-Match readers see the owner changed, and one of their change events); a record given
    to its current owner is left as it is, with no event."""
    changed = sorted(rid for rid, row in rows.items() if owner_now[rid] != row.owner_id)
    updates = [RecordUpdate(rows[rid], rows[rid].data, owner_now[rid]) for rid in changed]
    stored_records.update_records(conn, updates, actor_id=actor.id, now=now)
