"""schemathesis against the live OpenAPI document of `crmflow serve`, on SQLite and PostgreSQL:
every operation, with examples, boundary values and generated input, answers no 5xx and only
the statuses its operation declares (so that a client generated from the document is right).

Bounded: a fixed number of examples per operation and a fixed seed, so that a run in CI is the
same run a developer reproduces (`st run ... --seed N` prints the failing curl)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.hostile.conftest import ADMIN_TOKEN, MEMBER_TOKEN, LiveServer

ST = str(Path(sys.executable).parent / "st")


def _schemathesis(server: LiveServer, token: str, seed: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            ST,
            "run",
            f"{server.base}/openapi.json",
            "--header",
            f"Authorization: Bearer {token}",
            "--checks",
            "not_a_server_error,status_code_conformance",
            "--phases",
            "examples,coverage,fuzzing",
            "--max-examples",
            "8",
            "--seed",
            str(seed),
            "--workers",
            "1",
            "--request-timeout",
            "20",
            "--wait-for-schema",
            "30",
            "--no-color",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env=server.env,
        cwd=server.log.parent,  # schemathesis keeps its own files where it runs
    )


def test_every_operation_answers_no_server_error_and_only_declared_statuses(
    live_server: LiveServer,
) -> None:
    # As an admin on both databases (every route is open to an admin); as a member on SQLite
    # only (what a member is refused does not depend on the database), to keep the run short.
    runs = [(ADMIN_TOKEN, 20261202)]
    if "sqlite" in live_server.env["CRMFLOW_DATABASE_URL"]:
        runs.append((MEMBER_TOKEN, 20261201))
    for token, seed in runs:
        done = _schemathesis(live_server, token, seed)
        assert done.returncode == 0, done.stdout[-20_000:] + done.stderr[-5_000:]
        assert "Server error" not in done.stdout
        assert live_server.alive()
