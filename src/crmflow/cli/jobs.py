"""`crmflow jobs list`: the background jobs (a flow's long start, an import from the web), and
the job runner that `crmflow worker` and `crmflow serve` run beside their worker."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Annotated

import typer

from crmflow.cli.common import print_json, print_table, reports_errors, state

if TYPE_CHECKING:
    from crmflow.services.context import Context
    from crmflow.services.jobs import JobRunner

app = typer.Typer(
    help="Background jobs: long starts and imports asked for in the web application.",
    no_args_is_help=True,
)

STATES = ("waiting", "running", "done", "failed")


@app.command("list")
@reports_errors
def list_jobs(
    state_filter: Annotated[
        list[str] | None,
        typer.Option(
            "--state",
            metavar="STATE",
            help="Only jobs in this state (waiting, running, done, failed); repeat for several.",
        ),
    ] = None,
    limit: Annotated[
        int, typer.Option(metavar="N", min=1, max=1000, help="How many, newest first.")
    ] = 50,
    as_json: Annotated[
        bool, typer.Option("--json", metavar="", help="Print JSON instead of a table.")
    ] = False,
) -> None:
    """The newest background jobs: id, kind, what it works on, state, progress, who asked."""
    from crmflow.errors import InvalidInputError, Problem
    from crmflow.services.jobs import list_jobs as jobs_of

    states = tuple(state_filter or ())
    unknown = [s for s in states if s not in STATES]
    if unknown:
        raise InvalidInputError(
            "the jobs listed",
            [Problem("--state", f"{s!r} is not a state", f"one of {', '.join(STATES)}")
             for s in unknown],
        )  # fmt: skip
    found = jobs_of(state.context, state.actor, states=states, limit=limit)
    if as_json:
        print_json([j.as_dict() for j in found])
        return
    rows = (
        (
            j.id,
            j.kind,
            j.subject,
            j.state,
            f"{j.percent}%",
            j.attempts,
            j.by,
            j.created_at.isoformat(timespec="seconds"),
            j.error or "",
        )
        for j in found
    )
    print_table(
        "Jobs",
        ["id", "kind", "on", "state", "done", "attempts", "by", "asked at (UTC)", "error"],
        rows,
    )


def start_job_runner(ctx: Context, name: str) -> tuple[JobRunner, threading.Thread]:
    """A job runner in a thread of this process (`crmflow worker`, `crmflow serve`): it takes
    the jobs the web asked for, and those a stopped process left. Stop it with `.stop()`, then
    join the thread."""
    from crmflow.services.jobs import JobRunner

    runner = JobRunner(ctx, name=f"{name}:jobs")
    thread = threading.Thread(target=runner.run, name="crmflow-jobs", daemon=True)
    thread.start()
    return runner, thread
