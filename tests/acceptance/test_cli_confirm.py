"""Confirmations on the command line: one flag (`--confirm N`) everywhere; in a terminal the
number is asked for; in a script the refusal prints the exact command that confirms, with the
user's `--as`, and that command runs."""

from __future__ import annotations

import os
import pty
import select
import shlex
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from crmflow.engine.lifecycle import LifecycleAction
from crmflow.services import enrollments, flows, records, users
from crmflow.services.context import Actor, Context
from crmflow.services.setup import upgrade_database
from crmflow.services.users import actor_by_username
from crmflow.settings import Settings
from tests.acceptance.conftest import CRMFLOW, Run

HELD = """\
schema_version: 1
key: held
name: Held for a month
record_type: contact
triggers: [{type: manual}]
steps:
  - key: later
    timing: {type: after, amount: 30, unit: days}
    actions:
      - type: history
        message: "a month later"
"""
INSIDE = 3


@pytest.fixture
def ctx(cli_env: dict[str, str]) -> Iterator[Context]:
    """The CLI's database with the admin 'ana' and INSIDE records waiting in the active flow
    'held' (set up in process: the command line is what these tests are about)."""
    ctx = Context.from_settings(Settings(database_url=cli_env["CRMFLOW_DATABASE_URL"]))
    upgrade_database(ctx)
    system = actor_by_username(ctx, "system")
    users.create_user(ctx, system, username="ana", role="admin", password="password123")
    flows.create_flow(ctx, system, HELD)
    flows.change_status(ctx, system, "held", LifecycleAction.START)
    for i in range(INSIDE):
        record = records.create_record(ctx, system, "contact", {"last_name": f"R{i}"})
        enrollments.start_record(ctx, system, "held", record.id)
    yield ctx
    ctx.engine.dispose()


def _suggestion(stderr: str) -> list[str]:
    """The words after `crmflow` of the `to confirm: crmflow ...` line."""
    [line] = [line for line in stderr.splitlines() if line.startswith("to confirm: ")]
    words = shlex.split(line.removeprefix("to confirm: "))
    assert words[0] == "crmflow"
    return words[1:]


def test_outside_a_terminal_the_refusal_names_the_complete_command_and_it_runs(
    crmflow: Run, ctx: Context
) -> None:
    refused = crmflow("--as", "ana", "flows", "pause", "held", input="", check_exit=1)
    assert f"{INSIDE} record(s) are inside 'held'" in refused.stderr
    suggested = _suggestion(refused.stderr)
    assert suggested == ["--as", "ana", "flows", "pause", "held", "--confirm", str(INSIDE)]
    paused = crmflow(*suggested, input="")
    assert f"flow 'held' is paused ({INSIDE} record(s) inside)" in paused.stdout
    # The change was made as the user the suggestion kept.
    assert flows.flow_history(ctx, _ana(ctx), "held")[-1].actor == "ana"

    flows.change_status(ctx, _ana(ctx), "held", LifecycleAction.RESUME)
    wrong = crmflow("--as", "ana", "flows", "archive", "held", "--confirm", "2", check_exit=1)
    assert _suggestion(wrong.stderr)[-2:] == ["--confirm", str(INSIDE)]
    # The former flag still works (hidden from the help, with a note).
    old = crmflow("--as", "ana", "flows", "archive", "held", "--confirm-inside", str(INSIDE))
    assert "is archived" in old.stdout and "--confirm-inside is now --confirm" in old.stderr
    assert "--confirm-inside" not in crmflow("flows", "archive", "--help").stdout


def _ana(ctx: Context) -> Actor:
    return actor_by_username(ctx, "ana")


def _in_a_terminal(args: list[str], env: dict[str, str], cwd: Path, answer: str) -> tuple[int, str]:
    """Run `crmflow ARGS` on a pseudo-terminal, type `answer` at its question; its exit code and
    everything it showed."""
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [CRMFLOW, *args], env=env, cwd=cwd, stdin=terminal, stdout=terminal, stderr=terminal
    )
    os.close(terminal)
    shown = b""
    deadline = time.monotonic() + 60
    while b"to confirm:" not in shown and time.monotonic() < deadline:
        if select.select([controller], [], [], 1)[0]:
            shown += os.read(controller, 4096)
    os.write(controller, answer.encode() + b"\n")
    code = process.wait(timeout=60)
    while select.select([controller], [], [], 0.2)[0]:
        try:
            shown += os.read(controller, 4096)
        except OSError:  # the terminal closed with the process
            break
    os.close(controller)
    return code, shown.decode()


def test_in_a_terminal_the_number_is_asked_for(
    cli_env: dict[str, str], tmp_path: Path, ctx: Context
) -> None:
    args = ["--as", "ana", "flows", "pause", "held"]
    code, shown = _in_a_terminal(args, cli_env, tmp_path, answer="2")
    question = f"Pausing 'held' freezes the {INSIDE} record(s) inside. Type {INSIDE} to confirm:"
    assert question in shown
    assert code == 1 and "not confirmed" in shown
    assert flows.get_flow(ctx, _ana(ctx), "held").status.value == "active"
    code, shown = _in_a_terminal(args, cli_env, tmp_path, answer=str(INSIDE))
    assert code == 0 and "is paused" in shown, shown
