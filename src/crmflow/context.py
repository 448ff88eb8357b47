"""What every use-case and the batch runner need: the database, the settings, the clock, who is
acting, and the few things derived from them (a flow's time zone, its parsed definitions).

It sits below `services` and `runner` (it imports only settings, the sandbox and
`store.database`), so that the runner can take a Context without importing a service;
`crmflow.services.context` re-exports it for the use-cases.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from functools import lru_cache
from zoneinfo import ZoneInfo

from crmflow.celsandbox import SANDBOX
from crmflow.engine.budget import EvaluationLimits
from crmflow.engine.definition import FlowDefinition
from crmflow.settings import Settings
from crmflow.store.database import Engine, create_db_engine

__all__ = ["Actor", "Context", "Role", "definitions_cache", "flow_zone", "system_clock"]


def system_clock() -> datetime:
    return datetime.now(UTC)


class Role(StrEnum):
    ADMIN = "admin"
    MANAGER = "manager"
    MEMBER = "member"


@dataclass(frozen=True)
class Actor:
    """The user on whose behalf a use-case runs (recorded as 'who' in every change)."""

    id: int
    username: str
    role: Role

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN

    @property
    def is_manager_or_admin(self) -> bool:
        return self.role in (Role.ADMIN, Role.MANAGER)


@dataclass
class Context:
    engine: Engine
    settings: Settings
    clock: Callable[[], datetime] = field(default=system_clock)

    @classmethod
    def from_settings(cls, settings: Settings) -> Context:
        return cls(engine=create_db_engine(settings.database_url), settings=settings)

    @property
    def zone(self) -> ZoneInfo:
        return self.settings.zone

    def now(self) -> datetime:
        return self.clock()

    @property
    def evaluation_limits(self) -> EvaluationLimits:
        """The budgets of each template render and condition (CRMFLOW_ACTION_TIME_LIMIT_MS) and
        of one record's run of steps (CRMFLOW_BATCH_TIME_LIMIT_MS: it runs inside the batch's
        write transaction); heavy CEL conditions run in the sandbox's child processes."""
        return _limits(self.settings.action_time_limit_ms, self.settings.batch_time_limit_ms)


@lru_cache(maxsize=8)
def _limits(time_limit_ms: int, call_time_limit_ms: int) -> EvaluationLimits:
    return EvaluationLimits(
        time_limit_ms=time_limit_ms, call_time_limit_ms=call_time_limit_ms, cel_runner=SANDBOX
    )


def flow_zone(ctx: Context, definition: FlowDefinition) -> ZoneInfo:
    """The time zone a flow's times are read in: its own, else the organisation's."""
    return ZoneInfo(definition.timezone) if definition.timezone else ctx.zone


# Flow definitions parsed once per flow version, per database (tests open many databases): a
# version that has run never changes, and the worker, the triggers and the views ask for the
# same few thousands of times.
_DEFINITIONS: weakref.WeakKeyDictionary[Engine, dict[tuple[int, int], FlowDefinition]] = (
    weakref.WeakKeyDictionary()
)


def definitions_cache(ctx: Context) -> dict[tuple[int, int], FlowDefinition]:
    """The parsed definitions of `ctx`'s database, by (flow id, version)."""
    return _DEFINITIONS.setdefault(ctx.engine, {})
