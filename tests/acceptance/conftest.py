"""Acceptance fixtures: the `crmflow` command run as a subprocess, as a user would run it, and
the HTTP API through a test client with users' tokens."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from crmflow.api.app import create_app
from crmflow.services import users
from crmflow.services.context import Actor, Context

REPO = Path(__file__).resolve().parents[2]
CRMFLOW = str(Path(sys.executable).parent / "crmflow")

Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRMFLOW_")}
    env["CRMFLOW_DATABASE_URL"] = f"sqlite:///{tmp_path / 'cli.db'}"
    env["CRMFLOW_TIMEZONE"] = "Europe/Paris"
    env["COLUMNS"] = "200"
    return env


@pytest.fixture
def crmflow(cli_env: dict[str, str], tmp_path: Path) -> Run:
    """Run `crmflow ARGS...` in a fresh SQLite database; returns the completed process."""

    def run(
        *args: str, input: str | None = None, check_exit: int | None = 0
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [CRMFLOW, *args],
            check=False,
            env=cli_env,
            cwd=tmp_path,
            input=input,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if check_exit is not None:
            assert done.returncode == check_exit, (
                f"crmflow {' '.join(args)} exited {done.returncode}\n"
                f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
            )
        return done

    return run


@pytest.fixture
def client(ctx: Context) -> Iterator[TestClient]:
    """The HTTP API of `ctx`, in process."""
    with TestClient(create_app(ctx)) as test_client:
        yield test_client


def auth_headers(ctx: Context, admin: Actor, username: str) -> dict[str, str]:
    """The headers of a call made as `username` (a new API token, made by `admin`)."""
    return {"Authorization": f"Bearer {users.create_token(ctx, admin, username).token}"}


@pytest.fixture
def as_admin(ctx: Context, admin: Actor) -> dict[str, str]:
    return auth_headers(ctx, admin, admin.username)
