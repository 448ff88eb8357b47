"""`crmflow users ...` and `crmflow groups ...`.

The services are imported inside the commands (see cli/common.py): `--help` stays fast.
"""

from __future__ import annotations

from typing import Annotated

import typer

from crmflow.cli.common import print_json, print_table, reports_errors, state

users_app = typer.Typer(help="Users, roles and API tokens.", no_args_is_help=True)
groups_app = typer.Typer(help="Groups of users.", no_args_is_help=True)

Username = Annotated[str, typer.Argument(metavar="USER", help="A username.")]
GroupName = Annotated[str, typer.Argument(metavar="GROUP", help="A group's name.")]
Role = Annotated[str | None, typer.Option(metavar="ROLE", help="admin, manager or member")]
Name = Annotated[str | None, typer.Option(metavar="TEXT", help="Display name")]
Email = Annotated[str | None, typer.Option(metavar="EMAIL", help="Email address")]
Manager = Annotated[
    str | None,
    typer.Option(metavar="USER", help='The user\'s manager (a username; "" removes it)'),
]


@users_app.command("list")
@reports_errors
def list_users() -> None:
    """Every user with role, groups and whether they are active."""
    from crmflow.services import users

    rows = [
        (
            u.username,
            u.role.value,
            u.display_name,
            u.email,
            ", ".join(u.groups),
            u.manager,
            u.active,
        )
        for u in users.list_users(state.context)
    ]
    columns = ["username", "role", "name", "email", "groups", "manager", "active"]
    print_table("Users", columns, rows)


@users_app.command("create")
@reports_errors
def create(
    username: Username,
    role: Annotated[str, typer.Option(metavar="ROLE", help="admin, manager or member")] = "member",
    name: Name = None,
    email: Email = None,
    password: Annotated[
        str | None,
        typer.Option(metavar="PASSWORD", help="At least 8 characters; omit for a token-only user"),
    ] = None,
    manager: Manager = None,
) -> None:
    """Create a user (admins only)."""
    from crmflow.services import users

    view = users.create_user(
        state.context,
        state.actor,
        username=username,
        role=role,
        display_name=name,
        email=email,
        password=password,
        manager=manager,
    )
    print_json(view.as_dict())


@users_app.command("update")
@reports_errors
def update(
    username: Username,
    role: Role = None,
    name: Name = None,
    email: Email = None,
    password: Annotated[str | None, typer.Option(metavar="PASSWORD", help="A new password")] = None,
    active: Annotated[
        bool | None,
        typer.Option("--active/--inactive", metavar="", help="Let the user sign in, or not"),
    ] = None,
    manager: Manager = None,
) -> None:
    """Change a user's role, name, email, password, active flag or manager (admins only)."""
    from crmflow.services import users

    view = users.update_user(
        state.context,
        state.actor,
        username,
        role=role,
        display_name=name,
        email=email,
        password=password,
        active=active,
        manager=manager,
    )
    print_json(view.as_dict())


@users_app.command("token")
@reports_errors
def token(
    username: Username,
    name: Annotated[str, typer.Option(metavar="LABEL", help="A label")] = "cli",
) -> None:
    """Create an API token for a user; it is printed once (only its hash is stored)."""
    from crmflow.services import users

    created = users.create_token(state.context, state.actor, username, name)
    print_json({"token": created.token, "token_id": created.id, "name": created.name})


@users_app.command("revoke-token")
@reports_errors
def revoke(
    token_id: Annotated[
        int, typer.Argument(metavar="ID", help="The token's id (token prints it).")
    ],
) -> None:
    """Revoke an API token: calls made with it are refused from now on."""
    from crmflow.services import users

    users.revoke_token(state.context, state.actor, token_id)


@groups_app.command("list")
@reports_errors
def list_groups() -> None:
    """Every group with its members."""
    from crmflow.services import users

    rows = [
        (g["name"], g["description"], ", ".join(g["members"]))
        for g in users.list_groups(state.context)
    ]
    print_table("Groups", ["name", "description", "members"], rows)


@groups_app.command("create")
@reports_errors
def create_group(
    name: GroupName,
    description: Annotated[str, typer.Option(metavar="TEXT", help="What the group is")] = "",
) -> None:
    """Create a group of users."""
    from crmflow.services import users

    print_json(users.create_group(state.context, state.actor, name, description))


@groups_app.command("add")
@reports_errors
def add(group: GroupName, username: Username) -> None:
    """Add a user to a group."""
    from crmflow.services import users

    users.add_group_member(state.context, state.actor, group, username)


@groups_app.command("remove")
@reports_errors
def remove(group: GroupName, username: Username) -> None:
    """Remove a user from a group."""
    from crmflow.services import users

    users.remove_group_member(state.context, state.actor, group, username)
