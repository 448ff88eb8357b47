"""ask_by_email: an approval step's email to the person it asks (each active member of the group
it asks), with one signed link per button (`services.approval_links`). The rows join the
batch's outbox rows (`EffectBatch.outbox_rows`), written by the outbox applier. Whoever could
not be emailed (no address, deactivated, an empty group) is named in the record's history."""

from __future__ import annotations

from collections.abc import Sequence

from crmflow.engine.commands import AskByEmail
from crmflow.services.approval_links import approval_email_row
from crmflow.services.effects.batch import Applies, EffectBatch
from crmflow.store.database import Connection
from crmflow.store.groups import active_members_of_groups
from crmflow.store.history import HistoryEntry, insert_history
from crmflow.store.users import find_user_by_name, usernames_by_id

__all__ = ["APPROVAL_EMAILS"]


def _recipients(conn: Connection, command: AskByEmail) -> tuple[list[tuple[str, str]], str]:
    """(username, address) of each person to email, and who was left out and why."""
    ref = command.assignee.ref
    if command.assignee.kind == "group":
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
    out: list[tuple[str, str]] = []
    missing: list[str] = []
    for name in names:
        user = find_user_by_name(conn, name)
        if user is None or not user.active or not user.email:
            why = "no such user" if user is None else "disabled" if not user.active else "no email"
            missing.append(f"{name} ({why})")
        else:
            out.append((user.username, user.email))
    return out, ("no approval email to " + ", ".join(missing)) if missing else ""


def apply_approval_emails(batch: EffectBatch, commands: Sequence[AskByEmail]) -> None:
    lines: list[HistoryEntry] = []
    for command in commands:
        recipients, left_out = _recipients(batch.conn, command)
        if left_out:
            text = f"Step {command.step_key!r}: {left_out}; the decision is in the task lists"
            lines.append(
                HistoryEntry(batch.record_id(command), command.enrollment_id, text, batch.now)
            )
        batch.outbox_rows += [
            approval_email_row(
                batch.ctx,
                batch.conn,
                command,
                username=username,
                address=address,
                record_id=batch.record_id(command),
                flow_key=batch.flow_of[command.enrollment_id],
                now=batch.now,
            )
            for username, address in recipients
        ]
    insert_history(batch.conn, lines)


APPROVAL_EMAILS = Applies[AskByEmail]((AskByEmail,), apply_approval_emails)
