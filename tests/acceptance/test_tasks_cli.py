"""`crmflow tasks` and `crmflow notifications` run as a user runs them (`--as USER`): the list,
completing a task and its history, a refusal that names who may, and the inbox read with
`--all`."""

from __future__ import annotations

import json

from crmflow.services.context import Context
from crmflow.services.users import actor_by_username
from crmflow.settings import Settings
from tests.acceptance.conftest import Run
from tests.acceptance.test_task_lists import CALL, PACK, _setup


def test_tasks_and_the_inbox_from_the_command_line(crmflow: Run, cli_env: dict[str, str]) -> None:
    crmflow("db", "upgrade")
    ctx = Context.from_settings(Settings(database_url=cli_env["CRMFLOW_DATABASE_URL"]))
    _setup(ctx, actor_by_username(ctx, "system"))
    ctx.engine.dispose()

    mine = json.loads(crmflow("--as", "andrei", "tasks", "list", "--json").stdout)["items"]
    assert sorted(t["title"] for t in mine) == [CALL, PACK]
    call = next(t for t in mine if t["title"] == CALL)["id"]

    refused = crmflow("--as", "ion", "tasks", "complete", str(call), check_exit=1)
    assert "only andrei (the assignee), their manager maria or an admin" in refused.stderr
    done = crmflow("--as", "andrei", "tasks", "complete", str(call), "--comment", "reached her")
    assert f"task {call}: {CALL} [done]" in done.stdout
    shown = crmflow("--as", "maria", "tasks", "show", str(call)).stdout
    assert "andrei completed: reached her" in shown

    inbox = crmflow("--as", "ion", "notifications", "list", "--unread").stdout
    assert "Ana joined" in inbox and "unread" in inbox
    listed = crmflow("--as", "ion", "notifications", "list", "--json").stdout
    messages = [n["message"] for n in json.loads(listed)["items"]]
    assert any(m.startswith('New task: "File Ana\'s papers"') for m in messages)  # ion's task
    assert (
        "3 notifications marked read"
        in crmflow("--as", "ion", "notifications", "read", "--all").stdout
    )
    both = crmflow("--as", "ion", "notifications", "read", check_exit=1)
    assert "give a notification's id or --all" in both.stderr
