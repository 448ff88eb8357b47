"""Decisions from an email (docs/people.md, "Decisions from an email").

An approval step with `email_link: true` emails the person it asks (each active member of the
group it asks) one link per button: `PUBLIC_URL/a/TOKEN`. The token names the run, the step run,
the button, the user and when the link stops working (CRMFLOW_APPROVAL_LINK_DAYS, default 7),
signed by `suppressions.signed_token` (HMAC-SHA256, CRMFLOW_SECRET_KEY). `GET /a/TOKEN` shows
what the link decides; `POST /a/TOKEN` decides as that user through `enrollments.decide`, so the
rules of the app apply (who may decide, self-approval, quorum). A link decides once
(`store.approval_links`). A changed, expired, used or already-decided link is refused saying
which, and nothing changes.

When the approval's task is given to someone else (`services.tasks.reassign`, an escalation),
the step asks them instead: they get the email with links of their own (`email_asked_again`),
and the links sent to whoever was asked before are refused, saying who is asked now.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from crmflow.engine.approvals import GROUP_PREFIX
from crmflow.engine.commands import (
    AskByEmail,
    Assignee,
    EmailPayload,
    idempotency_key,
    message_id,
)
from crmflow.engine.runtime import EnrollmentState, WaitKind
from crmflow.errors import ConflictError, CrmflowError, NotFoundError
from crmflow.services.context import Context
from crmflow.services.enrollments import decide
from crmflow.services.run_views import EnrollmentView
from crmflow.services.suppressions import signed_token, text_of_token
from crmflow.services.user_emails import reachable_by_email
from crmflow.services.users import actor_by_username
from crmflow.store.approval_links import LinkUse, find_link_use, linked_run, use_link
from crmflow.store.database import Connection, read_connection
from crmflow.store.groups import active_members_of_groups, group_names_by_user
from crmflow.store.outbox import insert_ignoring_duplicates
from crmflow.store.users import find_user_by_name, usernames_by_id

__all__ = [
    "LinkPage",
    "LinkTarget",
    "approval_email_row",
    "approval_recipients",
    "decide_by_link",
    "email_asked_again",
    "link_token",
    "link_url",
    "open_link",
]

_PURPOSE = "approval"

FORGED = (
    "this approval link is not valid: it was changed or cut short, or it was not made by this "
    "server. Open the whole link from the email, or decide in crmflow"
)


@dataclass(frozen=True)
class LinkTarget:
    """What a link decides: a button of a step run, as a user, until `expires_at`."""

    enrollment_id: int
    step_run: int
    button: str
    username: str
    expires_at: datetime


@dataclass(frozen=True)
class LinkPage:
    """What the confirmation page shows of a link that still works."""

    target: LinkTarget
    flow_key: str
    record_id: int
    step_key: str
    button_label: str
    comment_required: bool
    waiting_for: str


def link_token(ctx: Context, target: LinkTarget, *, conn: Connection | None = None) -> str:
    """The link's token (`conn`: the caller's transaction, see `suppressions.signed_token`)."""
    when = int(target.expires_at.timestamp())
    text = f"{target.enrollment_id}:{target.step_run}:{target.button}:{when}:{target.username}"
    return signed_token(ctx, _PURPOSE, text, conn=conn)


def link_url(ctx: Context, token: str) -> str:
    return f"{ctx.settings.public_base_url}/a/{token}"


def _target(ctx: Context, token: str) -> LinkTarget:
    """What `token` names; CrmflowError (400) when it was not made here or was changed."""
    text = text_of_token(ctx, _PURPOSE, token)
    parts = text.split(":", 4) if text is not None else []
    if len(parts) != 5 or not (parts[0].isdigit() and parts[1].isdigit() and parts[3].isdigit()):
        raise CrmflowError(FORGED)
    enrollment, run, button, when, username = parts
    expires = datetime.fromtimestamp(int(when), UTC)
    return LinkTarget(int(enrollment), int(run), button, username, expires)


def _used(use: LinkUse) -> ConflictError:
    return ConflictError(
        f"this link was already used: {use.username} pressed {use.button!r} with it on "
        f"{use.used_at.isoformat(timespec='minutes')}; a link decides once, nothing changed"
    )


def _current(state: EnrollmentState | None, target: LinkTarget, label: str) -> None:
    """ConflictError unless the run still waits at the step run the link names."""
    if (
        state is None
        or state.waiting is None
        or state.waiting.kind is not WaitKind.APPROVAL
        or state.current_run != target.step_run
    ):
        where = (
            f"it is {state.status.value}"
            + (f" at step {state.step_key!r}" if state.step_key else "")
            if state is not None
            else "it has not entered"
        )
        raise ConflictError(
            f"this step was already decided: the run has moved on ({where}), so the "
            f"{label!r} link changes nothing"
        )


def open_link(ctx: Context, token: str) -> LinkPage:
    """What the link decides, when it still can: CrmflowError (400) for a changed link,
    ConflictError for an expired, used or already-decided one, NotFoundError for a run that
    is gone."""
    target = _target(ctx, token)
    if ctx.now() >= target.expires_at:
        raise ConflictError(
            f"this link expired on {target.expires_at.isoformat(timespec='minutes')}: links "
            f"work {ctx.settings.approval_link_days} days; decide in crmflow instead"
        )
    with read_connection(ctx.engine) as conn:
        use = find_link_use(conn, token)
        if use is not None:
            raise _used(use)
        row = linked_run(conn, target.enrollment_id)
    if row is None:
        raise NotFoundError(f"the run {target.enrollment_id} this link decides is gone")
    state = EnrollmentState.model_validate(row.state) if row.state is not None else None
    buttons = state.waiting.buttons if state is not None and state.waiting else ()
    button = next((b for b in buttons if b.key == target.button), None)
    _current(state, target, button.label if button else target.button)
    assert state is not None and state.step_key is not None and state.waiting is not None
    if button is None:
        raise ConflictError(f"the step {state.step_key!r} has no button {target.button!r} now")
    asked = _asked_elsewhere(ctx, state.waiting.asked_of, target.username)
    if asked is not None:
        raise ConflictError(
            f"this link was sent to {target.username}, but the decision at step "
            f"{state.step_key!r} was given to {asked} since: it no longer decides, nothing "
            "changed. They got links of their own; or decide in crmflow"
        )
    voted = next((v for v in state.waiting.votes if v.by == target.username), None)
    if voted is not None:
        raise ConflictError(
            f"{target.username} already voted {voted.button!r} at step {state.step_key!r} on "
            f"{voted.at.isoformat(timespec='minutes')}; a vote counts once "
            f"({state.waiting.description})"
        )
    return LinkPage(
        target=target,
        flow_key=row.flow_key,
        record_id=row.record_id,
        step_key=state.step_key,
        button_label=button.label,
        comment_required=button.comment_required,
        waiting_for=state.waiting.description,
    )


def _asked_elsewhere(ctx: Context, asked_of: str | None, username: str) -> str | None:
    """Who the step asks now (`'dana'`, `group 'direction'`) when that is no longer
    `username`, whose link this is (the task was given to someone else); None while it is."""
    if asked_of is None:  # asked of nobody: an admin decides, as in the app
        return None
    with read_connection(ctx.engine) as conn:
        if asked_of.startswith(GROUP_PREFIX):
            group = asked_of.removeprefix(GROUP_PREFIX)
            user = find_user_by_name(conn, username)
            groups = group_names_by_user(conn, [user.id]).get(user.id, []) if user else []
            return None if group in groups else f"group {group!r}"
        # A user field's id (`enrollments.decide` reads it so too).
        if asked_of.isdigit() and find_user_by_name(conn, asked_of) is None:
            asked_of = usernames_by_id(conn, [int(asked_of)]).get(int(asked_of), asked_of)
    return None if asked_of == username else repr(asked_of)


def decide_by_link(ctx: Context, token: str, comment: str = "") -> tuple[LinkPage, EnrollmentView]:
    """Press the link's button as its user (`enrollments.decide`: the app's rules) and mark
    the link used, on one transaction; refused as `open_link` says, or as `decide` does."""
    page = open_link(ctx, token)
    target = page.target
    actor = actor_by_username(ctx, target.username)

    def mark_used(conn: Connection, state: EnrollmentState) -> None:
        _current(state, target, page.button_label)
        use = LinkUse(
            target.enrollment_id, target.step_run, target.button, actor.username, ctx.now()
        )
        if not use_link(conn, token, use):
            found = find_link_use(conn, token)
            raise _used(found or use)

    view = decide(
        ctx, actor, target.enrollment_id, page.step_key, target.button, comment, before=mark_used
    )
    return page, view


def approval_email_row(
    ctx: Context,
    conn: Connection,
    command: AskByEmail,
    *,
    username: str,
    address: str,
    record_id: int,
    flow_key: str,
    now: datetime,
    again: str = "",
) -> dict[str, object]:
    """The outbox row of the approval email to `username`: one link per button. `again`:
    what tells this email from those of the step run before (asked again after a
    reassignment), so that asking someone a second time emails them again."""
    expires = now + timedelta(days=ctx.settings.approval_link_days)
    lines = [command.title, "", f"Flow: {flow_key}", f"Record: {record_id}"]
    lines.append(f"Step: {command.step_key}")
    if command.due_at is not None:
        lines.append(f"Due: {command.due_at.isoformat(timespec='minutes')}")
    lines.append("")
    for key, label in command.buttons:
        target = LinkTarget(command.enrollment_id, command.step_run, key, username, expires)
        lines.append(f"{label}: {link_url(ctx, link_token(ctx, target, conn=conn))}")
    lines += [
        "",
        f"Each link asks you to confirm, decides once, and works until "
        f"{expires.isoformat(timespec='minutes')}. You can also decide in crmflow.",
    ]
    key = idempotency_key(
        command.enrollment_id, command.step_run, f"approval-email:{username}{again}"
    )
    payload = EmailPayload(
        message_id=message_id(key, ctx.settings.mail_from),
        to=(address,),
        subject=f"Decision needed: {command.title}",
        body="\n".join(lines) + "\n",
        archive=False,
        record_id=record_id,
        category="transactional",  # to a user of crmflow: no unsubscribe link
    )
    return {
        "enrollment_id": command.enrollment_id,
        "step_key": command.step_key,
        "step_run": command.step_run,
        "idempotency_key": key,
        "kind": "email",
        "payload": payload.model_dump(mode="json"),
        "status": "pending",
        "not_before": now,
        "attempts": 0,
        "created_at": now,
        "priority": 1,
    }


def approval_recipients(conn: Connection, assignee: Assignee) -> tuple[list[tuple[str, str]], str]:
    """(username, address) of each person an approval asking `assignee` emails (the user, or
    each active member of the group), and who was left out and why ("" when nobody was)."""
    ref = assignee.ref
    if assignee.kind == "group":
        names = [m.username for m in active_members_of_groups(conn, [str(ref)])]
        if not names:
            return [], f"group {ref!r} has no active member"
    # An id (a user field's); a username of digits (an employee number) is that user.
    elif isinstance(ref, int) or (ref.isdigit() and find_user_by_name(conn, ref) is None):
        found = usernames_by_id(conn, [int(ref)]).get(int(ref))
        if found is None:
            return [], f"no user with id {ref}"
        names = [found]
    else:
        names = [ref]
    reach = reachable_by_email(conn, names)
    left_out = ", ".join(f"{name} ({why})" for name, why in reach.missing)
    return reach.emailed, f"no approval email to {left_out}" if left_out else ""


def email_asked_again(
    ctx: Context,
    conn: Connection,
    command: AskByEmail,
    *,
    record_id: int,
    flow_key: str,
    now: datetime,
) -> str:
    """The approval email, with fresh links, to whoever the step asks now that its task was
    given to `command.assignee`, written to the outbox in the caller's transaction; who could
    not be emailed and why ("" when nobody was left out)."""
    recipients, left_out = approval_recipients(conn, command.assignee)
    again = f":again:{now.isoformat()}"
    rows = [
        approval_email_row(
            ctx,
            conn,
            command,
            username=username,
            address=address,
            record_id=record_id,
            flow_key=flow_key,
            now=now,
            again=again,
        )
        for username, address in recipients
    ]
    insert_ignoring_duplicates(conn, rows)
    return left_out
