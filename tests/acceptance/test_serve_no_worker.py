"""`crmflow serve --no-worker`: the web application and the API alone, for PostgreSQL
deployments whose flows run in `crmflow worker` units (docs/deploy.md)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import httpx

from tests.acceptance.conftest import Run
from tests.acceptance.test_serve import _serving


def test_serve_without_a_worker_answers_and_runs_no_loop(
    crmflow: Run, cli_env: dict[str, str], tmp_path: Path
) -> None:
    crmflow("db", "upgrade")
    log = tmp_path / "serve.log"
    codes: list[int] = []
    serving = _serving(cli_env, tmp_path, log, exit_codes=codes, demo=False, extra=["--no-worker"])
    with serving as base:
        health = httpx.get(f"{base}/api/health")
        assert health.status_code == 200, health.text
    said = log.read_text()
    assert codes == [0], said
    assert "no worker in this process (--no-worker)" in said
    assert "worker stopped" not in said
    database = cli_env["CRMFLOW_DATABASE_URL"].removeprefix("sqlite:///")
    with sqlite3.connect(database) as conn:
        # A worker or dispatcher that ran, even for a moment, left its heartbeat row.
        assert conn.execute("SELECT name, kind FROM worker_heartbeats").fetchall() == []
