"""Users, groups and tokens."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, status
from pydantic import BaseModel, Field

from crmflow.api.deps import CurrentActor, RowId, ServiceContext
from crmflow.api.limits import GuardedRoute
from crmflow.api.responses.users import CreatedToken, Group, User
from crmflow.services import users

router = APIRouter(prefix="/api", tags=["users"], route_class=GuardedRoute)


class UserCreate(BaseModel):
    username: str
    role: str
    display_name: str | None = None
    email: str | None = None
    password: str | None = None
    manager: str | None = None


class UserUpdate(BaseModel):
    role: str | None = None
    display_name: str | None = None
    email: str | None = None
    password: str | None = None
    active: bool | None = None
    manager: str | None = Field(
        default=None, description='A username; null or "" removes the user\'s manager'
    )


class GroupCreate(BaseModel):
    name: str
    description: str = ""


class TokenCreate(BaseModel):
    name: str = "api"


@router.get("/users", response_model=list[User])
def list_users(ctx: ServiceContext, _actor: CurrentActor) -> list[dict[str, Any]]:
    return [u.as_dict() for u in users.list_users(ctx)]


@router.post("/users", status_code=status.HTTP_201_CREATED, response_model=User)
def create_user(ctx: ServiceContext, actor: CurrentActor, body: UserCreate) -> dict[str, Any]:
    return users.create_user(ctx, actor, **body.model_dump()).as_dict()


@router.get("/users/{username}", response_model=User)
def get_user(ctx: ServiceContext, _actor: CurrentActor, username: str) -> dict[str, Any]:
    return users.get_user(ctx, username).as_dict()


@router.patch("/users/{username}", response_model=User)
def update_user(
    ctx: ServiceContext, actor: CurrentActor, username: str, body: UserUpdate
) -> dict[str, Any]:
    given = body.model_dump()
    if "manager" in body.model_fields_set and body.manager is None:
        given["manager"] = ""  # an explicit null removes the manager; leaving it out keeps it
    return users.update_user(ctx, actor, username, **given).as_dict()


@router.post(
    "/users/{username}/tokens", status_code=status.HTTP_201_CREATED, response_model=CreatedToken
)
def create_token(
    ctx: ServiceContext, actor: CurrentActor, username: str, body: TokenCreate
) -> dict[str, Any]:
    created = users.create_token(ctx, actor, username, body.name)
    return {"token": created.token, "token_id": created.id, "name": created.name}


@router.delete("/tokens/{token_id}", status_code=status.HTTP_204_NO_CONTENT)
def revoke_token(ctx: ServiceContext, actor: CurrentActor, token_id: RowId) -> None:
    users.revoke_token(ctx, actor, token_id)


@router.get("/groups", response_model=list[Group])
def list_groups(ctx: ServiceContext, _actor: CurrentActor) -> list[dict[str, Any]]:
    return users.list_groups(ctx)


@router.post("/groups", status_code=status.HTTP_201_CREATED, response_model=Group)
def create_group(ctx: ServiceContext, actor: CurrentActor, body: GroupCreate) -> dict[str, Any]:
    return users.create_group(ctx, actor, body.name, body.description)


@router.put("/groups/{group}/members/{username}", status_code=status.HTTP_204_NO_CONTENT)
def add_member(ctx: ServiceContext, actor: CurrentActor, group: str, username: str) -> None:
    users.add_group_member(ctx, actor, group, username)


@router.delete("/groups/{group}/members/{username}", status_code=status.HTTP_204_NO_CONTENT)
def remove_member(ctx: ServiceContext, actor: CurrentActor, group: str, username: str) -> None:
    users.remove_group_member(ctx, actor, group, username)
