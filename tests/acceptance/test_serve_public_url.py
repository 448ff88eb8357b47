"""The links of emails sent by `crmflow serve --port N`: they name the port the server
listens on (CRMFLOW_PUBLIC_URL unset), and a server listening on every address says to set
CRMFLOW_PUBLIC_URL."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from tests.acceptance.conftest import REPO, Run
from tests.acceptance.test_serve import _serving

NEWS = """\
schema_version: 1
key: news-served
name: News (served)
record_type: contact
triggers: [{type: manual}]
steps:
  - key: hello
    actions:
      - type: send_email
        category: marketing
        subject: "News"
        body: "Stop these emails: {{ unsubscribe_url }}"
"""


def test_an_email_sent_by_serve_links_to_the_port_it_listens_on(
    crmflow: Run, cli_env: dict[str, str], tmp_path: Path
) -> None:
    crmflow("db", "upgrade")
    log = tmp_path / "serve.log"
    with _serving(cli_env, REPO, log) as base:
        assert not base.endswith(":8000")
        auth = {"Authorization": "Bearer crm_demo_alice_admin"}
        created = httpx.post(
            f"{base}/api/flows",
            content=NEWS,
            headers={**auth, "Content-Type": "application/yaml"},
        )
        assert created.status_code == 201, created.text
        assert httpx.post(f"{base}/api/flows/news-served/start", headers=auth).status_code == 200
        record = httpx.post(
            f"{base}/api/records/contact",
            json={"data": {"first_name": "Ioana", "last_name": "Pop", "email": "io@example.org"}},
            headers=auth,
        ).json()
        run = httpx.post(
            f"{base}/api/flows/news-served/runs", json={"record_id": record["id"]}, headers=auth
        )
        assert run.status_code == 201, run.text
        deadline = time.monotonic() + 30
        while not (caught := httpx.get(f"{base}/api/mail", headers=auth).json()):
            assert time.monotonic() < deadline, "no email caught in 30 s:\n" + log.read_text()
            time.sleep(0.2)
        message = httpx.get(f"{base}/api/mail/{caught[0]['id']}", headers=auth).json()["message"]
    assert f"List-Unsubscribe: <{base}/u/" in message
    assert f"Stop these emails: {base}/u/" in message
    assert "set CRMFLOW_PUBLIC_URL" not in log.read_text()


def test_serve_on_every_address_says_to_set_the_public_url(
    crmflow: Run, cli_env: dict[str, str], tmp_path: Path
) -> None:
    crmflow("db", "upgrade")
    log = tmp_path / "serve.log"
    with _serving(cli_env, REPO, log, demo=False, extra=["--host", "0.0.0.0"]):
        pass
    printed = log.read_text()
    assert "http://0.0.0.0:" in printed and "set CRMFLOW_PUBLIC_URL" in printed
