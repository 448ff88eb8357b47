"""`crmflow runs ...`: start a flow for a record, see where records are, decide, restart.

The services are imported inside the commands (see cli/common.py): `--help` stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from crmflow.cli.common import (
    console,
    print_json,
    print_more,
    print_table,
    reports_errors,
    state,
)

if TYPE_CHECKING:
    from crmflow.services import run_views

app = typer.Typer(
    help="Records in flows: start, where they are, decisions, restart.", no_args_is_help=True
)

JsonOption = Annotated[
    bool, typer.Option("--json", metavar="", help="Print JSON instead of a summary.")
]
FlowKey = Annotated[str, typer.Argument(metavar="FLOW", help="The flow's key.")]
RecordId = Annotated[int, typer.Argument(metavar="RECORD", help="The record's id.")]
EnrollmentId = Annotated[
    int,
    typer.Argument(
        metavar="ENROLLMENT", help="The enrollment's id (`crmflow runs show RECORD` prints it)."
    ),
]


def _summary(view: run_views.EnrollmentView) -> str:
    where = f"at step {view.step!r}" if view.step else "not entered yet"
    text = f"enrollment {view.id}: record {view.record_id} in flow {view.flow!r} {where}"
    text += f" ({view.status}"
    if view.waiting_for:
        text += f": {view.waiting_for}"
    if view.buttons:
        text += f"; buttons: {', '.join(view.buttons)}"
    if view.due_at and view.status in ("active", "waiting", "held"):
        text += f"; due {view.due_at.isoformat()}"
    if view.end_reason:
        text += f": {view.end_reason}"
    return text + ")"


def _print(view: run_views.EnrollmentView, as_json: bool) -> None:
    if as_json:
        print_json(view.as_dict())
    else:
        console.print(_summary(view), highlight=False, markup=False)


@app.command("start")
@reports_errors
def start(
    flow: FlowKey,
    record_id: RecordId,
    test: Annotated[
        bool,
        typer.Option(
            "--test",
            metavar="",
            help="Test mode: every message goes to the flow's test_recipients instead",
        ),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Start FLOW for one record now (the flow needs a `manual` trigger); with --test, in test
    mode (try it on your own contact first)."""
    from crmflow.services import enrollments

    view = enrollments.start_record(state.context, state.actor, flow, record_id, test=test)
    _print(view, as_json)


def _message_state(message: dict[str, Any] | None) -> str:
    """What became of the message an external action put in the outbox, in words: its state,
    whatever it is (pending, sending, delivered, caught, retrying, failed, cancelled, or a state
    delivery adds: suppressed, test), then what the row says of it."""
    if message is None:
        return ""
    status = message["status"]
    text = f" [{message['kind']} {status}"
    if status == "pending":
        text += f", not before {message['not_before']}"
    elif status == "sending":
        text += f", attempt {message['attempts']}"
    if message.get("delivered_at"):
        text += f" at {message['delivered_at']}"
    if status == "retrying":
        text += f", attempt {message['attempts']} failed, next at {message['next_attempt_at']}"
    if message.get("server_reply"):
        text += f", server said {message['server_reply']!r}"
    if message.get("last_error"):
        text += f": {message['last_error']}"
    return text + "]"


@app.command("list")
@reports_errors
def list_runs(
    flow: FlowKey,
    status: Annotated[
        str | None,
        typer.Option(
            metavar="STATUS",
            help="Only those with this status: active, waiting, finished, left, cancelled, held",
        ),
    ] = None,
    step: Annotated[
        str | None, typer.Option(metavar="STEP", help="Only the records at this step (its key)")
    ] = None,
    after: Annotated[
        int | None, typer.Option(metavar="ID", help="Show enrollments after this id")
    ] = None,
    limit: Annotated[int, typer.Option(metavar="N", help="At most this many, oldest first")] = 50,
    as_json: JsonOption = False,
) -> None:
    """The records that are or were in FLOW: where each is, and why it ended."""
    from crmflow.services import run_views

    page = run_views.flow_runs(
        state.context, state.actor, flow, status=status, step=step, after=after, limit=limit
    )
    if as_json:
        print_json(page.as_dict(lambda r: r.as_dict()))
    elif not page.items:
        console.print(f"no record in flow {flow!r} matches", highlight=False, markup=False)
    else:
        rows = [
            (
                r.id,
                r.record_id,
                r.record_name,
                r.status,
                r.step or "",
                f"{r.due_at:%Y-%m-%d %H:%M}" if r.due_at else "",
                f"{r.entered_at:%Y-%m-%d %H:%M}",
                f"{r.finished_at:%Y-%m-%d %H:%M}" if r.finished_at else "",
                r.end_reason,
            )
            for r in page.items
        ]
        columns = ["enrollment", "record", "name", "status", "step", "due (UTC)", "entered (UTC)"]
        print_table(f"Runs of {flow}", [*columns, "ended (UTC)", "why it ended"], rows)
    if page.next_after is not None and not as_json:
        print_more("runs", "list", flow, "--after", str(page.next_after))


@app.command("show")
@reports_errors
def show(record_id: RecordId, as_json: JsonOption = False) -> None:
    """The flows a record is or was in, the current step, and what each step run did."""
    from crmflow.services import run_views

    status = run_views.record_status(state.context, state.actor, record_id)
    if as_json:
        print_json(status.as_dict())
        return
    if not status.enrollments:
        console.print(f"record {record_id} has not been in any flow you can see", markup=False)
    for view in status.enrollments:
        console.print(_summary(view), highlight=False, markup=False)
        sent, total = view.emails
        if total:
            console.print(f"  emails: {sent}/{total}", highlight=False, markup=False)
        for run in view.step_runs:
            reason = f" — {run.reason}" if run.reason else ""
            console.print(
                f"  #{run.run} {run.step} [{run.status}] {run.started_at:%Y-%m-%d %H:%M}{reason}",
                highlight=False,
                markup=False,
            )
            for action in run.actions:
                console.print(
                    f"      {action['type']}: {action['status']} — {action['detail']}"
                    + _message_state(action.get("message")),
                    highlight=False,
                    markup=False,
                )
    for line in status.history:
        console.print(f"history {line['at']}: {line['message']}", highlight=False, markup=False)


@app.command("progress")
@reports_errors
def progress(flow: FlowKey, as_json: JsonOption = False) -> None:
    """How FLOW is doing: entered / inside / finished / left / cancelled, records per step."""
    from crmflow.services import run_views

    result = run_views.flow_progress(state.context, state.actor, flow)
    if as_json:
        print_json(result.as_dict())
        return
    console.print(
        f"flow {flow!r}: {result.entered} entered, {result.inside} inside, "
        f"{result.finished} finished, {result.left} left, {result.cancelled} cancelled, "
        f"{result.emails} email(s) written",
        highlight=False,
        markup=False,
    )
    rows = [(step, result.per_step.get(step, 0), done) for step, done in result.funnel.items()]
    rows += [(s, n, 0) for s, n in result.per_step.items() if s not in result.funnel]
    print_table("Steps", ["step", "records there now", "went through"], rows)


@app.command("decide")
@reports_errors
def decide(
    enrollment: EnrollmentId,
    step: Annotated[str, typer.Argument(metavar="STEP", help="The approval step's key.")],
    button: Annotated[str, typer.Argument(metavar="BUTTON", help="The button to press.")],
    comment: Annotated[
        str | None, typer.Option(metavar="TEXT", help="Why (some buttons require it)")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Press BUTTON on approval STEP of an enrollment (see `crmflow runs show RECORD`)."""
    from crmflow.services import enrollments

    view = enrollments.decide(state.context, state.actor, enrollment, step, button, comment)
    _print(view, as_json)


@app.command("cancel")
@reports_errors
def cancel(
    enrollment: EnrollmentId,
    reason: Annotated[
        str | None, typer.Option(metavar="TEXT", help="Why (kept on the run and the record)")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Stop one record's run where it is (managers and admins): its open tasks are cancelled and
    its emails not yet sent are not sent."""
    from crmflow.services import enrollments

    _print(enrollments.cancel_enrollment(state.context, state.actor, enrollment, reason), as_json)


@app.command("restart")
@reports_errors
def restart(enrollment: EnrollmentId, as_json: JsonOption = False) -> None:
    """Start a record over from the first step of its flow."""
    from crmflow.services import enrollments

    _print(enrollments.restart_enrollment(state.context, state.actor, enrollment), as_json)


@app.command("not-entered")
@reports_errors
def not_entered(
    flow: Annotated[
        str | None, typer.Option("--flow", metavar="FLOW", help="Only this flow (its key)")
    ] = None,
    record: Annotated[
        int | None, typer.Option("--record", metavar="ID", help="Only this record (its id)")
    ] = None,
    limit: Annotated[int, typer.Option(metavar="N", help="At most this many, newest first")] = 100,
    as_json: JsonOption = False,
) -> None:
    """Why records did not enter flows: entry condition false, already inside, flow draining..."""
    from crmflow.services import triggers

    found = triggers.entry_decisions_for(
        state.context, state.actor, flow_key=flow, record_id=record, limit=limit
    )
    if as_json:
        print_json({"items": [d.as_dict() for d in found]})
        return
    if not found:
        console.print("no record was kept out of a flow you can see", markup=False)
        return
    rows = [(f"{d.at:%Y-%m-%d %H:%M}", d.flow, d.record_id, d.trigger, d.reason) for d in found]
    print_table("Not entered", ["at (UTC)", "flow", "record", "trigger", "why"], rows)
