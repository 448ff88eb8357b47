"""Who may do what. Roles: admin (everything, and the only one who may change flows, seed 001),
manager (records, imports, saved queries), member (reads, and creates and edits records)."""

from __future__ import annotations

from crmflow.errors import PermissionDeniedError
from crmflow.services.context import Actor

__all__ = ["require_admin", "require_manager"]


def require_admin(actor: Actor, doing: str) -> None:
    if not actor.is_admin:
        raise PermissionDeniedError(
            f"only admins may {doing}; {actor.username!r} is a {actor.role.value} "
            "(ask an admin, or have your role changed with `crmflow users update`)"
        )


def require_manager(actor: Actor, doing: str) -> None:
    if not actor.is_manager_or_admin:
        raise PermissionDeniedError(
            f"only managers and admins may {doing}; {actor.username!r} is a {actor.role.value}"
        )
