"""`crmflow worker`: run flows on time (any number of them on PostgreSQL), and the background
jobs the web application asks for (services.jobs)."""

from __future__ import annotations

import os
import signal
from types import FrameType
from typing import Annotated

import typer

from crmflow.cli.common import console, err_console, reports_errors, state


@reports_errors
def worker(
    once: Annotated[
        bool, typer.Option("--once", metavar="", help="Process what is due now, then exit.")
    ] = False,
    batch_size: Annotated[
        int, typer.Option(metavar="N", help="Enrollments claimed per batch.")
    ] = 500,
    lease_seconds: Annotated[
        float | None,
        typer.Option(
            metavar="SECONDS",
            hidden=True,
            help="Ignored (a batch holds no lease: it is taken and moved in one transaction).",
        ),
    ] = None,
    dispatch: Annotated[
        bool,
        typer.Option(
            "--dispatch/--no-dispatch",
            help="Run the dispatcher too (deliver the outbox's emails) in this process.",
        ),
    ] = True,
) -> None:
    """Run the worker: claim due records in batches, run their steps, write the results; and
    the dispatcher beside it (the emails go; `--no-dispatch` leaves them to `crmflow
    dispatch`). SIGTERM or Ctrl-C stops both after the current batch."""
    from crmflow.cli.dispatch import start_dispatcher
    from crmflow.cli.jobs import start_job_runner
    from crmflow.logs import configure as configure_logs
    from crmflow.worker import Worker, run_once

    ctx = state.context
    configure_logs(level=state.settings.log_level, fmt=state.settings.log_format)
    if once:
        moved = run_once(ctx, limit=batch_size)
        console.print(f"moved {moved} enrollment(s)", highlight=False)
        from crmflow.services.jobs import JobRunner
        from crmflow.worker import worker_name

        ran = JobRunner(ctx, name=f"{worker_name()}:jobs").run_once()
        if ran:
            console.print(f"ran {ran} background job(s)", highlight=False)
        return
    dispatcher, dispatching = start_dispatcher(ctx) if dispatch else (None, None)
    if lease_seconds is not None:
        err_console.print(
            "--lease-seconds is ignored: a batch holds no lease any more (it is taken and moved"
            " in one transaction); remove it from the command",
            highlight=False,
        )
    runner = Worker(
        ctx,
        batch_size=batch_size,
        on_moved=dispatcher.wake if dispatcher else None,
    )

    def _stop(signum: int, _frame: FrameType | None) -> None:
        # Plain bytes, not rich: the signal may land while rich is being imported for the first
        # print, and printing through it then fails on its half-loaded module.
        name = signal.Signals(signum).name
        os.write(2, f"{name}: finishing the current batch\n".encode())
        runner.stop()
        job_runner.stop()
        if dispatcher is not None:
            dispatcher.stop()

    # Beside the worker, the background jobs the web asks for (services.jobs).
    job_runner, job_thread = start_job_runner(ctx, runner.name)
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    err_console.print(
        f"worker {runner.name} on {state.database_label} (batch {batch_size})", highlight=False
    )
    try:
        runner.run()
    finally:
        job_runner.stop()
        job_thread.join(timeout=30)
        if dispatcher is not None and dispatching is not None:
            dispatcher.stop()
            dispatching.join(timeout=30)
    err_console.print(f"worker stopped; moved {runner.moved} enrollment(s)", highlight=False)
