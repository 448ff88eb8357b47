"""`crmflow status` as a person runs it: the backlog and how late it is, the outbox, failures,
the workers seen in the last minute (issue 14), on one screen or as JSON."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from crmflow.engine.lifecycle import LifecycleAction
from crmflow.services import enrollments as runs
from crmflow.services import flows, records
from crmflow.services.context import Context
from crmflow.services.setup import upgrade_database
from crmflow.services.users import ensure_system_user
from crmflow.settings import Settings
from crmflow.store import heartbeats
from crmflow.testing import FrozenClock
from tests.acceptance.conftest import Run

FLOW = """\
schema_version: 1
key: nurture
name: Nurture
record_type: contact
owner: system
triggers: [{type: manual}]
steps:
  - key: hello
    actions:
      - type: send_email
        subject: "Hello {{ record.first_name }}"
        body: "Hi"
  - key: later
    timing: {type: after, amount: 1, unit: hours}
    actions:
      - type: history
        message: "an hour later"
"""


def _database_with_late_runs(url: str) -> None:
    """Two runs started three hours ago, their one-hour timers due two hours ago, no worker
    since; a worker seen 10 s ago."""
    ctx = Context.from_settings(Settings(database_url=url))
    real_now = datetime.now(UTC)
    ctx.clock = FrozenClock(real_now - timedelta(hours=3))
    upgrade_database(ctx)
    admin = ensure_system_user(ctx)
    flows.create_flow(ctx, admin, FLOW)
    flows.change_status(ctx, admin, "nurture", LifecycleAction.START)
    for name in ("Claire", "Ana"):
        view = records.create_record(
            ctx, admin, "contact", {"first_name": name, "last_name": "M", "email": "a@b.org"}
        )
        runs.start_record(ctx, admin, "nurture", view.id)
    beat = real_now - timedelta(seconds=10)
    heartbeats.started(ctx.engine, name="host:1:w", kind="worker", now=beat)
    heartbeats.beat(ctx.engine, name="host:1:w", kind="worker", now=beat, success_at=beat)
    ctx.engine.dispose()


def test_status_shows_the_late_backlog_the_outbox_and_the_workers(
    crmflow: Run, cli_env: dict[str, str], tmp_path: Path
) -> None:
    _database_with_late_runs(cli_env["CRMFLOW_DATABASE_URL"])

    figures = json.loads(crmflow("status", "--json").stdout)
    assert figures["database_ok"] is True
    assert figures["backlog"]["due"] == 2
    assert 2 * 3600 - 60 < figures["backlog"]["oldest_due_seconds"] < 2 * 3600 + 60
    assert figures["outbox"] == {"email": {"pending": 2, "sending": 0, "retrying": 0, "failed": 0}}
    assert figures["seen_last_minute"] == {"workers": 1, "dispatchers": 0}
    assert figures["failures"]["step_runs_last_hour"] == 0

    screen = crmflow("status").stdout
    assert "2 run(s) due now; the oldest 2 h 0 min past its due time" in screen
    assert "outbox email  2 pending (waiting or failed)" in screen
    assert "workers       1 seen in the last minute (1 alive)" in screen
    assert "dispatchers   0 — messages are not sent" in screen


def test_status_of_a_database_that_is_not_there_says_how_to_make_it(crmflow: Run) -> None:
    done = crmflow("status", check_exit=None)
    assert done.returncode != 0
    assert "crmflow db upgrade" in done.stderr
