"""`crmflow`: serve, database, schema, and the sub-command groups.

Every sub-command module imports only typer, rich and cli/common at the top, so building this
app (for `crmflow --help`, or to run one command) loads no service, SQLAlchemy, FastAPI,
Jinja2 or CEL: each command imports what it uses when it runs (bench/bench_cli_start.py).
"""

from __future__ import annotations

import copy
import os
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType, ModuleType
from typing import TYPE_CHECKING, Annotated

import typer

from crmflow.cli import (
    backup,
    dispatch,
    flows,
    jobs,
    lists,
    mail,
    notifications,
    queries,
    records,
    retention,
    runs,
    simulate,
    status,
    suppressions,
    tasks,
    templates,
    users,
    worker,
)
from crmflow.cli.common import console, err_console, print_json, reports_errors, state

if TYPE_CHECKING:
    from crmflow.services.context import Context
    from crmflow.worker import Worker

app = typer.Typer(
    name="crmflow",
    help="Process automation for CRMs: flows as YAML, run on time and exactly once.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="The database: migrations.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(users.users_app, name="users")
app.add_typer(users.groups_app, name="groups")
app.add_typer(records.types_app, name="types")
app.add_typer(records.records_app, name="records")
app.add_typer(lists.app, name="lists")
app.add_typer(queries.app, name="queries")
app.add_typer(flows.app, name="flows")
app.command("simulate")(simulate.simulate)
app.add_typer(runs.app, name="runs")
app.add_typer(jobs.app, name="jobs")
app.command("worker")(worker.worker)
app.command("dispatch")(dispatch.dispatch)
app.command("backup")(backup.backup)
app.command("status")(status.status)
app.command("prune")(retention.prune)
app.add_typer(retention.archive_app, name="archive")
app.add_typer(mail.app, name="mail")
app.add_typer(templates.app, name="templates")
app.add_typer(suppressions.app, name="suppressions")
app.add_typer(tasks.app, name="tasks")
app.add_typer(notifications.app, name="notifications")


@app.callback()
def _root(
    acting_as: Annotated[
        str | None,
        typer.Option(
            "--as",
            metavar="USER",
            help="The user this command acts as (default: CRMFLOW_CLI_USER, or 'system').",
        ),
    ] = None,
) -> None:
    state.acting_as = acting_as


@db_app.command("upgrade")
@reports_errors
def db_upgrade() -> None:
    """Apply the migrations (SQLite or PostgreSQL, from CRMFLOW_DATABASE_URL)."""
    from crmflow.services.setup import upgrade_database
    from crmflow.store.migrate import current_revision

    state.creates_database = True
    upgrade_database(state.context)
    revision = current_revision(state.context.engine)
    err_console.print(f"database {state.database_label} is at revision {revision}", highlight=False)


@db_app.command("current")
@reports_errors
def db_current() -> None:
    """Show the database's migration revision and the newest one."""
    from crmflow.store.migrate import current_revision, head_revision

    print_json({"current": current_revision(state.context.engine), "head": head_revision()})


@app.command("schema")
def schema() -> None:
    """Print the JSON Schema of flow documents."""
    from crmflow.engine.jsonschema import flow_json_schema

    print_json(flow_json_schema())


@app.command("demo")
@reports_errors
def demo() -> None:
    """Load the demo data (users of each role, groups, records, the example queries and flows)."""
    from crmflow.services.demo import DEMO_LOGINS, load_demo

    console.print(f"demo data: {load_demo(state.context)}", highlight=False)
    for login in DEMO_LOGINS:
        console.print(
            f"  {login.username:<7} {login.role:<8} "
            f"password {login.password:<12} token {login.token}",
            highlight=False,
        )


@app.command("serve")
@reports_errors
def serve(
    host: Annotated[str | None, typer.Option(metavar="HOST", help="Address to listen on.")] = None,
    port: Annotated[int | None, typer.Option(metavar="PORT", help="Port to listen on.")] = None,
    demo: Annotated[
        bool,
        typer.Option("--demo", metavar="", help="Load the demo data (once; harmless if present)."),
    ] = False,
    worker: Annotated[
        bool,
        typer.Option(
            "--worker/--no-worker",
            help="Run a worker, the dispatcher and the background jobs in this process too "
            "(PostgreSQL: --no-worker leaves them to `crmflow worker` and `crmflow dispatch`).",
        ),
    ] = True,
) -> None:
    """Run the web application (at /), the HTTP API (OpenAPI at /openapi.json, docs at
    /docs), the worker and the dispatcher (emails to CRMFLOW_SMTP_URL, or the mail catcher:
    `crmflow mail list`); with --no-worker, the web application and the API only.

    A new or empty database is set up first; one at an older migration is refused with the
    command to run (`crmflow db upgrade`)."""
    import uvicorn

    from crmflow.cli.shutdown import GRACEFUL_SECONDS, HARD_STOP_SECONDS, StoppingServer
    from crmflow.logs import configure as configure_logs
    from crmflow.services.demo import load_demo
    from crmflow.services.setup import prepare_to_serve
    from crmflow.web import create_site

    state.creates_database = True
    ctx = state.context
    configure_logs(level=state.settings.log_level, fmt=state.settings.log_format)
    if prepare_to_serve(ctx):
        err_console.print(f"set up a new database at {state.database_label}", highlight=False)
    host = host or state.settings.host
    port = port or state.settings.port
    # The links in emails (unsubscribe, approval buttons) default to the address served: the
    # web app, the worker, the dispatcher and the jobs of this process all read these settings.
    ctx.settings = state.settings.model_copy(update={"host": host, "port": port})
    if ctx.settings.public_url_unreachable:
        err_console.print(
            f"warning: {host} listens on every address, so the links in emails would point to "
            f"{ctx.settings.public_base_url}, which nobody can open: set CRMFLOW_PUBLIC_URL to "
            "the address people reach this server at (e.g. https://crm.example.org)",
            highlight=False,
        )
    if demo:
        summary = load_demo(ctx)
        console.print(f"demo data: {summary}", highlight=False)
    _print_where_to_look(f"http://{host}:{port}", demo=demo)
    embedded = _start_embedded(ctx) if worker else None
    if embedded is None:
        err_console.print(
            "no worker in this process (--no-worker): flows run in `crmflow worker`",
            highlight=False,
        )

    def _stop(_signum: int, _frame: FrameType | None) -> None:
        if embedded is not None:
            embedded.stop()

    # uvicorn handles SIGTERM / Ctrl-C itself (it stops serving) and then raises the signal
    # again with the handlers that were there before it: these, which stop the worker after
    # its batch instead of letting the default handler kill the process in the middle of it.
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    config = uvicorn.Config(
        create_site(ctx),
        host=host,
        port=port,
        log_level=state.settings.log_level.lower(),
        log_config=None,  # uvicorn's lines go through crmflow.logs (JSON or console)
        timeout_graceful_shutdown=GRACEFUL_SECONDS,
    )
    # At the signal the worker is told to stop too, and the process ends within
    # HARD_STOP_SECONDS whatever a request or a batch is doing (cli/shutdown.py).
    try:
        StoppingServer(
            config, on_stop=embedded.runner.stop if embedded is not None else lambda: None
        ).run()
    finally:
        if embedded is not None:
            embedded.stop()  # the server has stopped: finish the batch, then exit
            embedded.join(HARD_STOP_SECONDS)
    if embedded is not None:
        moved = embedded.runner.moved
        err_console.print(f"worker stopped; moved {moved} enrollment(s)", highlight=False)


@dataclass
class _Embedded:
    """What `serve` runs beside the web application: a worker, the dispatcher, the jobs."""

    runner: Worker
    stoppers: list[Callable[[], None]]
    threads: list[threading.Thread]

    def stop(self) -> None:
        for stop in self.stoppers:
            stop()

    def join(self, seconds: float) -> None:
        for thread in self.threads:
            thread.join(timeout=seconds)


def _start_embedded(ctx: Context) -> _Embedded:
    from crmflow.cli.dispatch import start_dispatcher
    from crmflow.cli.jobs import start_job_runner
    from crmflow.store.wakeups import on_work_committed
    from crmflow.worker import Worker

    # The embedded dispatcher: what the flows send goes (to CRMFLOW_SMTP_URL or the mail
    # catcher), woken by each batch that moved records.
    dispatcher, dispatching = start_dispatcher(ctx)
    # The embedded worker: flows run in the same process as the API (the SQLite default).
    runner = Worker(ctx, on_moved=dispatcher.wake)
    # A request that changes a record or starts a run wakes the worker at its commit, so the
    # worker can sleep until its next due time instead of polling.
    on_work_committed(ctx.engine, runner.wake)
    thread = threading.Thread(target=runner.run, name="crmflow-worker", daemon=True)
    thread.start()
    # The background jobs the web asks for (a long start, an import) run here too.
    job_runner, job_thread = start_job_runner(ctx, runner.name)
    # Stopped in this order: the worker (after its batch), a job left running (it goes on in
    # the next process, its lease), the message being sent.
    return _Embedded(
        runner=runner,
        stoppers=[runner.stop, job_runner.stop, dispatcher.stop],
        threads=[job_thread, thread, dispatching],
    )


def _print_where_to_look(base: str, *, demo: bool) -> None:
    """What `serve` prints first: its address, the web app, the API docs, and with the demo how
    to log in."""
    from crmflow.services.demo import DEMO_LOGINS

    console.print(f"crmflow on {base}  (database: {state.database_label})", highlight=False)
    console.print(f"  web app:   {base}/  (sign in with a username and password)", highlight=False)
    console.print(f"  API docs:  {base}/docs     OpenAPI: {base}/openapi.json", highlight=False)
    if not demo:
        return
    console.print("  log in with a demo user (username / password / API token):")
    for login in DEMO_LOGINS:
        console.print(
            f"    {login.username:<7} {login.role:<8} {login.password:<14} {login.token}",
            highlight=False,
        )
    console.print(
        f'  try:  curl -H "Authorization: Bearer {DEMO_LOGINS[0].token}" {base}/api/flows',
        highlight=False,
    )


def main() -> None:
    _without_the_cel_shell()
    _only_what_is_asked_for(app, sys.argv[1:])()


def _only_what_is_asked_for(root: typer.Typer, args: list[str]) -> typer.Typer:
    """`root` with only the group or command that `args` names (`crmflow flows validate ...`
    keeps `flows`), or `root` itself for its own help, completion or a word it does not know.

    Typer turns every command of every group into a click command before it parses the
    arguments: for all of crmflow's, a tenth of what `flows validate` takes. A group's usage,
    help and errors are the same without its siblings."""
    if any(name.startswith("_CRMFLOW_COMPLETE") for name in os.environ):
        return root
    words = iter(args)
    for word in words:
        if word == "--as":
            next(words, None)
        elif not word.startswith("--as="):
            break
    else:
        return root
    groups = [g for g in root.registered_groups if g.name == word]
    commands = [c for c in root.registered_commands if c.name == word]
    if len(groups) + len(commands) != 1:
        return root
    pruned = copy.copy(root)
    pruned.registered_groups, pruned.registered_commands = groups, commands
    return pruned


def _without_the_cel_shell() -> None:
    """Keep the `cel` package (CEL conditions) from loading its interactive shell.

    `import cel` also imports `cel.cli`, a REPL built on typer, rich, prompt_toolkit and
    pygments that crmflow never uses: about a tenth of a second of CPU on every command that
    reads a condition (`flows validate`). An empty module registered under that name first
    stands in for it; the engine's `import cel` and everything it evaluates are unchanged.
    """
    sys.modules.setdefault("cel.cli", ModuleType("cel.cli"))
