"""Health, login and the published JSON Schema of flow documents."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel

from crmflow.api.deps import CurrentActor, ServiceContext
from crmflow.engine.jsonschema import flow_json_schema
from crmflow.services import users

router = APIRouter(prefix="/api", tags=["meta"])


class Login(BaseModel):
    username: str
    password: str


@router.get("/health")
def health(ctx: ServiceContext) -> dict[str, str]:
    with ctx.engine.connect() as conn:
        conn.exec_driver_sql("select 1")
    return {"status": "ok", "database": ctx.engine.dialect.name}


@router.post("/auth/token")
def login(ctx: ServiceContext, body: Login) -> dict[str, Any]:
    """Exchange a username and password for a new API token (shown once)."""
    created = users.login(ctx, body.username, body.password)
    return {"token": created.token, "token_id": created.id, "type": "bearer"}


@router.get("/me")
def me(ctx: ServiceContext, actor: CurrentActor) -> dict[str, Any]:
    return users.get_user(ctx, actor.username).as_dict()


@router.get("/schema/flow")
def flow_schema(_actor: CurrentActor) -> dict[str, Any]:
    """The JSON Schema of flow documents (also `crmflow schema`)."""
    return flow_json_schema()
