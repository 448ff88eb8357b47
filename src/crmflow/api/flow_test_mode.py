"""A flow's test mode over HTTP: `GET /api/flows/{key}/test-mode` reads it (who switched it
last and when), `PUT` with `{"enabled": true|false}` switches it (admins), as the flow's page
does."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from crmflow.api.deps import CurrentActor, ServiceContext
from crmflow.api.limits import GuardedRoute
from crmflow.services import flow_test_mode

router = APIRouter(prefix="/api/flows", tags=["flows"], route_class=GuardedRoute)


class TestModeSwitch(BaseModel):
    """The switch: on or off."""

    model_config = ConfigDict(extra="forbid")
    __test__ = False  # not a pytest test class, whatever its name

    enabled: bool = Field(description="True: every message of the flow goes to its test recipients")


class FlowTestMode(BaseModel):
    """A flow's test mode."""

    __test__ = False

    flow: str
    enabled: bool
    changed_by: str | None = Field(description="Who switched it last (null: never switched)")
    changed_at: datetime | None
    test_recipients: list[str] = Field(description="Where its messages go while it is on")


@router.get("/{key}/test-mode", response_model=FlowTestMode)
def get_test_mode(ctx: ServiceContext, actor: CurrentActor, key: str) -> dict[str, Any]:
    """The flow's test mode, who switched it last and when."""
    return flow_test_mode.flow_test_mode(ctx, actor, key).as_dict()


@router.put("/{key}/test-mode", response_model=FlowTestMode)
def put_test_mode(
    ctx: ServiceContext, actor: CurrentActor, key: str, body: TestModeSwitch
) -> dict[str, Any]:
    """Switch the flow's test mode on or off (admins). On needs the flow to list
    `test_recipients` (422 otherwise); the switch goes in the flow's history."""
    return flow_test_mode.set_flow_test_mode(ctx, actor, key, body.enabled).as_dict()
