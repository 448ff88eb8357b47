"""Hostile-input fixtures: the acceptance fixtures (the CLI as a subprocess, the HTTP API in
process) plus a real `crmflow serve` on a loopback port, on SQLite or PostgreSQL, whose memory a
test can read, for what must hold of the running server (bounded memory, answers in time)."""

from __future__ import annotations

import os
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from crmflow.services.context import Context
from crmflow.services.setup import upgrade_database
from crmflow.settings import Settings
from crmflow.store.database import create_db_engine
from tests.acceptance.conftest import (  # noqa: F401  (fixtures shared with acceptance tests)
    CRMFLOW,
    as_admin,
    auth_headers,
    cli_env,
    client,
    crmflow,
)
from tests.conftest import PG_ADMIN_URL, skip_or_fail_without_postgres

__all__ = ["LiveServer", "free_port"]

ADMIN_TOKEN = "crm_demo_alice_admin"
MANAGER_TOKEN = "crm_demo_maria_manager"
MEMBER_TOKEN = "crm_demo_andrei_member"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LiveServer:
    """A running `crmflow serve --demo` (demo users: alice admin, maria manager, andrei member)."""

    base: str
    process: subprocess.Popen[bytes]
    log: Path
    env: dict[str, str]

    def headers(self, token: str = ADMIN_TOKEN) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    def rss_mb(self) -> float:
        """The server process's resident memory now, in MB (from /proc)."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmRSS in /proc status")

    def peak_rss_mb(self) -> float:
        """The server process's highest resident memory so far, in MB."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmHWM in /proc status")

    def alive(self) -> bool:
        return self.process.poll() is None


def _start(env: dict[str, str], cwd: Path, log: Path) -> LiveServer:
    # Migrated in process: `crmflow db upgrade` as a subprocess would cost a second start-up.
    ctx = Context.from_settings(
        Settings(database_url=env["CRMFLOW_DATABASE_URL"], timezone=env["CRMFLOW_TIMEZONE"])
    )
    upgrade_database(ctx)
    ctx.engine.dispose()
    port = free_port()
    out = log.open("w")
    process = subprocess.Popen(
        [CRMFLOW, "serve", "--demo", "--port", str(port)],
        env=env,
        cwd=cwd,
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            if httpx.get(f"{base}/api/health", timeout=1).status_code in (200, 503):
                break
        except httpx.TransportError:
            pass
        assert process.poll() is None, log.read_text()
        assert time.monotonic() < deadline, "server did not answer in 90 s:\n" + log.read_text()
        time.sleep(0.2)
    return LiveServer(base=base, process=process, log=log, env=env)


def _stop(server: LiveServer) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait(timeout=10)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def live_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """`crmflow serve --demo` on SQLite and on PostgreSQL (one server per test module and
    backend; tests must leave the demo data usable for the next test)."""
    backend = str(request.param)
    tmp = tmp_path_factory.mktemp(f"live-{backend}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRMFLOW_")}
    env["CRMFLOW_TIMEZONE"] = "Europe/Paris"
    env["COLUMNS"] = "200"
    database: str | None = None
    admin: sa.Engine | None = None
    if backend == "postgres":
        skip_or_fail_without_postgres()
        database = f"crmflow_live_{uuid.uuid4().hex[:10]}"
        admin = create_db_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{database}"'))
        env["CRMFLOW_DATABASE_URL"] = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{database}"
    else:
        env["CRMFLOW_DATABASE_URL"] = f"sqlite:///{tmp / 'live.db'}"
    server = _start(env, tmp, tmp / "serve.log")
    try:
        yield server
    finally:
        _stop(server)
        if admin is not None:
            with admin.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
            admin.dispose()
