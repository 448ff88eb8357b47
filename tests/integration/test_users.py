from __future__ import annotations

import pytest

from crmflow.errors import (
    AuthenticationError,
    ConflictError,
    InvalidInputError,
    PermissionDeniedError,
)
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


def test_an_admin_cannot_change_their_own_role_nor_the_system_users(
    ctx: Context, admin: Actor
) -> None:
    users.create_user(ctx, admin, username="dana", role="admin")
    users.create_user(ctx, admin, username="eli", role="admin")
    dana = users.actor_by_username(ctx, "dana")
    with pytest.raises(ConflictError, match="you cannot change your own role"):
        users.update_user(ctx, dana, "dana", role="member")
    with pytest.raises(ConflictError, match="'system' stays an admin"):
        users.update_user(ctx, dana, "system", role="manager")
    assert users.get_user(ctx, "dana").role == users.get_user(ctx, "system").role == "admin"
    # The role given again unchanged (the admin page sends it with the manager) is no change.
    assert users.update_user(ctx, dana, "dana", role="admin", display_name="D").role == "admin"
    assert users.update_user(ctx, dana, "eli", role="member").role == "member"


def test_a_user_email_is_checked_and_stored_normalised(ctx: Context, admin: Actor) -> None:
    for bad in ("not-an-email", "@@@ not an email", "ana@"):
        with pytest.raises(InvalidInputError) as refused:
            users.create_user(ctx, admin, username="ana", role="member", email=bad)
        [problem] = refused.value.problems
        assert problem.path == "email" and "is not a valid email address" in problem.message
        with pytest.raises(InvalidInputError, match="not a valid email address"):
            users.update_user(ctx, admin, admin.username, email=bad)
    created = users.create_user(ctx, admin, username="ana", role="member", email="Ana@Example.ORG")
    assert created.email == "Ana@example.org"
    assert users.update_user(ctx, admin, "ana", email=" ").email in (None, "")
