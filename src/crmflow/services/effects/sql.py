"""run_sql: an administrator's statements, last, each in its savepoint
(`services.sql_actions`)."""

from __future__ import annotations

from collections.abc import Sequence

from crmflow.engine.commands import RunSql
from crmflow.services.effects.batch import Applies, EffectBatch
from crmflow.services.sql_actions import run_sql_actions

__all__ = ["SQL"]


def apply_sql(batch: EffectBatch, commands: Sequence[RunSql]) -> None:
    run_sql_actions(batch.conn, batch.ctx.settings, commands, batch.fail)


SQL = Applies((RunSql,), apply_sql)
