"""Actions on the record and crmflow's own data: values, status, groups, history, owner, SQL."""

from __future__ import annotations

from crmflow.engine.actions.base import ActionContext, ActionResult
from crmflow.engine.commands import (
    AddToGroup,
    AssignOwner,
    CreateRecord,
    RemoveFromGroup,
    RunSql,
    SetStatus,
    UpdateRecord,
    WriteHistory,
)
from crmflow.engine.definition import (
    AddToGroupAction,
    AssignOwnerAction,
    CreateRecordAction,
    HistoryAction,
    RemoveFromGroupAction,
    RunSqlAction,
    SetStatusAction,
    UpdateRecordAction,
)

__all__ = [
    "add_to_group",
    "assign_owner",
    "create_record",
    "history",
    "remove_from_group",
    "run_sql",
    "set_status",
    "update_record",
]


def update_record(action: UpdateRecordAction, index: int, ctx: ActionContext) -> ActionResult:
    values = ctx.values(action.values)
    command = UpdateRecord(**ctx.ids(index, action.key), values=values)
    return ActionResult((command,), command.describe(), record_updates=values)


def set_status(action: SetStatusAction, index: int, ctx: ActionContext) -> ActionResult:
    status = ctx.stored("status", ctx.render(action.status, field="status"))
    command = SetStatus(**ctx.ids(index, action.key), status=str(status))
    return ActionResult((command,), command.describe(), record_updates={"status": status})


def create_record(action: CreateRecordAction, index: int, ctx: ActionContext) -> ActionResult:
    # The new record is of another type: its values are checked by the store, which knows it.
    values = {name: ctx.value(raw, field=f"values.{name}") for name, raw in action.values.items()}
    command = CreateRecord(
        **ctx.ids(index, action.key),
        record_type=action.record_type,
        values=values,
        link_field=action.link_field,
        link_to=ctx.scope.record.id if action.link_field else None,
        invitation=action.invitation,
    )
    return ActionResult((command,), command.describe())


def add_to_group(action: AddToGroupAction, index: int, ctx: ActionContext) -> ActionResult:
    command = AddToGroup(
        **ctx.ids(index, action.key), group=ctx.render(action.group, field="group")
    )
    return ActionResult((command,), command.describe())


def remove_from_group(
    action: RemoveFromGroupAction, index: int, ctx: ActionContext
) -> ActionResult:
    command = RemoveFromGroup(
        **ctx.ids(index, action.key), group=ctx.render(action.group, field="group")
    )
    return ActionResult((command,), command.describe())


def assign_owner(action: AssignOwnerAction, index: int, ctx: ActionContext) -> ActionResult:
    command = AssignOwner(
        **ctx.ids(index, action.key),
        strategy=action.strategy,
        users=tuple(action.users),
        group=action.group,
        weights=dict(action.weights),
    )
    return ActionResult((command,), command.describe())


def history(action: HistoryAction, index: int, ctx: ActionContext) -> ActionResult:
    command = WriteHistory(
        **ctx.ids(index, action.key), message=ctx.render(action.message, field="message")
    )
    return ActionResult((command,), command.describe())


def run_sql(action: RunSqlAction, index: int, ctx: ActionContext) -> ActionResult:
    # Parameters are values (literals or CEL), never text pasted into the SQL.
    params = {name: ctx.value(raw, field=f"params.{name}") for name, raw in action.params.items()}
    command = RunSql(
        **ctx.ids(index, action.key),
        sql=action.sql,
        params=params,
        timeout_seconds=action.timeout_seconds,
    )
    return ActionResult((command,), command.describe())
