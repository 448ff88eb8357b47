from __future__ import annotations

import pytest

from crmflow.errors import AuthenticationError, ConflictError, PermissionDeniedError
from crmflow.services import users
from crmflow.services.context import Actor, Context


def test_tokens_authenticate_and_only_their_hash_is_stored(ctx: Context, admin: Actor) -> None:
    users.create_user(ctx, admin, username="ana", role="member", password="secret-pass")
    created = users.create_token(ctx, admin, "ana", name="laptop")
    assert users.authenticate_token(ctx, created.token).username == "ana"
    with ctx.engine.connect() as conn:
        stored = conn.exec_driver_sql("select token_hash from api_tokens").scalars().all()
    assert created.token not in stored
    assert users.hash_token(created.token) in stored
    users.revoke_token(ctx, admin, created.id)
    with pytest.raises(AuthenticationError):
        users.authenticate_token(ctx, created.token)


def test_login_with_password(ctx: Context, admin: Actor) -> None:
    users.create_user(ctx, admin, username="ana", role="member", password="secret-pass")
    token = users.login(ctx, "ana", "secret-pass").token
    assert users.authenticate_token(ctx, token).username == "ana"
    with pytest.raises(AuthenticationError):
        users.login(ctx, "ana", "wrong-pass")


def test_only_admins_create_users_and_names_are_unique(
    ctx: Context, admin: Actor, member: Actor
) -> None:
    with pytest.raises(PermissionDeniedError, match="only admins"):
        users.create_user(ctx, member, username="x", role="member")
    with pytest.raises(ConflictError, match="already exists"):
        users.create_user(ctx, admin, username=member.username, role="member")


def test_groups_list_their_members(ctx: Context, admin: Actor, member: Actor) -> None:
    users.create_group(ctx, admin, "sales")
    users.add_group_member(ctx, admin, "sales", member.username)
    users.add_group_member(ctx, admin, "sales", member.username)  # twice is harmless
    assert users.list_groups(ctx)[0]["members"] == [member.username]
    assert users.get_user(ctx, member.username).groups == ("sales",)
