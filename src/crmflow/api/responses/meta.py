"""The answers of the meta routes: the health check, the sign-in, the signed-in user and the
JSON Schema of flow documents."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, RootModel

from crmflow.api.responses.flows import Timestamp
from crmflow.services.context import Role

__all__ = ["FlowDocumentSchema", "Health", "HealthLoop", "HealthOfKind", "Me", "SignedIn"]


class HealthOfKind(BaseModel):
    """The workers (or the dispatchers) as a whole."""

    status: Literal["ok", "failing", "none"] = Field(
        description="`none`: none ran lately (said, not a failure); `failing`: every one is "
        "stuck or dead"
    )
    alive: int
    note: str


class HealthLoop(BaseModel):
    """One worker or dispatcher loop, by its heartbeat."""

    name: str
    kind: Literal["worker", "dispatcher"]
    in_this_process: bool
    state: Literal["alive", "stopped", "stuck", "dead"]
    reason: str | None = Field(description="Why it is not alive (null when it is)")
    started_at: Timestamp
    last_beat_seconds_ago: float | None
    last_success_seconds_ago: float | None = Field(
        description="Since its last round that completed (null: none yet)"
    )
    last_error: str | None


class Health(BaseModel):
    """The health check, 200 and 503 alike: keys marked "only when ..." are left out otherwise."""

    status: Literal["ok", "failing"]
    database: str = Field(description="The database's dialect: sqlite or postgresql")
    database_error: str | None = Field(
        default=None, description="Only when the database does not answer: its error"
    )
    workers: HealthOfKind | None = Field(default=None, description="Only when the database answers")
    dispatchers: HealthOfKind | None = Field(
        default=None, description="Only when the database answers"
    )
    loops: list[HealthLoop]
    reasons: list[str] | None = Field(
        default=None, description="Only when failing (503): what is wrong"
    )


class SignedIn(BaseModel):
    """A new API token: shown this once, only its hash is kept."""

    token: str = Field(description="Send it as `Authorization: Bearer <token>`")
    token_id: int = Field(description="To revoke it")
    type: Literal["bearer"]


class Me(BaseModel):
    """The signed-in user."""

    id: int
    username: str
    display_name: str
    email: str | None
    role: Role
    active: bool
    groups: list[str] = Field(description="The groups the user belongs to")
    manager: str | None = Field(default=None, description="The username of your manager, or null")


class FlowDocumentSchema(RootModel[dict[str, Any]]):
    """The JSON Schema (draft 2020-12) of flow documents: validate or autocomplete a flow
    with it (also `crmflow schema`)."""
