"""What a step's deadline asks for at a given moment: the rule, pure (time is passed in).

A step with a `deadline` gives its task a due time (an approval's task, or the task a
`create_task` makes without its own `due_days`). Until that time, the person responsible is
reminded every `remind_every_days` days after the step started; once it has passed, the step
is late: a late notice goes once (the controller is told, the task shows late); with
`escalate: {after_days: M}`, M days later the task goes to someone else or the approval is
decided automatically, once.

Each notice has a key (`task:<id>:reminder:<n>`, `task:<id>:late`, `task:<id>:escalation`);
the services keep the keys of those sent, so each goes once whoever runs it and however often.
A worker that was stopped for a week does not send the reminders it missed one after the
other: only the latest one that is due, then the late notice and the escalation if due.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

__all__ = ["Notice", "NoticeKind", "Watched", "due_notices", "notice_key"]

NoticeKind = Literal["reminder", "late", "escalation"]


@dataclass(frozen=True)
class Watched:
    """A task with a deadline, as the rule needs it."""

    task_id: int
    started_at: datetime  # when the step (its task) started
    deadline_at: datetime
    remind_every_days: int | None = None
    escalate_after_days: int | None = None  # None: the deadline does not escalate


@dataclass(frozen=True)
class Notice:
    task_id: int
    kind: NoticeKind
    number: int = 0  # reminders: 1, 2, ... (the n-th period after the start)
    days_late: int = 0  # late notices and escalations: whole days past the deadline

    @property
    def key(self) -> str:
        return notice_key(self.task_id, self.kind, self.number)


def notice_key(task_id: int, kind: NoticeKind, number: int = 0) -> str:
    return f"task:{task_id}:{kind}:{number}" if kind == "reminder" else f"task:{task_id}:{kind}"


def due_notices(watched: Watched, sent: frozenset[str], now: datetime) -> list[Notice]:
    """The notices about `watched` due at `now` that are not among the keys `sent`, in the
    order they go (a reminder, then the late notice, then the escalation)."""
    out: list[Notice] = []
    deadline = watched.deadline_at
    if now < deadline:
        reminder = _reminder(watched, now)
        if reminder is not None and reminder.key not in sent:
            out.append(reminder)
        return out
    days_late = (now - deadline) // timedelta(days=1)
    late = Notice(watched.task_id, "late", days_late=days_late)
    if late.key not in sent:
        out.append(late)
    after = watched.escalate_after_days
    if after is not None and now >= deadline + timedelta(days=after):
        escalation = Notice(watched.task_id, "escalation", days_late=days_late)
        if escalation.key not in sent:
            out.append(escalation)
    return out


def _reminder(watched: Watched, now: datetime) -> Notice | None:
    """The latest reminder due at `now` (before the deadline), if any."""
    every = watched.remind_every_days
    if every is None or now < watched.started_at:
        return None
    number = (now - watched.started_at) // timedelta(days=every)
    if number < 1:
        return None
    return Notice(watched.task_id, "reminder", number=number)
