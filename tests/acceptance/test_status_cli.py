"""`crmflow status` as a person runs it: the backlog and how late it is, the outbox, failures,
the workers and dispatchers seen in the last minute (issue 14), on one screen or as JSON."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from crmflow.api.app import create_app
from crmflow.engine.lifecycle import LifecycleAction
from crmflow.services import enrollments as runs
from crmflow.services import flows, records
from crmflow.services.context import Context
from crmflow.services.health import check_health
from crmflow.services.setup import upgrade_database
from crmflow.services.users import ensure_system_user
from crmflow.settings import Settings
from crmflow.store import heartbeats
from crmflow.testing import FrozenClock
from tests.acceptance.conftest import CRMFLOW, Run

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
    nothing = {"pending": 0, "sending": 0, "retrying": 0, "failed": 0}
    assert figures["outbox"] == {
        "email": {**nothing, "pending": 2},
        "sms": nothing,
        "webhook": nothing,
    }
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


def test_workers_in_separate_processes_add_up_in_the_metrics_directory(
    crmflow: Run, cli_env: dict[str, str], tmp_path: Path
) -> None:
    """CRMFLOW_METRICS_DIR: two `crmflow worker --once` processes (two databases here, for
    brevity) each count what they moved; a third process, as /metrics does, adds them up."""
    metrics_dir = tmp_path / "metrics"
    cli_env["CRMFLOW_METRICS_DIR"] = str(metrics_dir)
    first = cli_env["CRMFLOW_DATABASE_URL"]
    second = f"sqlite:///{tmp_path / 'second.db'}"
    for url in (first, second):
        _database_with_late_runs(url)
        cli_env["CRMFLOW_DATABASE_URL"] = url
        assert "moved 2 enrollment(s)" in crmflow("worker", "--once").stdout
    read = subprocess.run(
        [
            sys.executable,
            "-c",
            "from crmflow.metrics import exposition; print(exposition().decode())",
        ],
        env=cli_env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(read)
        for s in family.samples
    }
    later = (("flow", "nurture"), ("outcome", "done"), ("step", "later"))
    assert samples[("crmflow_step_runs_total", later)] == 4
    assert samples[("crmflow_timer_lateness_seconds_count", ())] == 4
    # Two hours late: beyond the largest bucket but the +Inf one.
    assert samples[("crmflow_timer_lateness_seconds_bucket", (("le", "3600.0"),))] == 0
    assert samples[("crmflow_batch_size_count", ())] == 2


def test_a_damaged_metrics_file_leaves_the_other_figures(tmp_path: Path) -> None:
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    (metrics_dir / "counter_999.db").write_bytes(b"\x00\x01not a metrics file")
    env = {"CRMFLOW_METRICS_DIR": str(metrics_dir), "PATH": "/usr/bin:/bin"}
    code = (
        "from crmflow.metrics import exposition\n"
        "from prometheus_client.core import GaugeMetricFamily\n"
        "class C:\n"
        "    def collect(self):\n"
        "        yield GaugeMetricFamily('crmflow_database_up', 'up', value=1)\n"
        "print(exposition(C()).decode())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "# the processes' figures could not be read" in done.stdout
    assert "crmflow_database_up 1.0" in done.stdout


def _loops(ctx: Context) -> list[dict[str, Any]]:
    return check_health(ctx).loops


def _said(screen: str, label: str) -> str:
    """What `crmflow status` says on the line of `label` (its width depends on the labels)."""
    [line] = [line for line in screen.splitlines() if line.split("  ")[1:2] == [label]]
    return line.split(label, 1)[1].strip()


def _gauges(local: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    answer = local.get("/metrics")
    assert answer.status_code == 200, answer.text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(answer.text)
        for s in family.samples
    }


@pytest.mark.parametrize("command", ["dispatch", "worker"])
def test_a_running_dispatcher_is_seen_alive_and_gone_once_it_stopped(
    ctx: Context, crmflow: Run, cli_env: dict[str, str], tmp_path: Path, command: str
) -> None:
    """`crmflow dispatch` (or `crmflow worker`, whose dispatcher runs beside it) in a process of
    its own, at rest: `crmflow status`, /api/health and /metrics see one dispatcher alive; once
    SIGTERM stopped it, none (its heartbeat says it stopped)."""
    ctx.clock = lambda: datetime.now(UTC)
    cli_env["CRMFLOW_DATABASE_URL"] = ctx.settings.database_url
    assert _said(crmflow("status").stdout, "dispatchers").startswith("0 — messages are not sent")
    child = subprocess.Popen(
        [CRMFLOW, command], env=cli_env, cwd=tmp_path, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 60
        while not any(loop["kind"] == "dispatcher" for loop in _loops(ctx)):
            assert child.poll() is None, child.communicate()[1]
            assert time.monotonic() < deadline, "no dispatcher heartbeat within 60 s"
            time.sleep(0.1)
        figures = json.loads(crmflow("status", "--json").stdout)
        assert figures["seen_last_minute"]["dispatchers"] == 1
        [loop] = [loop for loop in figures["loops"] if loop["kind"] == "dispatcher"]
        assert loop["state"] == "alive" and ":dispatch-" in loop["name"]  # host:pid:dispatch-…
        screen = crmflow("status").stdout
        assert _said(screen, "dispatchers") == "1 seen in the last minute (1 alive)"
        if command == "worker":
            assert _said(screen, "workers") == "1 seen in the last minute (1 alive)"
        with TestClient(create_app(ctx), client=("127.0.0.1", 40000)) as local:
            health = local.get("/api/health").json()
            assert health["dispatchers"] == {"status": "ok", "alive": 1, "note": "1 of 1 alive"}
            gauges = _gauges(local)
        dispatcher = (("kind", "dispatcher"),)
        assert gauges[("crmflow_loops_seen_last_minute", dispatcher)] == 1
        assert gauges[("crmflow_loops", (*dispatcher, ("state", "alive")))] == 1
        assert gauges[("crmflow_loop_last_beat_age_seconds", dispatcher)] < 60
    finally:
        child.send_signal(signal.SIGTERM)
        _, stderr = child.communicate(timeout=60)
    assert child.returncode == 0, stderr

    figures = json.loads(crmflow("status", "--json").stdout)
    assert figures["seen_last_minute"] == {"workers": 0, "dispatchers": 0}
    assert {loop["state"] for loop in figures["loops"]} == {"stopped"}
    assert _said(crmflow("status").stdout, "dispatchers").startswith("0 — messages are not sent")
    with TestClient(create_app(ctx), client=("127.0.0.1", 40000)) as local:
        health = local.get("/api/health")
        assert health.status_code == 200, health.text
        assert health.json()["dispatchers"]["status"] == "none"
        gauges = _gauges(local)
    assert gauges[("crmflow_loops_seen_last_minute", dispatcher)] == 0
    assert gauges[("crmflow_loops", (*dispatcher, ("state", "alive")))] == 0
    assert gauges[("crmflow_loops", (*dispatcher, ("state", "stopped")))] == 1
