"""The answers about users, groups and API tokens; they mirror `crmflow.services.users`."""

from __future__ import annotations

from pydantic import BaseModel, Field

from crmflow.services.context import Role

__all__ = ["CreatedToken", "Group", "User"]


class User(BaseModel):
    id: int
    username: str
    display_name: str
    email: str | None
    role: Role
    active: bool = Field(description="false: the user may not sign in nor use their tokens")
    groups: list[str] = Field(description="Names of the groups the user is in, sorted")
    manager: str | None = Field(
        default=None,
        description="The username of the user's manager (asked by a `manager_of` "
        "responsibility), or null",
    )


class Group(BaseModel):
    id: int
    name: str
    description: str
    members: list[str] = Field(description="Usernames of its members, sorted")


class CreatedToken(BaseModel):
    token: str = Field(
        description="The API token, to send as `Authorization: Bearer <token>`; shown only "
        "this once (only its hash is kept)"
    )
    token_id: int = Field(description="Its id, to revoke it with DELETE /api/tokens/{token_id}")
    name: str
