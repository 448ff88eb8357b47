"""create_task and notify (and an approval step's task): what the batch asks of people, written
to `store.tasks`.

Tasks and notifications for a user are kept under the username, also when the engine named the
user by id (a user field of the record, such as the requester's manager, holds the user's id):
one task list per user, whatever the responsibility that filled it. A reference is an id only
when the engine gave an int; an id that names nobody is kept as it is (as text). The ids of the
whole batch, tasks and notifications together, are looked up in one query.

A task given to the flow's controller because its responsibility named nobody who could take it
is also a line of the record's history, which says why: "Step 'call': task 'Call back' asked of
maria (controller): the record's manager is empty".

Whoever a task is given to is told in their inbox at once: "New task: ..." for a task, "Decision
needed: ..." for an approval's task (its buttons named). The notification goes where the task
goes: to the user, or to the group (each member reads it in their own inbox) for a group asked
as a whole (`mode: any`, and an approval asking a group); a round-robin group's task goes to
the member whose turn it is, and `mode: all` makes one task, so one notification, per member.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC

from crmflow.engine.commands import CreateTask, Notify
from crmflow.services.effects.batch import Applies, EffectBatch
from crmflow.store.history import HistoryEntry, insert_history
from crmflow.store.records import users_named_or_numbered
from crmflow.store.tasks import NewNotification, NewTask, insert_notifications, insert_tasks

__all__ = ["PEOPLE"]


def apply_people(batch: EffectBatch, commands: Sequence[CreateTask | Notify]) -> None:
    targets = [_targets(c) for c in commands]
    ids = {ref for refs in targets for kind, ref in refs if kind == "user" and isinstance(ref, int)}
    names = dict(users_named_or_numbered(batch.conn, (), ids)) if ids else {}

    def named(ref: str | int) -> str:
        return names.get(ref, str(ref)) if isinstance(ref, int) else ref

    new_tasks: list[NewTask] = []
    notes: list[NewNotification] = []
    announced: list[tuple[int, int]] = []  # (a note's place, the place of the task it tells of)
    fallbacks: list[HistoryEntry] = []
    for c, refs in zip(commands, targets, strict=True):
        record_id = batch.record_id(c)
        if isinstance(c, CreateTask):
            if c.assignee.note:
                what = "decision" if c.buttons else "task"
                line = f"Step {c.step_key!r}: {what} {c.title!r} asked of {c.assignee}"
                fallbacks.append(HistoryEntry(record_id, c.enrollment_id, line, batch.now))
            new_tasks.append(
                NewTask(
                    enrollment_id=c.enrollment_id,
                    record_id=record_id,
                    step_key=c.step_key,
                    run=c.step_run,
                    title=c.title,
                    description=c.description,
                    assignee_kind=c.assignee.kind,
                    assignee_ref=named(c.assignee.ref),
                    due_at=c.due_at,
                    buttons=[list(b) for b in c.buttons],
                    created_at=batch.now,
                    due_field=c.due_field,
                    due_offset_days=c.due_offset_days if c.due_field is not None else None,
                )
            )
            announced.append((len(notes), len(new_tasks) - 1))
            text = _told(c, batch.flow_of.get(c.enrollment_id, "?"), record_id)
            ref = named(c.assignee.ref)
            notes.append(
                NewNotification(c.assignee.kind, ref, text, c.enrollment_id, record_id, batch.now)
            )
        else:
            notes += [
                NewNotification(kind, named(ref), c.message, c.enrollment_id, record_id, batch.now)
                for kind, ref in refs
            ]
    # The notice of a new task names it (the inbox links to the task's page).
    task_ids = insert_tasks(batch.conn, new_tasks)
    for place, task_index in announced:
        notes[place] = notes[place]._replace(task_id=task_ids[task_index])
    insert_notifications(batch.conn, notes)
    insert_history(batch.conn, fallbacks)


def _told(task: CreateTask, flow_key: str, record_id: int) -> str:
    """The inbox line telling the assignee of `task`: a new task, or a decision needed."""
    where = f"flow {flow_key}, record {record_id}, step {task.step_key!r}"
    if task.buttons:
        labels = " / ".join(label for _, label in task.buttons)
        text = f"Decision needed: {task.title!r} ({where}): {labels}"
    else:
        text = f"New task: {task.title!r} ({where})"
    if task.due_at is not None:
        text += f", due {task.due_at.astimezone(UTC):%Y-%m-%d %H:%M} UTC"
    if task.assignee.note:  # asked of the controller because nobody else could be
        text += f"; given to you as the flow's controller: {task.assignee.note}"
    return text


def _targets(command: CreateTask | Notify) -> list[tuple[str, str | int]]:
    """(kind, reference) of the task's assignee, or of each user and group notified."""
    if isinstance(command, CreateTask):
        return [(command.assignee.kind, command.assignee.ref)]
    return [("user", u) for u in command.users] + [("group", g) for g in command.groups]


PEOPLE = Applies[CreateTask | Notify]((CreateTask, Notify), apply_people)
