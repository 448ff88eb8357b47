"""`crmflow serve --demo` as `make run` starts it: a real server on a loopback port."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx

from crmflow.services.context import Context
from crmflow.settings import Settings
from crmflow.store import migrate
from tests.acceptance.conftest import CRMFLOW, REPO, Run


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def _serving(
    env: dict[str, str],
    cwd: Path,
    log: Path,
    *,
    exit_codes: list[int] | None = None,
    demo: bool = True,
    extra: Sequence[str] = (),
) -> Iterator[str]:
    """`crmflow serve --demo` (or without --demo) on a free port; stopped with SIGTERM (its exit
    code appended to `exit_codes`)."""
    port = _free_port()
    with log.open("w") as out:
        server = subprocess.Popen(
            [CRMFLOW, "serve", *(["--demo"] if demo else []), "--port", str(port), *extra],
            env=env,
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"{base}/api/health", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert server.poll() is None, log.read_text()
                assert time.monotonic() < deadline, (
                    "server did not answer in 60 s:\n" + log.read_text()
                )
                time.sleep(0.2)
            yield base
        finally:
            server.terminate()
            code = server.wait(timeout=30)
            if exit_codes is not None:
                exit_codes.append(code)


def test_serve_demo_answers_with_docs_demo_logins_and_flows(
    crmflow: Run, cli_env: dict[str, str], tmp_path: Path
) -> None:
    crmflow("db", "upgrade")
    log = tmp_path / "serve.log"
    with _serving(cli_env, REPO, log) as base:
        assert httpx.get(f"{base}/openapi.json").json()["info"]["title"] == "crmflow"
        docs = httpx.get(f"{base}/docs")
        # The docs page works offline: Swagger UI comes from the package, not from a CDN.
        assert "/static/swagger-ui/swagger-ui-bundle.js" in docs.text
        assert "cdn" not in docs.text.lower()
        bundle = httpx.get(f"{base}/static/swagger-ui/swagger-ui-bundle.js")
        assert bundle.status_code == 200 and len(bundle.content) > 100_000
        token = httpx.post(
            f"{base}/api/auth/token", json={"username": "alice", "password": "alice-demo"}
        ).json()["token"]
        auth = {"Authorization": f"Bearer {token}"}
        keys = {f["key"] for f in httpx.get(f"{base}/api/flows", headers=auth).json()}
        assert {"event-automations", "six-month-promotion", "donor-thank-you"} <= keys
        donors = httpx.post(f"{base}/api/flows/donor-thank-you/start", headers=auth)
        assert donors.status_code == 409 and donors.json()["count"] > 0  # the README's tour
        contacts = httpx.get(f"{base}/api/records/contact?limit=1000", headers=auth).json()
        assert len(contacts["items"]) >= 200
        for role_token in ("crm_demo_maria_manager", "crm_demo_andrei_member"):
            me = httpx.get(f"{base}/api/me", headers={"Authorization": f"Bearer {role_token}"})
            assert me.status_code == 200
    printed = log.read_text()
    assert "/docs" in printed and "alice" in printed and "crm_demo_alice_admin" in printed
    # A second start with --demo leaves the data as it is.
    with _serving(cli_env, REPO, log) as base:
        pass
    assert "already loaded" in log.read_text()


WELCOME = """\
schema_version: 1
key: welcome-served
name: Welcome (served)
record_type: contact
triggers:
  - type: record_created
steps:
  - key: note
    actions:
      - type: history
        message: "Welcome {{ record.first_name }}"
"""


def test_serve_runs_flows_in_its_own_worker_and_stops_cleanly_on_sigterm(
    crmflow: Run, cli_env: dict[str, str], tmp_path: Path
) -> None:
    """`make run` is one process: a record created through the API goes through an active flow
    without any `crmflow worker` running, and SIGTERM ends the process cleanly."""
    crmflow("db", "upgrade")
    log = tmp_path / "serve.log"
    codes: list[int] = []
    with _serving(cli_env, REPO, log, exit_codes=codes) as base:
        auth = {"Authorization": "Bearer crm_demo_alice_admin"}
        created = httpx.post(
            f"{base}/api/flows",
            content=WELCOME,
            headers={**auth, "Content-Type": "application/yaml"},
        )
        assert created.status_code == 201, created.text
        started = httpx.post(f"{base}/api/flows/welcome-served/start", headers=auth)
        assert started.json()["status"] == "active", started.text
        record = httpx.post(
            f"{base}/api/records/contact",
            json={
                "data": {"first_name": "Ioana", "last_name": "Pop", "email": "ioana@example.org"}
            },
            headers=auth,
        )
        assert record.status_code == 201, record.text
        runs_url = f"{base}/api/records/contact/{record.json()['id']}/runs"
        deadline = time.monotonic() + 30
        while True:
            runs = httpx.get(runs_url, headers=auth).json()
            flows = [f for f in runs["flows"] if f["flow"] == "welcome-served"]
            if flows and flows[0]["status"] == "finished":
                break
            assert time.monotonic() < deadline, f"the record did not go through in 30 s: {runs}"
            time.sleep(0.2)
        assert [r["step"] for r in flows[0]["step_runs"]] == ["note"]
        assert any("Welcome Ioana" in str(h) for h in runs["history"]), runs["history"]
    assert codes == [0], log.read_text()


def test_serve_sets_up_a_new_database_itself(cli_env: dict[str, str], tmp_path: Path) -> None:
    """The embedded default just works: no `crmflow db upgrade` before the first start."""
    log = tmp_path / "serve.log"
    with _serving(cli_env, tmp_path, log, demo=False) as base:
        assert httpx.get(f"{base}/api/health").status_code == 200
        me = httpx.get(f"{base}/api/me", headers={"Authorization": "Bearer crm_unknown"})
        assert me.status_code == 401  # the tables are there: the token is what is refused
    assert "set up a new database" in log.read_text()


def test_serve_refuses_an_outdated_database_and_says_what_to_run(
    crmflow: Run, cli_env: dict[str, str]
) -> None:
    ctx = Context.from_settings(Settings(database_url=cli_env["CRMFLOW_DATABASE_URL"]))
    migrate.upgrade(ctx.engine, "+1")  # the first migration only: an older crmflow's database
    ctx.engine.dispose()
    refused = crmflow("serve", check_exit=1)
    assert "run `crmflow db upgrade` first" in refused.stderr
    assert "needs migration" in refused.stderr
