"""What users see of records going through flows: per record, the flows it is or was in with
each step run (and what became of its messages); per flow, its progress, funnel and the list
of its records. Built with a fixed number of queries, whatever the number of runs shown."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from crmflow.engine.commands import action_ref, idempotency_key
from crmflow.engine.entry import HELD
from crmflow.engine.runtime import EnrollmentState, EnrollmentStatus
from crmflow.engine.transition import sequence_progress
from crmflow.errors import InvalidInputError, NotFoundError, Problem
from crmflow.services.context import Actor, Context
from crmflow.services.definitions import definitions_cache
from crmflow.services.flow_access import visible_flow, visible_flows
from crmflow.services.paging import DEFAULT_PAGE_SIZE, Page, keyset_page, page_size
from crmflow.store import enrollments as repo
from crmflow.store.database import Connection, Row, read_connection
from crmflow.store.history import history_of
from crmflow.store.outbox import count_emails_of_flow, messages_of
from crmflow.store.records import record_type_of
from crmflow.store.retention import history_counts, run_summary
from crmflow.store.step_runs import count_gone_through, step_runs_of
from crmflow.store.tasks import user_assignees_of

__all__ = [
    "EnrollmentView",
    "FlowProgress",
    "RecordStatus",
    "RunSummary",
    "StepRunView",
    "enrollment_view",
    "flow_progress",
    "flow_runs",
    "record_status",
]


# The outbox states of a message that went: the server accepted it, or the mail catcher kept it.
DELIVERED = frozenset({"delivered", "caught"})


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


@dataclass(frozen=True)
class StepRunView:
    run: int
    step: str
    type: str
    status: str
    reason: str
    started_at: datetime
    finished_at: datetime | None
    actions: list[dict[str, Any]]

    def as_dict(self) -> dict[str, Any]:
        return {
            "run": self.run,
            "step": self.step,
            "type": self.type,
            "status": self.status,
            "reason": self.reason,
            "started_at": self.started_at.isoformat(),
            "finished_at": _iso(self.finished_at),
            "actions": self.actions,
        }


@dataclass(frozen=True)
class EnrollmentView:
    id: int
    flow: str
    flow_version: int
    record_id: int
    status: str
    step: str | None
    waiting_for: str  # what the current step waits for, in words
    buttons: list[str]
    due_at: datetime | None
    entered_at: datetime
    finished_at: datetime | None
    end_reason: str
    emails: tuple[int, int]  # (delivered, in the flow): "2/5"
    step_runs: list[StepRunView]

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "flow": self.flow,
            "flow_version": self.flow_version,
            "record_id": self.record_id,
            "status": self.status,
            "step": self.step,
            "waiting_for": self.waiting_for,
            "buttons": self.buttons,
            "due_at": _iso(self.due_at),
            "entered_at": self.entered_at.isoformat(),
            "finished_at": _iso(self.finished_at),
            "end_reason": self.end_reason,
            "emails": f"{self.emails[0]}/{self.emails[1]}",
            "step_runs": [r.as_dict() for r in self.step_runs],
        }


@dataclass(frozen=True)
class RecordStatus:
    record_id: int
    record_type: str | None  # None: the record was deleted
    enrollments: list[EnrollmentView]
    history: list[dict[str, Any]]

    def as_dict(self) -> dict[str, Any]:
        return {
            "record_id": self.record_id,
            "record_type": self.record_type,
            "flows": [e.as_dict() for e in self.enrollments],
            "history": self.history,
        }


@dataclass(frozen=True)
class FlowProgress:
    flow: str
    entered: int
    inside: int
    finished: int
    left: int
    cancelled: int
    per_step: dict[str, int]  # records at each step now
    # Records that went through each step (done or failed; an end step: reached), in step order.
    funnel: dict[str, int]
    emails: int  # email messages written to the outbox

    def as_dict(self) -> dict[str, Any]:
        return {
            "flow": self.flow,
            "entered": self.entered,
            "inside": self.inside,
            "finished": self.finished,
            "left": self.left,
            "cancelled": self.cancelled,
            "per_step": self.per_step,
            "funnel": self.funnel,
            "emails": self.emails,
        }


def _views(conn: Connection, ctx: Context, rows: Sequence[Row]) -> list[EnrollmentView]:
    """Views of enrollments (rows of enrollments joined with flows.key) with their step runs,
    in a fixed number of queries."""
    ids = [r.id for r in rows]
    runs: dict[int, list[StepRunView]] = {}
    emails: dict[int, list[str]] = {}  # the statuses of each enrollment's emails, in run order
    if ids:
        named = _assignees_by_id(conn, ids)
        messages = _messages_by_key(conn, ids)
        for s in step_runs_of(conn, ids):
            reason, actions = s.reason, list(s.actions)
            for user_id, username in named.get((s.enrollment_id, s.run), {}).items():
                reason = reason.replace(f"asked of {user_id} (", f"asked of {username} (")
                actions = [
                    {**a, "detail": a["detail"].replace(f" for {user_id} (", f" for {username} (")}
                    if a.get("type") == "create_task"
                    else a
                    for a in actions
                ]
            actions = _with_messages(actions, s.enrollment_id, s.run, messages)
            emails.setdefault(s.enrollment_id, []).extend(
                a["message"]["status"]
                for a in actions
                if a.get("message") is not None and a["message"]["kind"] == "email"
            )
            runs.setdefault(s.enrollment_id, []).append(
                StepRunView(
                    s.run,
                    s.step_key,
                    s.step_type,
                    s.status,
                    reason,
                    s.started_at,
                    s.finished_at,
                    actions,
                )
            )
    infos = repo.load_flows(
        conn, {(r.flow_id, r.flow_version) for r in rows}, definitions_cache(ctx)
    )
    # Runs whose step runs and messages retention pruned: their emails' statuses were kept.
    for eid, summary in run_summary(conn, ids).items():
        if eid not in emails:
            emails[eid] = [str(s) for s in summary.email_statuses]
    out = []
    for r in rows:
        state = EnrollmentState.model_validate(r.state) if r.state is not None else None
        info = infos.get((r.flow_id, r.flow_version))
        progress = (0, 0)
        if state is not None and info is not None:
            progress = _delivered_progress(
                sequence_progress(info.definition, state), emails.get(r.id, [])
            )
        waiting = state.waiting if state is not None else None
        waiting_for = waiting.description if waiting is not None else ""
        if state is None and r.status == HELD:
            waiting_for = "held by the loop guard: cancelled, with the record's runs in the flow"
        elif state is None and r.status in repo.RUNNING:
            waiting_for = "enters the flow when due"
        out.append(
            EnrollmentView(
                id=r.id,
                flow=r.flow_key,
                flow_version=r.flow_version,
                record_id=r.record_id,
                status=r.status,
                step=r.step_key,
                waiting_for=waiting_for,
                buttons=[b.key for b in waiting.buttons] if waiting is not None else [],
                due_at=r.due_at,
                entered_at=state.entered_at if state is not None else r.entered_at,
                finished_at=r.finished_at,
                end_reason=state.end_reason if state is not None else "",
                emails=progress,
                step_runs=runs.get(r.id, []),
            )
        )
    return out


def _delivered_progress(progress: tuple[int, int], statuses: Sequence[str]) -> tuple[int, int]:
    """The sequence's progress counting the emails delivered (or caught by the mail catcher),
    not those written: of the emails the run wrote since its count last started over (the
    engine counts `written`; a restart starts it over), the last `written` in run order."""
    written, total = progress
    recent = statuses[max(len(statuses) - written, 0) :] if written else []
    return sum(1 for status in recent if status in DELIVERED), total


def _assignees_by_id(
    conn: Connection, enrollment_ids: Sequence[int]
) -> dict[tuple[int, int], dict[str, str]]:
    """Per (enrollment, run), the users its tasks were given to: {user id: username}.

    A responsibility held in a record's user field (the requester's manager) names the user by
    id, the way records store users; the engine knows no usernames and its step-run log says
    "asked of 3 (the record's manager)". The task itself is stored under the username (see
    `effects`), and people read "asked of maria": the log's words are completed here.
    """
    out: dict[tuple[int, int], dict[str, str]] = {}
    for t in user_assignees_of(conn, enrollment_ids):
        out.setdefault((t.enrollment_id, t.run), {})[str(t.id)] = t.username
    return out


def _messages_by_key(conn: Connection, enrollment_ids: Sequence[int]) -> dict[str, dict[str, Any]]:
    """The outbox messages of these enrollments by idempotency key, as a person reads them:
    its state, and what delivery gives to know (delivered at and the server's reply; the
    next attempt and the last error of a retry; the error of a failure), only when there is
    something to say."""
    out: dict[str, dict[str, Any]] = {}
    for m in messages_of(conn, enrollment_ids):
        message: dict[str, Any] = {
            "kind": m.kind,
            "status": m.status,
            "not_before": m.not_before.isoformat(),
            "attempts": m.attempts,
        }
        if m.delivered_at is not None and m.status != "failed":
            message["delivered_at"] = m.delivered_at.isoformat()
        if m.next_attempt_at is not None and m.status == "retrying":  # else it is past
            message["next_attempt_at"] = m.next_attempt_at.isoformat()
        for name in ("last_error", "server_reply"):
            if (value := getattr(m, name)) is not None:
                message[name] = value
        out[m.idempotency_key] = message
    return out


def _with_messages(
    actions: list[dict[str, Any]],
    enrollment_id: int,
    run: int,
    messages: Mapping[str, dict[str, Any]],
) -> list[dict[str, Any]]:
    """Each external action with the state of the outbox message it wrote (`message`).

    An action that wrote a message is `done` as soon as the message is in the outbox; whether
    the message went is the outbox's to say: pending, sending, delivered (or caught by the
    mail catcher), retrying, failed or cancelled. The key is the
    one the engine gave the message (enrollment, step run, action); a create_record action's
    invitation has that key with `:invitation`.
    """
    if not messages:
        return actions
    out = []
    for a in actions:
        key = idempotency_key(enrollment_id, run, action_ref(a.get("key"), a.get("index")))
        message = messages.get(key) or messages.get(f"{key}:invitation")
        out.append({**a, "message": message} if message is not None else a)
    return out


def enrollment_view(conn: Connection, ctx: Context, enrollment_id: int) -> EnrollmentView:
    return _views(conn, ctx, [repo.enrollment_with_flow_key(conn, enrollment_id)])[0]


def record_status(ctx: Context, actor: Actor, record_id: int) -> RecordStatus:
    """The flows `record_id` is or was in (those `actor` can see), oldest first: current step,
    what it waits for, each step run with what each action did and why; and its history."""
    with read_connection(ctx.engine) as conn:
        rtype = record_type_of(conn, record_id)
        rows = repo.enrollments_of_record(conn, record_id, visible_flows(actor))
        if rtype is None and not rows:
            raise NotFoundError(f"no record with id {record_id}")
        visible_ids = [r.id for r in rows]
        history = [
            {"at": h.at.isoformat(), "enrollment_id": h.enrollment_id, "message": h.message}
            for h in history_of(conn, record_id, visible_ids)
        ]
        return RecordStatus(record_id, rtype, _views(conn, ctx, rows), history)


def flow_progress(ctx: Context, actor: Actor, flow_key: str) -> FlowProgress:
    """How a flow is doing: entered / inside / finished / left / cancelled, records per step now,
    and how many went through each step."""
    with read_connection(ctx.engine) as conn:
        flow = visible_flow(conn, actor, flow_key)
        by_status: dict[str, int] = {}
        per_step: dict[str, int] = {}
        for status, step_key, count in repo.count_by_status_and_step(conn, flow.id):
            by_status[status] = by_status.get(status, 0) + count
            if status in repo.RUNNING:
                step = step_key or "(not entered yet)"
                per_step[step] = per_step.get(step, 0) + count
        through = count_gone_through(conn, flow.id)
        emails = count_emails_of_flow(conn, flow.id)
        # What retention pruned, counted when it went (docs/retention.md).
        for (kind, step_or_kind, _), n in history_counts(conn, flow.id).items():
            if kind == "through":
                through[step_or_kind] = through.get(step_or_kind, 0) + n
            elif kind == "message" and step_or_kind == "email":
                emails += n
        [info] = repo.load_flows(
            conn, [(flow.id, flow.current_version)], definitions_cache(ctx)
        ).values()
    order = [s.key for s in info.definition.ordered_steps()]
    funnel = {key: through.get(key, 0) for key in order}
    funnel.update({k: v for k, v in through.items() if k not in funnel})
    return FlowProgress(
        flow=flow_key,
        entered=sum(by_status.values()),
        inside=sum(by_status.get(s, 0) for s in repo.RUNNING),
        finished=by_status.get("finished", 0),
        left=by_status.get("left", 0),
        cancelled=by_status.get("cancelled", 0),
        per_step=per_step,
        funnel=funnel,
        emails=emails,
    )


@dataclass(frozen=True)
class RunSummary:
    """One enrollment in the list of a flow's runs: which record, where it is, how it ended."""

    id: int  # the enrollment
    record_id: int
    record_name: str  # first and last name, or name / title; "" when the type has none
    status: str  # active | waiting | finished | left | cancelled | held
    step: str | None
    due_at: datetime | None
    entered_at: datetime
    finished_at: datetime | None
    end_reason: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "record_id": self.record_id,
            "record_name": self.record_name,
            "status": self.status,
            "step": self.step,
            "due_at": _iso(self.due_at),
            "entered_at": self.entered_at.isoformat(),
            "finished_at": _iso(self.finished_at),
            "end_reason": self.end_reason,
        }


RUN_STATUSES = tuple(s.value for s in EnrollmentStatus)


def _record_name(data: Mapping[str, Any] | None) -> str:
    if not data:
        return ""
    person = " ".join(str(data[k]) for k in ("first_name", "last_name") if data.get(k))
    return person or str(data.get("name") or data.get("title") or "")


def flow_runs(
    ctx: Context,
    actor: Actor,
    flow_key: str,
    *,
    status: str | None = None,
    step: str | None = None,
    after: int | None = None,
    limit: int = DEFAULT_PAGE_SIZE,
) -> Page[RunSummary]:
    """The records that are or were in a flow (its running processes and their ends), in
    enrollment order, `limit` at a time; only those with `status` / at `step` when given."""
    size = page_size(ctx, limit)
    if status is not None and status not in RUN_STATUSES:
        raise InvalidInputError(
            "the runs filter",
            [Problem("status", f"unknown status {status!r}", hint=", ".join(RUN_STATUSES))],
        )
    with read_connection(ctx.engine) as conn:
        flow = visible_flow(conn, actor, flow_key)
        rows = repo.runs_page(conn, flow.id, status=status, step=step, after=after, limit=size + 1)
    return keyset_page(
        [
            RunSummary(
                id=r.id,
                record_id=r.record_id,
                record_name=_record_name(r.data),
                status=r.status,
                step=r.step_key,
                # Only a running enrollment is due; an ended one keeps no due time.
                due_at=r.due_at if r.status in repo.RUNNING else None,
                entered_at=r.entered_at,
                finished_at=r.finished_at,
                end_reason=str((r.state or {}).get("end_reason") or ""),
            )
            for r in rows
        ],
        size,
    )
