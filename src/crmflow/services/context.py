"""What every use-case needs: the database, the settings, the clock, and who is acting."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from functools import lru_cache
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from crmflow.celsandbox import SANDBOX
from crmflow.engine.budget import EvaluationLimits
from crmflow.settings import Settings
from crmflow.store.database import create_db_engine

__all__ = ["Actor", "Context", "Role", "system_clock"]


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
    engine: sa.Engine
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
