"""The admin pages (`/admin`): users (create; role, manager; deactivate and reactivate), groups
(members added and removed), API tokens (created and shown once; listed; revoked) and the
members of private flows.

Admins only: anyone else gets the 403 page, in the services' words (who may). Every change goes
through `services.users` and `services.flows`, with their rules and messages; names travel in form
fields, not in paths, so that a name with a slash or a dot needs no escaping.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Literal

from fastapi import Form, Query, Request
from fastapi.responses import Response

from crmflow.api.deps import AfterId, RowId
from crmflow.engine.definition import Visibility
from crmflow.errors import CrmflowError, InvalidInputError, Problem, SignInRequiredError
from crmflow.services import flows, users
from crmflow.services.context import Actor, Role
from crmflow.services.permissions import require_admin
from crmflow.web.auth import CurrentUser, context_of, safe_next, web_router
from crmflow.web.render import act_then_see, flash, render, see_other

router = web_router()

PAGE_SIZE = 50
ROLES = tuple(role.value for role in Role)
SECTIONS = (
    ("/admin", "Users"),
    ("/admin/groups", "Groups"),
    ("/admin/tokens", "API tokens"),
    ("/admin/flows", "Flow members"),
)

Name = Annotated[str, Form(max_length=200)]
Text = Annotated[str, Form(max_length=500)]
Back = Annotated[str, Form(max_length=2000)]
After = AfterId | None


def _admin(user: Actor) -> None:
    require_admin(user, "open the admin pages")


def _blank(value: str | None) -> str | None:
    value = (value or "").strip()
    return value or None


def _shown(value: datetime | None, request: Request) -> str:
    if value is None:
        return "—"
    return value.astimezone(context_of(request).zone).strftime("%Y-%m-%d %H:%M")


def _done(back: str, fallback: str, message: str, action: Callable[[], object]) -> Response:
    """Run `action` (a service call) and go back to the admin page the form was on."""
    target = safe_next(back) if back.startswith("/admin") else fallback
    return act_then_see(target, message, action)


# Users ---------------------------------------------------------------------------------------


@router.get("/admin")
def users_page(request: Request, user: CurrentUser, after: After = None) -> Response:
    _admin(user)
    ctx = context_of(request)
    page = users.users_page(ctx, user, after=after, limit=PAGE_SIZE)
    return render(
        request,
        "admin_users.html",
        sections=SECTIONS,
        page=page,
        roles=ROLES,
        here=str(request.url.path) + (f"?after={after}" if after is not None else ""),
    )


@router.post("/admin/users")
def create_user(
    request: Request,
    user: CurrentUser,
    username: Name,
    role: Name,
    display_name: Name = "",
    email: Name = "",
    password: Annotated[str, Form(max_length=200)] = "",
    manager: Name = "",
) -> Response:
    _admin(user)
    ctx = context_of(request)
    name = username.strip()

    def create() -> None:
        users.create_user(
            ctx,
            user,
            username=name,
            role=role,
            display_name=_blank(display_name),
            email=_blank(email),
            password=password or None,
            manager=_blank(manager),
        )

    return _done("/admin", "/admin", f"User {name} created.", create)


@router.post("/admin/users/update")
def update_user(
    request: Request,
    user: CurrentUser,
    username: Name,
    role: Name,
    manager: Name = "",
    back: Back = "/admin",
) -> Response:
    _admin(user)
    ctx = context_of(request)
    # An empty manager field removes the manager, as `manager=""` does in the service.
    chosen = manager.strip()
    said = f"manager {chosen}" if chosen else "no manager"

    def update() -> None:
        users.update_user(ctx, user, username, role=role, manager=chosen)

    return _done(back, "/admin", f"{username}: role {role}, {said}.", update)


@router.post("/admin/users/active")
def set_active(
    request: Request,
    user: CurrentUser,
    username: Name,
    active: Annotated[bool, Form()],
    back: Back = "/admin",
) -> Response:
    _admin(user)
    ctx = context_of(request)
    said = "reactivated" if active else "deactivated: their sessions have ended"

    return _done(
        back,
        "/admin",
        f"{username} {said}.",
        lambda: users.update_user(ctx, user, username, active=active),
    )


# Groups --------------------------------------------------------------------------------------


@router.get("/admin/groups")
def groups_page(request: Request, user: CurrentUser) -> Response:
    _admin(user)
    # Groups are few (teams, not people): listed whole, with their members.
    return render(
        request,
        "admin_groups.html",
        sections=SECTIONS,
        groups=users.list_groups(context_of(request)),
    )


@router.post("/admin/groups")
def create_group(
    request: Request, user: CurrentUser, name: Name, description: Text = ""
) -> Response:
    _admin(user)
    ctx = context_of(request)
    group = name.strip()

    def create() -> None:
        if not group:
            raise InvalidInputError(
                "the group", [Problem("name", "is empty", "give the group a name")]
            )
        users.create_group(ctx, user, group, description.strip())

    return _done("/admin/groups", "/admin/groups", f"Group {group} created.", create)


@router.post("/admin/groups/members")
def change_group_member(
    request: Request,
    user: CurrentUser,
    group: Name,
    username: Name,
    action: Annotated[Literal["add", "remove"], Form()],
) -> Response:
    _admin(user)
    ctx = context_of(request)
    member = username.strip()
    if action == "add":
        return _done(
            "/admin/groups",
            "/admin/groups",
            f"{member} added to {group}.",
            lambda: users.add_group_member(ctx, user, group, member),
        )
    return _done(
        "/admin/groups",
        "/admin/groups",
        f"{member} removed from {group}.",
        lambda: users.remove_group_member(ctx, user, group, member),
    )


# API tokens ----------------------------------------------------------------------------------


@router.get("/admin/tokens")
def tokens_page(request: Request, user: CurrentUser, after: After = None) -> Response:
    _admin(user)
    ctx = context_of(request)
    page = users.tokens_page(ctx, user, username=None, after=after, limit=PAGE_SIZE)
    return render(
        request,
        "admin_tokens.html",
        sections=SECTIONS,
        page=page,
        shown=lambda value: _shown(value, request),
        here=str(request.url.path) + (f"?after={after}" if after is not None else ""),
    )


@router.post("/admin/tokens")
def create_token(
    request: Request, user: CurrentUser, username: Name, name: Annotated[str, Form(max_length=100)]
) -> Response:
    _admin(user)
    ctx = context_of(request)
    owner, label = username.strip(), name.strip() or "api"
    try:
        created = users.create_token(ctx, user, owner, label)
    except SignInRequiredError:
        raise
    except CrmflowError as exc:
        response = see_other("/admin/tokens")
        flash(response, exc.message, kind="error")
        return response
    # Shown once, in this answer only: never stored in clear, never put in a redirect.
    return render(
        request,
        "admin_token_created.html",
        sections=SECTIONS,
        created=created,
        owner=owner,
        headers={"Cache-Control": "no-store"},
    )


@router.post("/admin/tokens/revoke")
def revoke_token(
    request: Request, user: CurrentUser, token_id: Annotated[RowId, Form()], back: Back = ""
) -> Response:
    _admin(user)
    ctx = context_of(request)
    return _done(
        back,
        "/admin/tokens",
        f"Token {token_id} revoked: it signs nothing in any more.",
        lambda: users.revoke_token(ctx, user, token_id),
    )


# Members of private flows --------------------------------------------------------------------


@router.get("/admin/flows")
def flows_page(
    request: Request,
    user: CurrentUser,
    after: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:
    _admin(user)
    page = flows.flows_page(context_of(request), user, after=after, limit=PAGE_SIZE)
    private = [f for f in page.items if f.visibility is Visibility.PRIVATE]
    return render(
        request,
        "admin_flows.html",
        sections=SECTIONS,
        private=private,
        next_after=page.next_after,
        here=str(request.url.path) + (f"?after={after}" if after is not None else ""),
    )


@router.post("/admin/flows/members")
def change_flow_member(
    request: Request,
    user: CurrentUser,
    flow: Name,
    username: Name,
    action: Annotated[Literal["add", "remove"], Form()],
    back: Back = "/admin/flows",
) -> Response:
    _admin(user)
    ctx = context_of(request)
    member = username.strip()
    if action == "add":
        return _done(
            back,
            "/admin/flows",
            f"{member} may now see flow {flow}.",
            lambda: flows.add_member(ctx, user, flow, member),
        )
    return _done(
        back,
        "/admin/flows",
        f"{member} removed from flow {flow}.",
        lambda: flows.remove_member(ctx, user, flow, member),
    )
