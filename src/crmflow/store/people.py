"""The reads behind a batch's directory of people (`runner.people`): every user with their
manager, the active members of every group, the members of some private flows, and how many
tasks a round-robin step already gave. Only reads.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

import sqlalchemy as sa

from crmflow.store.schema import enrollments, flow_members, group_members, groups, tasks, users

__all__ = [
    "UserEntry",
    "active_members_by_group",
    "flow_member_names",
    "step_task_counts",
    "user_entries",
]

# (id, username, active, the manager's username or None)
UserEntry = tuple[int, str, bool, str | None]


def user_entries(conn: sa.Connection) -> list[UserEntry]:
    """Every user with whether they are active and their manager's username (one query)."""
    manager = users.alias("manager")
    rows = conn.execute(
        sa.select(users.c.id, users.c.username, users.c.active, manager.c.username).outerjoin(
            manager, manager.c.id == users.c.manager_id
        )
    )
    return [(int(r[0]), r[1], bool(r[2]), r[3]) for r in rows]


def active_members_by_group(conn: sa.Connection) -> dict[str, tuple[str, ...]]:
    """The usernames of each group's active members, sorted, by group name (one query)."""
    rows = conn.execute(
        sa.select(groups.c.name, users.c.username)
        .select_from(
            group_members.join(groups, groups.c.id == group_members.c.group_id).join(
                users, users.c.id == group_members.c.user_id
            )
        )
        .where(users.c.active)
        .order_by(groups.c.name, users.c.username)
    )
    members: dict[str, list[str]] = {}
    for r in rows:
        members.setdefault(r.name, []).append(r.username)
    return {name: tuple(names) for name, names in members.items()}


def flow_member_names(conn: sa.Connection, flow_ids: Collection[int]) -> dict[int, set[str]]:
    """The usernames of the members of each of `flow_ids` (one query; none for no flows)."""
    if not flow_ids:
        return {}
    rows = conn.execute(
        sa.select(flow_members.c.flow_id, users.c.username)
        .join(users, users.c.id == flow_members.c.user_id)
        .where(flow_members.c.flow_id.in_(sorted(flow_ids)))
    )
    names: dict[int, set[str]] = {int(flow_id): set() for flow_id in flow_ids}
    for r in rows:
        names[int(r.flow_id)].add(r.username)
    return names


def step_task_counts(
    conn: sa.Connection, steps: Iterable[tuple[int, str]]
) -> dict[tuple[int, str], int]:
    """How many tasks each (flow id, step key) gave so far, in every version and run: where a
    round-robin group's next turn starts."""
    wanted = set(steps)
    if not wanted:
        return {}
    query = (
        sa.select(enrollments.c.flow_id, tasks.c.step_key, sa.func.count())
        .join(enrollments, enrollments.c.id == tasks.c.enrollment_id)
        .where(
            enrollments.c.flow_id.in_(sorted({f for f, _ in wanted})),
            tasks.c.step_key.in_(sorted({s for _, s in wanted})),
        )
        .group_by(enrollments.c.flow_id, tasks.c.step_key)
    )
    counts = {(int(r[0]), str(r[1])): int(r[2]) for r in conn.execute(query)}
    return {pair: counts.get(pair, 0) for pair in wanted}
