"""Health, login and the published JSON Schema of flow documents."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from crmflow.api.deps import CurrentActor, ServiceContext
from crmflow.api.limits import GuardedRoute
from crmflow.api.responses.meta import FlowDocumentSchema, Health, Me, SignedIn
from crmflow.engine.jsonschema import flow_json_schema
from crmflow.services import users
from crmflow.services.health import check_health
from crmflow.services.throttle import SignInThrottle

router = APIRouter(prefix="/api", tags=["meta"], route_class=GuardedRoute)


class Login(BaseModel):
    username: str
    password: str


@router.get(
    "/health",
    response_model=Health,
    responses={
        200: {"description": "The database answers and the worker (if any) is alive"},
        503: {
            "description": "The database does not answer, or a worker is stuck or dead",
            "model": Health,
        },
    },
)
def health(ctx: ServiceContext) -> JSONResponse:
    """Liveness, without signing in: the database, and each worker's (and dispatcher's)
    heartbeat and last successful round. 503, with `reasons`, when the database does not
    answer, when this server's worker is stuck or dead, or when every worker is; no worker at
    all is said (`workers.status: none`) but is not a failure."""
    report = check_health(ctx)
    return JSONResponse(report.as_dict(), status_code=report.status_code)


def _sign_in_throttle(request: Request) -> SignInThrottle:
    """The app's count of failed sign-ins, made with the app (`create_app`): in the memory of
    this server process, so several `crmflow serve` processes each count on their own."""
    throttle = request.app.state.sign_in_throttle
    assert isinstance(throttle, SignInThrottle)
    return throttle


@router.post("/auth/token", response_model=SignedIn)
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


@router.get("/me", response_model=Me)
def me(ctx: ServiceContext, actor: CurrentActor) -> dict[str, Any]:
    return users.get_user(ctx, actor.username).as_dict()


@router.get("/schema/flow", response_model=FlowDocumentSchema)
def flow_schema(_actor: CurrentActor) -> dict[str, Any]:
    """The JSON Schema of flow documents (also `crmflow schema`)."""
    return flow_json_schema()
