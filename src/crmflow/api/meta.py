"""Health, login and the published JSON Schema of flow documents."""

from __future__ import annotations

import threading
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel

from crmflow.api.deps import CurrentActor, ServiceContext
from crmflow.engine.jsonschema import flow_json_schema
from crmflow.services import users
from crmflow.services.throttle import SignInThrottle

router = APIRouter(prefix="/api", tags=["meta"])


class Login(BaseModel):
    username: str
    password: str


@router.get("/health")
def health(ctx: ServiceContext) -> dict[str, str]:
    with ctx.engine.connect() as conn:
        conn.exec_driver_sql("select 1")
    return {"status": "ok", "database": ctx.engine.dialect.name}


_throttle_lock = threading.Lock()


def _sign_in_throttle(request: Request) -> SignInThrottle:
    """The app's count of failed sign-ins (one per server process)."""
    state = request.app.state
    with _throttle_lock:
        throttle: SignInThrottle | None = getattr(state, "sign_in_throttle", None)
        if throttle is None:
            throttle = state.sign_in_throttle = SignInThrottle()
    return throttle


@router.post("/auth/token")
def login(ctx: ServiceContext, body: Login, request: Request) -> dict[str, Any]:
    """Exchange a username and password for a new API token (shown once).

    Failed sign-ins are counted per username and per client address: past the limit
    (CRMFLOW_LOGIN_ATTEMPTS) they are refused with 429 and a Retry-After header, even with the
    right password, for CRMFLOW_LOGIN_LOCKOUT_SECONDS (doubling while failures go on)."""
    address = request.client.host if request.client is not None else None
    created = users.login(
        ctx,
        body.username,
        body.password,
        address=address,
        throttle=_sign_in_throttle(request),
    )
    return {"token": created.token, "token_id": created.id, "type": "bearer"}


@router.get("/me")
def me(ctx: ServiceContext, actor: CurrentActor) -> dict[str, Any]:
    return users.get_user(ctx, actor.username).as_dict()


@router.get("/schema/flow")
def flow_schema(_actor: CurrentActor) -> dict[str, Any]:
    """The JSON Schema of flow documents (also `crmflow schema`)."""
    return flow_json_schema()
