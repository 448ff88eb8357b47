"""`crmflow tasks list/show/start/complete/comment/reassign`: your task list, and what you do
to a task (docs/people.md, "Task lists"). `crmflow --as USER tasks ...` acts as USER."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from crmflow.cli.common import console, print_json, print_table, reports_errors, state

if TYPE_CHECKING:
    from crmflow.services.tasks import TaskView

app = typer.Typer(
    help="Task lists: the tasks and decisions flows ask of you (and of your team).",
    no_args_is_help=True,
)

JsonOption = Annotated[
    bool, typer.Option("--json", metavar="", help="Print JSON instead of a summary.")
]
TaskId = Annotated[int, typer.Argument(metavar="ID", help="The task's id (crmflow tasks list).")]
Note = Annotated[
    str | None, typer.Option("--comment", metavar="TEXT", help="Kept in the task's history.")
]


def _print(view: TaskView, as_json: bool) -> None:
    if as_json:
        print_json(view.as_dict())
        return
    late = " (late)" if view.late else ""
    console.print(
        f"task {view.id}: {view.title} [{view.status}{late}], given to {view.assignee}",
        highlight=False,
        markup=False,
    )
    due = view.due_at.isoformat() if view.due_at else "none"
    console.print(
        f"  flow {view.flow}, step {view.step}, record {view.record_id}, run "
        f"{view.enrollment_id}; due {due}",
        highlight=False,
        markup=False,
    )
    if view.buttons:
        decide = state.command("runs", "decide", str(view.enrollment_id), view.step, "BUTTON")
        console.print(
            f"  an approval: decide with `{decide}` ({', '.join(view.buttons)})",
            highlight=False,
            markup=False,
        )
    for e in view.history or []:
        who = e.by or "crmflow"
        detail = f": {e.detail}" if e.detail else ""
        console.print(
            f"  {e.at.isoformat()} {who} {e.action}{detail}", highlight=False, markup=False
        )


@app.command("list")
@reports_errors
def list_tasks(
    task_state: Annotated[
        str | None,
        typer.Option(
            "--state", metavar="STATE", help="open, in_progress, done, cancelled or late."
        ),
    ] = None,
    flow: Annotated[str | None, typer.Option(metavar="KEY", help="Only this flow's.")] = None,
    step: Annotated[str | None, typer.Option(metavar="STEP", help="Only this step's.")] = None,
    user: Annotated[
        str | None, typer.Option(metavar="USER", help="Only this user's (you, or your team).")
    ] = None,
    after: Annotated[int | None, typer.Option(metavar="ID", help="Start after this id.")] = None,
    limit: Annotated[int, typer.Option(metavar="N", help="How many, by id.")] = 50,
    as_json: JsonOption = False,
) -> None:
    """Your tasks (to you or to one of your groups), your team's if you manage one, everyone's
    for an admin."""
    from crmflow.services.tasks import list_page

    page = list_page(
        state.context,
        state.actor,
        state=task_state,
        flow=flow,
        step=step,
        user=user,
        after=after,
        limit=limit,
    )
    if as_json:
        print_json(page.as_dict(lambda t: t.as_dict()))
        return
    rows = (
        (
            str(t.id),
            t.title,
            t.status + (" (late)" if t.late else ""),
            t.assignee,
            t.due_at.isoformat() if t.due_at else "",
            f"{t.flow} / {t.step}",
            str(t.record_id),
        )
        for t in page.items
    )
    columns = ["id", "title", "state", "assignee", "due (UTC)", "flow / step", "record"]
    print_table("Tasks", columns, rows)
    if page.next_after is not None:
        more = state.command("tasks", "list", "--after", str(page.next_after))
        console.print(f"More: {more}", highlight=False, markup=False)


@app.command("show")
@reports_errors
def show(task_id: TaskId, as_json: JsonOption = False) -> None:
    """A task with its history: who did what, when."""
    from crmflow.services.tasks import show as show_task

    _print(show_task(state.context, state.actor, task_id), as_json)


@app.command("start")
@reports_errors
def start(task_id: TaskId, comment: Note = None, as_json: JsonOption = False) -> None:
    """Mark a task as started (in_progress)."""
    from crmflow.services.tasks import start as start_task

    _print(start_task(state.context, state.actor, task_id, comment), as_json)


@app.command("complete")
@reports_errors
def complete(task_id: TaskId, comment: Note = None, as_json: JsonOption = False) -> None:
    """Mark a task as done (an approval is decided with `crmflow runs decide` instead)."""
    from crmflow.services.tasks import complete as complete_task

    _print(complete_task(state.context, state.actor, task_id, comment), as_json)


@app.command("comment")
@reports_errors
def comment(
    task_id: TaskId,
    text: Annotated[str, typer.Argument(metavar="TEXT", help="The comment.")],
    as_json: JsonOption = False,
) -> None:
    """Add a comment to a task's history."""
    from crmflow.services.tasks import comment as comment_task

    _print(comment_task(state.context, state.actor, task_id, text), as_json)


@app.command("reassign")
@reports_errors
def reassign(
    task_id: TaskId,
    user: Annotated[str | None, typer.Option(metavar="USER", help="Give it to this user.")] = None,
    group: Annotated[str | None, typer.Option(metavar="GROUP", help="Or to this group.")] = None,
    comment: Note = None,
    as_json: JsonOption = False,
) -> None:
    """Give a task to another user or group (they find it in their list and inbox)."""
    from crmflow.services.tasks import reassign as reassign_task

    view = reassign_task(state.context, state.actor, task_id, user=user, group=group, note=comment)
    _print(view, as_json)
