"""`crmflow dispatch`: deliver the outbox's emails (to CRMFLOW_SMTP_URL, or to the mail catcher
when none is set), SMS and webhooks; `--once` delivers what is due now and exits."""

from __future__ import annotations

import os
import signal
from types import FrameType
from typing import TYPE_CHECKING, Annotated

import typer

from crmflow.cli.common import console, err_console, reports_errors, state

if TYPE_CHECKING:
    import threading

    from crmflow.delivery.dispatcher import Dispatcher
    from crmflow.services.context import Context


@reports_errors
def dispatch(
    once: Annotated[
        bool, typer.Option("--once", metavar="", help="Deliver what is due now, then exit.")
    ] = False,
    batch_size: Annotated[int, typer.Option(metavar="N", help="Messages claimed per batch.")] = 50,
    threads: Annotated[
        int,
        typer.Option(
            min=1,
            max=32,
            metavar="N",
            help="Dispatchers in this process, each with its own SMTP connection.",
        ),
    ] = 1,
    lease_seconds: Annotated[
        float,
        typer.Option(
            min=1,
            metavar="SECONDS",
            help="How long claimed messages are ours before another dispatcher may take them "
            "(a dispatcher that died: they are sent again after this). Keep it well above "
            "twice the time one message may take (each SMTP reply may take 30 s): a message "
            "still sending when its lease runs out may be sent again.",
        ),
    ] = 300.0,
) -> None:
    """Deliver due outbox emails, SMS and webhooks: claim them in batches, send each, record
    how it went (delivered, retrying later, failed). SIGTERM or Ctrl-C stops it after the
    current message."""
    from datetime import timedelta

    from crmflow.delivery.dispatcher import Dispatcher, run_in_threads
    from crmflow.logs import configure as configure_logs

    ctx = state.context
    configure_logs(level=state.settings.log_level, fmt=state.settings.log_format)
    lease = timedelta(seconds=lease_seconds)
    dispatchers = [Dispatcher(ctx, batch_size=batch_size, lease=lease) for _ in range(threads)]
    target = "the mail catcher" if ctx.settings.smtp_url is None else "SMTP"
    if not once:

        def _stop(signum: int, _frame: FrameType | None) -> None:
            # Plain bytes, not rich: the signal may land during rich's first import.
            name = signal.Signals(signum).name
            os.write(2, f"{name}: finishing the current message\n".encode())
            for dispatcher in dispatchers:
                dispatcher.stop()

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        names = ", ".join(d.name for d in dispatchers)
        err_console.print(
            f"dispatcher {names} on {state.database_label} to {target}", highlight=False
        )
    total = run_in_threads(dispatchers, once=once)
    words = (
        f"delivered {total.delivered} ({target}), retrying {total.retrying}, failed {total.failed}"
    )
    if once:
        console.print(words, highlight=False)
    else:
        err_console.print(f"dispatcher stopped; {words}", highlight=False)


def start_dispatcher(ctx: Context) -> tuple[Dispatcher, threading.Thread]:
    """A dispatcher running in a thread of this process: what `crmflow serve` and `crmflow
    worker` run beside their worker, so that what the flows send goes without a second
    command. Stop it with `.stop()`, then join the thread."""
    import threading

    from crmflow.delivery.dispatcher import Dispatcher

    dispatcher = Dispatcher(ctx)
    thread = threading.Thread(target=dispatcher.run, name="crmflow-dispatcher", daemon=True)
    thread.start()
    return dispatcher, thread
