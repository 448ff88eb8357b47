"""The people a batch's responsibilities may name (`engine.directory.Directory`), read in the
batch's transaction and handed to the engine with each record (`RecordSnapshot.people`).

Only for the flows that ask people anything (a responsibility, an approval, a task or a
notice): a batch of flows that only send emails reads nothing more. The directory holds every
user (active or not, with their manager), every group's active members, the members of the
batch's private flows, where each round-robin step's turn stands (the tasks it gave so far),
and the related records' values that dotted fields read (`company.account_manager`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import replace

from crmflow.engine.definition import FlowDefinition, Responsibility, Visibility
from crmflow.engine.directory import Directory, Person, Turns
from crmflow.engine.recordtypes import RecordType
from crmflow.engine.runtime import RecordSnapshot
from crmflow.store import enrollments as repo
from crmflow.store import people as stored
from crmflow.store.database import Connection

__all__ = ["responsibilities", "with_people"]


def responsibilities(flow: FlowDefinition) -> Iterator[tuple[str, Responsibility | None]]:
    """(step key, responsibility) of every step, task and escalation of `flow` that asks
    someone (None: the default, the flow's owner)."""
    for step in flow.steps:
        escalate = step.deadline.escalate if step.deadline is not None else None
        if escalate is not None and escalate.to is not None:
            yield step.key, escalate.to
        asks = step.responsibility is not None or step.type == "approval"
        for action in getattr(step, "actions", ()):
            if action.type == "create_task" and action.assignee is not None:
                yield step.key, action.assignee
            asks = asks or action.type in ("create_task", "notify")
        if asks:
            yield step.key, step.responsibility


def with_people(
    conn: Connection,
    infos: Mapping[tuple[int, int], repo.FlowInfo],
    records: Mapping[int, RecordSnapshot],
    types: Mapping[str, RecordType],
) -> dict[int, RecordSnapshot]:
    """`records`, each with the batch's directory when a flow of the batch asks people (else
    as they are): four or five queries for the whole batch."""
    asking = {
        info.id: (info, list(responsibilities(info.definition)))
        for info in infos.values()
        if any(True for _ in responsibilities(info.definition))
    }
    if not asking:
        return dict(records)
    entries = stored.user_entries(conn)
    private = {
        info.id: info
        for info, _ in asking.values()
        if info.definition.visibility is Visibility.PRIVATE
    }
    members = stored.flow_member_names(conn, private.keys())
    rotating = {
        (flow_id, step_key): (info.key, r.group)
        for flow_id, (info, found) in asking.items()
        for step_key, r in found
        if r is not None and r.type == "group" and r.mode == "round_robin"
    }
    counts = stored.step_task_counts(conn, rotating.keys())
    directory = Directory(
        users={name: Person(name, active, manager) for _, name, active, manager in entries},
        usernames={user_id: name for user_id, name, _, _ in entries},
        groups=stored.active_members_by_group(conn),
        flow_members={
            info.key: frozenset(members.get(flow_id, set())) for flow_id, info in private.items()
        },
        related=_related(conn, asking.values(), records, types),
        turns=Turns(
            {
                (key, step, group): counts[(flow_id, step)]
                for (flow_id, step), (key, group) in rotating.items()
            }
        ),
    )
    return {rid: replace(record, people=directory) for rid, record in records.items()}


def _related(
    conn: Connection,
    asking: Iterable[tuple[repo.FlowInfo, list[tuple[str, Responsibility | None]]]],
    records: Mapping[int, RecordSnapshot],
    types: Mapping[str, RecordType],
) -> dict[tuple[int, str], object]:
    """The values dotted responsibility fields read, by (record id, path): the reference
    field's record, read in one query."""
    paths: dict[str, set[str]] = {}  # record type -> dotted paths
    for info, found in asking:
        for _, r in found:
            if r is not None and r.type in ("field", "manager_of") and "." in r.field:
                paths.setdefault(info.definition.record_type, set()).add(r.field)
    if not paths:
        return {}
    wanted: dict[tuple[int, str], int] = {}
    for record in records.values():
        for path in paths.get(record.type, ()):
            target = record.values.get(path.split(".", 1)[0])
            if isinstance(target, int) and not isinstance(target, bool):
                wanted[(record.id, path)] = target
    others = repo.load_records(conn, set(wanted.values()), dict(types))
    related: dict[tuple[int, str], object] = {}
    for (record_id, path), target in wanted.items():
        other = others.get(target)
        if other is not None:
            related[(record_id, path)] = other.values.get(path.split(".", 1)[1])
    return related
