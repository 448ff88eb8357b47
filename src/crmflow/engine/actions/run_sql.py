"""run_sql: one SQL statement with bound parameters, for administrators (off unless the server
allows it); parameters are values (literals or CEL), never text pasted into the SQL."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field

from crmflow.engine.actions.base import ActionContext, ActionResult
from crmflow.engine.actions.kind import ActionChecker, Kind
from crmflow.engine.definition.action_base import ActionBase, FieldValues
from crmflow.engine.templates import is_template

if TYPE_CHECKING:
    from crmflow.engine.definition import ActionStep

__all__ = ["KIND", "RunSqlAction"]


class RunSqlAction(ActionBase):
    """SQL with named bound parameters (`:name`) only; needs the server's allow-SQL setting."""

    type: Literal["run_sql"]
    sql: Annotated[str, Field(min_length=1, max_length=20_000)]
    params: FieldValues = Field(default_factory=dict)
    timeout_seconds: Annotated[float, Field(gt=0, le=60, strict=False)] = 5.0


_SQL_STRING = re.compile(r"'(?:''|[^'])*'")
_SQL_PARAMETER = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")


def check(checker: ActionChecker, path: str, action: RunSqlAction, step: ActionStep) -> None:
    if not checker.scope.allow_sql:
        checker.add(
            path,
            "run_sql is turned off on this server",
            "an administrator must allow SQL actions in the server settings",
        )
    if is_template(action.sql) or "%s" in action.sql or "%(" in action.sql:
        checker.add(
            f"{path}.sql",
            "SQL may not be built from text",
            "write :name in the SQL and give its value under params",
        )
    bare = _SQL_STRING.sub("''", action.sql).strip().rstrip(";")
    if ";" in bare:
        checker.add(f"{path}.sql", "one SQL statement only", "split it into several actions")
    used = set(_SQL_PARAMETER.findall(bare))
    for name in sorted(used - set(action.params)):
        checker.add(f"{path}.params", f"the SQL uses :{name} but params has no {name!r}")
    for name in sorted(set(action.params) - used):
        checker.add(f"{path}.params.{name}", f"the SQL does not use :{name}")
    for name, value in action.params.items():
        checker.check_value(f"{path}.params.{name}", value, None)


def run(action: RunSqlAction, index: int, ctx: ActionContext) -> ActionResult:
    from crmflow.engine.commands import RunSql  # noqa: PLC0415 - runtime only

    params = {name: ctx.value(raw, field=f"params.{name}") for name, raw in action.params.items()}
    command = RunSql(
        **ctx.ids(index, action.key),
        sql=action.sql,
        params=params,
        timeout_seconds=action.timeout_seconds,
    )
    return ActionResult((command,), command.describe())


KIND = Kind(RunSqlAction, check, run)
