"""What the engine decided for a batch, written together on the caller's transaction: the
commands carried out (`services.effects`), the new states and step runs, the tasks of runs
that are over closed, and the messages of cancelled runs cancelled; a fixed number of
statements per batch."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from crmflow.context import Actor, Context
from crmflow.engine.commands import Command
from crmflow.engine.runtime import (
    ActionLog,
    ActionStatus,
    EnrollmentState,
    EnrollmentStatus,
    StepRunLog,
    StepStatus,
)
from crmflow.engine.transition import Outcome
from crmflow.store import enrollments as repo
from crmflow.store.database import Connection
from crmflow.store.history import HistoryEntry, insert_history
from crmflow.store.outbox import cancel_pending_of_cancelled
from crmflow.store.records import KnownRecords
from crmflow.store.tasks import (
    NewTaskEvent,
    cancel_open_tasks,
    close_tasks_of_runs,
    insert_task_events,
)

__all__ = ["ActionRef", "BatchWrites", "close_tasks", "with_action_failures"]

# (enrollment id, step run, action index): where a failure goes in the step-run log.
ActionRef = tuple[int, int, int | None]


def with_action_failures(
    logs: Sequence[StepRunLog], failures: Mapping[ActionRef, str]
) -> list[StepRunLog]:
    """The step-run logs with the effects that could not be carried out (`failures`, the
    appliers' reasons) marked as failed."""
    if not failures:
        return list(logs)
    out: list[StepRunLog] = []
    for log in logs:
        actions: list[ActionLog] = []
        failed = 0
        for a in log.actions:
            reason = failures.get((log.enrollment_id, log.step_run, a.index))
            if reason is not None and a.status is ActionStatus.DONE:
                failed += 1
                detail = f"{a.detail} — {reason}"
                actions.append(replace(a, status=ActionStatus.FAILED, detail=detail))
            else:
                actions.append(a)
        if not failed:
            out.append(log)
            continue
        failing = sum(1 for a in actions if a.status is ActionStatus.FAILED)
        status = log.status
        if status in (StepStatus.DONE, StepStatus.FAILED):
            # The same words the engine uses when an action fails while the step runs.
            status, reason = StepStatus.FAILED, f"{failing} of {len(actions)} actions failed"
        else:
            reason = "; ".join(r for r in (log.reason, f"{failed} action(s) failed") if r)
        out.append(replace(log, actions=tuple(actions), status=status, reason=reason))
    return out


def _apply_commands(
    conn: Connection,
    ctx: Context,
    actor: Actor,
    commands: Sequence[Command],
    *,
    record_of: dict[int, int],
    flow_of: dict[int, str],
    now: datetime,
    known: KnownRecords | None,
) -> Mapping[ActionRef, str]:
    """Carry out `commands` (`services.effects.apply_commands`); the failures, by action.

    The runner's one import from the layer above it (issue 9's documented exception): the
    appliers carry commands out through services (the record write path, related records,
    owners, lists, follow-up entries, SQL actions), so they cannot sit below the runner. It is
    imported when a batch writes, not when the runner is imported, so that the services that
    import the runner make no import cycle."""
    # Local on purpose (PLC0415): see the docstring.
    from crmflow.services.effects import apply_commands  # noqa: PLC0415 - see the docstring

    applied = apply_commands(
        conn, ctx, actor, commands, record_of=record_of, flow_of=flow_of, now=now, known=known
    )
    return applied.failures


def close_tasks(
    conn: Connection,
    closed_runs: Sequence[tuple[int, int]],
    over: Sequence[int],
    *,
    now: datetime,
    ended: Mapping[int, bool] | None = None,
) -> None:
    """Close the open tasks of approval runs that are over (`closed_runs`: enrollment, run) as
    done, and cancel those of enrollments that are over (`over`).

    `ended` holds the enrollments of `over` that ended normally (finished or left), each with
    whether its flow cancels open tasks when a run ends (`cancel_open_tasks_on_end`); the
    others were cancelled. A run that ended normally keeps its open tasks (the referral task
    a last step makes for next week), except its approval's, cancelled as always, unless its
    flow asks otherwise. Each task that is not an approval's and is cancelled gets a line in the
    record's history and in the task's saying why.

    The enrollments of `over` that ended CANCELLED (loop guard, by hand, a missing step) also
    have their outbox messages still pending cancelled: nothing is sent for a cancelled run.
    Those that finished or left keep theirs (the thank-you email of a finished run still goes).
    Their states are already saved, so the enrollments' status column says which ones; those
    `ended` names are not even asked about (a batch of runs that all finished asks nothing)."""
    close_tasks_of_runs(conn, closed_runs, now=now)
    if not over:
        return
    ended = ended or {}
    keep = [eid for eid, cancels in ended.items() if not cancels]
    cancelled = cancel_open_tasks(conn, over, now=now, approvals_only=keep)
    shown = [t for t in cancelled if not t.approval]
    why = {
        t.id: "the run ended and its flow cancels open tasks then (cancel_open_tasks_on_end)"
        if t.enrollment_id in ended
        else "its run was cancelled"
        for t in shown
    }
    insert_history(
        conn,
        [
            HistoryEntry(
                t.record_id, t.enrollment_id, f"Task {t.title!r} cancelled: {why[t.id]}", now
            )
            for t in shown
        ],
    )
    insert_task_events(conn, [NewTaskEvent(t.id, now, None, "cancelled", why[t.id]) for t in shown])
    cancel_pending_of_cancelled(conn, [eid for eid in over if eid not in ended])


@dataclass
class BatchWrites:
    """What the engine decided for some enrollments, gathered to be written together: their new
    states, step-run logs and commands, and the approval tasks whose run is over. The worker's
    batches and the resume of a frozen flow write through it."""

    states: list[EnrollmentState] = field(default_factory=list)
    logs: list[StepRunLog] = field(default_factory=list)
    commands: list[Command] = field(default_factory=list)
    record_of: dict[int, int] = field(default_factory=dict)
    flow_of: dict[int, str] = field(default_factory=dict)
    closed_runs: list[tuple[int, int]] = field(default_factory=list)  # (enrollment, run)
    over: list[int] = field(default_factory=list)
    # Those of `over` that ended normally: whether their flow cancels open tasks then.
    ended: dict[int, bool] = field(default_factory=dict)
    # The step runs each state had before (see `repo.save`): a later run's log is a new row.
    runs_before: dict[int, int] = field(default_factory=dict)

    def add(
        self,
        old: EnrollmentState | None,
        new: EnrollmentState,
        record_id: int,
        flow_key: str,
        *,
        cancel_tasks_on_end: bool = False,
    ) -> None:
        """`new` replaces `old` (None: the enrollment had not entered yet);
        `cancel_tasks_on_end`: the flow's `cancel_open_tasks_on_end`."""
        eid = new.enrollment_id
        self.states.append(new)
        self.record_of[eid] = record_id
        self.flow_of[eid] = flow_key
        self.runs_before[eid] = old.step_runs if old is not None else 0
        if old is not None and old.current_run is not None and new.current_run != old.current_run:
            # The run a person was asked about (an approval) is over: its task is done.
            self.closed_runs.append((eid, old.current_run))
        if new.is_over:
            self.over.append(eid)
            if new.status is not EnrollmentStatus.CANCELLED:
                self.ended[eid] = cancel_tasks_on_end

    def add_outcome(
        self,
        old: EnrollmentState | None,
        outcome: Outcome,
        flow_key: str,
        *,
        cancel_tasks_on_end: bool = False,
    ) -> None:
        self.add(
            old,
            outcome.state,
            outcome.record.id,
            flow_key,
            cancel_tasks_on_end=cancel_tasks_on_end,
        )
        self.logs += outcome.log
        self.commands += outcome.commands

    def write(
        self,
        conn: Connection,
        ctx: Context,
        actor: Actor,
        *,
        now: datetime,
        known: KnownRecords | None = None,
    ) -> None:
        """Apply the commands (as `actor`), then write the states and the step runs (an action
        whose effect could not be carried out marked failed), and close the tasks. `known`:
        the batch's records and record types as stored now, when the caller knows them (see
        `apply_commands`)."""
        failures = _apply_commands(
            conn,
            ctx,
            actor,
            self.commands,
            record_of=self.record_of,
            flow_of=self.flow_of,
            now=now,
            known=known,
        )
        logs = self.logs = with_action_failures(self.logs, failures)  # as written, for metrics
        repo.save(conn, self.states, logs, now=now, runs_before=self.runs_before)
        close_tasks(conn, self.closed_runs, self.over, now=now, ended=self.ended)
