"""The `run_sql` action's document: one SQL statement with bound parameters (admins only)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from crmflow.engine.definition.action_base import ActionBase, FieldValues

__all__ = ["RunSqlAction"]


class RunSqlAction(ActionBase):
    """SQL with named bound parameters (`:name`) only; needs the server's allow-SQL setting."""

    type: Literal["run_sql"]
    sql: Annotated[str, Field(min_length=1, max_length=20_000)]
    params: FieldValues = Field(default_factory=dict)
    timeout_seconds: Annotated[float, Field(gt=0, le=60, strict=False)] = 5.0
