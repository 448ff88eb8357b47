"""Who may press a button on an approval step: the rule, pure.

The step asks one person or a group (`Waiting.asked_of`: a username or `group:<name>`, resolved
when the step started). That person, any member of that group, or an admin (who stands in for
anyone, and whose name the history keeps) may decide; nobody else. A step that could ask nobody
(an empty responsibility field) waits for an admin.

A step with `forbid_self_approval: {field: F}` refuses the user held in the record's field F
(the requester) whatever their role: nobody decides their own request, an admin neither.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

__all__ = ["Decider", "Requester", "asked_of_in_words", "decision_refusal"]

GROUP_PREFIX = "group:"


@dataclass(frozen=True)
class Decider:
    """The person pressing a button: their name, their groups, whether they are an admin."""

    username: str
    groups: Collection[str]
    is_admin: bool


def asked_of_in_words(asked_of: str | None) -> str:
    """Who the step asks, for a message: `maria`, `a member of group 'direction'`, `an admin`."""
    if asked_of is None:
        return "an admin (the step could ask nobody)"
    if asked_of.startswith(GROUP_PREFIX):
        return f"a member of group {asked_of.removeprefix(GROUP_PREFIX)!r} or an admin"
    return f"{asked_of!r} or an admin"


@dataclass(frozen=True)
class Requester:
    """Who made the request (`username`, None: the field is empty) and the record's field
    that holds them, for a step that forbids self-approval."""

    username: str | None
    field: str


def decision_refusal(
    asked_of: str | None, decider: Decider, requester: Requester | None = None
) -> str | None:
    """Why `decider` may not decide a step that asks `asked_of`, or None when they may."""
    if requester is not None and requester.username == decider.username:
        return (
            f"{decider.username!r} may not decide their own request: the record's "
            f"{requester.field!r} is {decider.username!r} and the step forbids self-approval; "
            f"it is asked of {asked_of_in_words(asked_of)}, who decides"
        )
    if decider.is_admin:
        return None
    if asked_of is not None:
        if asked_of.startswith(GROUP_PREFIX):
            if asked_of.removeprefix(GROUP_PREFIX) in decider.groups:
                return None
        elif asked_of == decider.username:
            return None
    return (
        f"{decider.username!r} may not decide this step: it is asked of "
        f"{asked_of_in_words(asked_of)}"
    )
