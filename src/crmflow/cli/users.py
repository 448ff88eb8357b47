"""`crmflow users ...` and `crmflow groups ...`."""

from __future__ import annotations

from typing import Annotated

import typer

from crmflow.cli.common import print_json, print_table, reports_errors, state
from crmflow.services import users

users_app = typer.Typer(help="Users, roles and API tokens.", no_args_is_help=True)
groups_app = typer.Typer(help="Groups of users.", no_args_is_help=True)


@users_app.command("list")
@reports_errors
def list_users() -> None:
    rows = [
        (u.username, u.role.value, u.display_name, u.email, ", ".join(u.groups), u.active)
        for u in users.list_users(state.context)
    ]
    print_table("Users", ["username", "role", "name", "email", "groups", "active"], rows)


@users_app.command("create")
@reports_errors
def create(
    username: str,
    role: Annotated[str, typer.Option(help="admin, manager or member")] = "member",
    name: Annotated[str | None, typer.Option(help="Display name")] = None,
    email: str | None = None,
    password: Annotated[
        str | None, typer.Option(help="At least 8 characters; omit for a token-only user")
    ] = None,
) -> None:
    """Create a user (admins only)."""
    view = users.create_user(
        state.context,
        state.actor,
        username=username,
        role=role,
        display_name=name,
        email=email,
        password=password,
    )
    print_json(view.as_dict())


@users_app.command("update")
@reports_errors
def update(
    username: str,
    role: str | None = None,
    name: str | None = None,
    email: str | None = None,
    password: str | None = None,
    active: Annotated[bool | None, typer.Option("--active/--inactive")] = None,
) -> None:
    """Change a user's role, name, email, password or active flag (admins only)."""
    view = users.update_user(
        state.context,
        state.actor,
        username,
        role=role,
        display_name=name,
        email=email,
        password=password,
        active=active,
    )
    print_json(view.as_dict())


@users_app.command("token")
@reports_errors
def token(username: str, name: Annotated[str, typer.Option(help="A label")] = "cli") -> None:
    """Create an API token for a user; it is printed once (only its hash is stored)."""
    created = users.create_token(state.context, state.actor, username, name)
    print_json({"token": created.token, "token_id": created.id, "name": created.name})


@users_app.command("revoke-token")
@reports_errors
def revoke(token_id: int) -> None:
    users.revoke_token(state.context, state.actor, token_id)


@groups_app.command("list")
@reports_errors
def list_groups() -> None:
    rows = [
        (g["name"], g["description"], ", ".join(g["members"]))
        for g in users.list_groups(state.context)
    ]
    print_table("Groups", ["name", "description", "members"], rows)


@groups_app.command("create")
@reports_errors
def create_group(name: str, description: str = "") -> None:
    print_json(users.create_group(state.context, state.actor, name, description))


@groups_app.command("add")
@reports_errors
def add(group: str, username: str) -> None:
    """Add a user to a group."""
    users.add_group_member(state.context, state.actor, group, username)


@groups_app.command("remove")
@reports_errors
def remove(group: str, username: str) -> None:
    """Remove a user from a group."""
    users.remove_group_member(state.context, state.actor, group, username)
