"""`crmflow serve --demo` as `make run` starts it: a real server on a loopback port."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.acceptance.conftest import CRMFLOW, REPO, Run


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def _serving(env: dict[str, str], cwd: Path, log: Path) -> Iterator[str]:
    port = _free_port()
    with log.open("w") as out:
        server = subprocess.Popen(
            [CRMFLOW, "serve", "--demo", "--port", str(port)],
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
            server.wait(timeout=20)


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
