"""Who of a list of users an email from crmflow can reach: an active user with an address.

Approval emails (`approval_links`) and deadline notices (`deadlines`) both email the people a
step names, the user or each member of a group, and say who was left out and why.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from crmflow.store.database import Connection
from crmflow.store.users import users_named

__all__ = ["Reachable", "reachable_by_email"]


@dataclass(frozen=True)
class Reachable:
    """`emailed`: (username, address) in the order asked; `missing`: (name, why) of the rest."""

    emailed: list[tuple[str, str]]
    missing: list[tuple[str, str]]


def reachable_by_email(conn: Connection, names: Sequence[str]) -> Reachable:
    """Split `names` into the users an email reaches and the others, with the reason ("no such
    user", "disabled", "no email"), in one read of the users."""
    found = users_named(conn, names)
    emailed: list[tuple[str, str]] = []
    missing: list[tuple[str, str]] = []
    for name in names:
        user = found.get(name)
        if user is None or not user.active or not user.email:
            why = "no such user" if user is None else "disabled" if not user.active else "no email"
            missing.append((name, why))
        else:
            emailed.append((user.username, user.email))
    return Reachable(emailed, missing)
