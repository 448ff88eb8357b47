"""What a flow sends, as a user finds it: with no CRMFLOW_SMTP_URL the mail catcher keeps each
email (`crmflow dispatch --once`, `crmflow mail list/show`, `GET /api/mail`, the run showing
it caught); with one, `crmflow dispatch --once` delivers to that server; and the seed flow
examples/donor-thank-you.yaml thanks a donor by a real email."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from fastapi.testclient import TestClient

from crmflow.delivery.dispatcher import Dispatcher
from crmflow.services.context import Actor, Context
from crmflow.services.templates import load_template_file
from crmflow.services.users import actor_by_username
from crmflow.settings import Settings
from crmflow.store.outbox import flow_messages
from crmflow.testing import FlowHarness
from tests.acceptance.conftest import CRMFLOW, Run, auth_headers
from tests.conftest import make_user
from tests.integration.test_delivery_smtp import SmtpServer, _welcome, with_smtp

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
MONDAY = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


def _cli_context(crmflow: Run, cli_env: dict[str, str]) -> tuple[Context, Actor]:
    crmflow("db", "upgrade")
    ctx = Context.from_settings(
        Settings(database_url=cli_env["CRMFLOW_DATABASE_URL"], timezone="Europe/Paris")
    )
    return ctx, actor_by_username(ctx, "system")


def test_without_an_smtp_url_the_mail_catcher_keeps_what_the_flow_sent(
    crmflow: Run, cli_env: dict[str, str]
) -> None:
    ctx, admin = _cli_context(crmflow, cli_env)
    [rid] = _welcome(ctx, admin, "Claire")
    ctx.engine.dispose()

    done = crmflow("dispatch", "--once")
    assert done.stdout.strip() == "delivered 1 (the mail catcher), retrying 0, failed 0"
    assert crmflow("dispatch", "--once").stdout.startswith("delivered 0")

    [mail] = json.loads(crmflow("mail", "list", "--json").stdout)
    assert (mail["to"], mail["subject"], mail["flow"]) == (
        ["claire@example.org"],
        "Bonjour Claire !",
        "welcome",
    )
    assert mail["record_id"] == rid
    table = crmflow("mail", "list").stdout
    assert "Bonjour Claire !" in table and "claire@example.org" in table

    shown = crmflow("mail", "show", str(mail["id"])).stdout
    assert "Subject: Bonjour Claire !" in shown
    assert "To: claire@example.org" in shown
    assert "Message-ID: <" in shown
    assert "Merci Claire" in shown
    assert "Bcc" not in shown

    runs = crmflow("runs", "show", str(rid)).stdout
    assert "[email caught at " in runs
    missing = crmflow("mail", "show", "999", check_exit=1)
    assert "no caught message 999" in missing.stderr


def test_the_api_lists_caught_mail_of_the_runs_the_caller_can_see(
    ctx: Context, admin: Actor, client: TestClient
) -> None:
    _welcome(ctx, admin, "Claire")
    assert Dispatcher(with_smtp(ctx, None)).run_once().delivered == 1
    headers = auth_headers(ctx, admin, admin.username)

    [mail] = client.get("/api/mail", headers=headers).json()
    assert mail["subject"] == "Bonjour Claire !"
    full = client.get(f"/api/mail/{mail['id']}", headers=headers).json()
    assert "Subject: Bonjour Claire !" in full["message"]
    assert full["enrollment_id"] > 0
    assert client.get("/api/mail/999", headers=headers).status_code == 404
    assert client.get("/api/mail").status_code == 401

    # A private flow's mail is its members' only: as its runs.
    make_user(ctx, "andrei", "member")
    outsider = auth_headers(ctx, admin, "andrei")
    assert len(client.get("/api/mail", headers=outsider).json()) == 1
    with ctx.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE flows SET visibility = 'private'")
    assert client.get("/api/mail", headers=outsider).json() == []
    assert client.get(f"/api/mail/{mail['id']}", headers=outsider).status_code == 404


def test_crmflow_dispatch_once_delivers_to_the_smtp_server(
    crmflow: Run, cli_env: dict[str, str]
) -> None:
    ctx, admin = _cli_context(crmflow, cli_env)
    names = ["Anna", "Bruno", "Chloe", "David", "Emma", "Felix"]
    _welcome(ctx, admin, *names)
    ctx.engine.dispose()
    server = SmtpServer()
    server.start()
    try:
        cli_env["CRMFLOW_SMTP_URL"] = server.url
        # Three dispatchers in threads, on SQLite: they share the messages, none twice.
        done = crmflow("dispatch", "--once", "--threads", "3", "--batch-size", "1")
    finally:
        server.stop()
    assert done.stdout.strip() == "delivered 6 (SMTP), retrying 0, failed 0"
    assert sorted(r.message["To"] for r in server.received) == [
        f"{name.lower()}@example.org" for name in names
    ]
    database = cli_env["CRMFLOW_DATABASE_URL"].removeprefix("sqlite:///")
    with sqlite3.connect(database) as conn:
        statuses = [r[0] for r in conn.execute("select status from outbox")]
    assert statuses == ["delivered"] * 6


@contextmanager
def _started() -> Iterator[SmtpServer]:
    """An SmtpServer running for the `with` block."""
    server = SmtpServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_the_donor_thank_you_flow_emails_the_donor() -> None:
    with (
        FlowHarness(
            EXAMPLES / "donor-thank-you.yaml",
            now=MONDAY,
            queries=[EXAMPLES / "queries" / "recent-donors.yaml"],
            templates=[EXAMPLES / "templates" / "donor-news.yaml"],
            users={"maria": "manager"},
            timezone="Europe/Paris",
        ) as flow,
        _started() as server,
    ):
        flow.create_record(
            {
                "first_name": "Claire",
                "last_name": "Martin",
                "email": "claire@example.org",
                "last_donation_date": "2026-11-20",
                "last_donation_amount": 120,
                "newsletter": True,
            }
        )
        flow.start()  # the start list (recent donors) enters her
        result = Dispatcher(with_smtp(flow.ctx, server.url)).run_once()
        assert (result.delivered, result.failed) == (1, 0)
        [got] = server.received
        mail = got.message
        assert mail["From"] == "Les Amis du Parc <dons@example.org>"
        assert mail["To"] == "claire@example.org"
        assert mail["Subject"] == "Merci Claire !"
        assert "Merci pour votre don de 120" in mail.get_content()
        [sent] = flow.messages()
        assert sent.status == "delivered"
        assert mail["Message-ID"] == sent.payload["message_id"]
        assert mail["Message-ID"].endswith("@example.org>")

        # Three months later the news comes from the stored template donor-news, rendered
        # when it is sent: her first name changed meanwhile, and the email says the new one.
        admin = actor_by_username(flow.ctx, "system")
        load_template_file(flow.ctx, admin, EXAMPLES / "templates" / "donor-news.yaml")
        flow.advance(days=91)
        rid = flow.messages()[0].record_id
        flow.update_record(rid, {"first_name": "Clara"})
        assert Dispatcher(with_smtp(flow.ctx, server.url)).run_once().delivered == 1
        assert [m.status for m in flow.messages()] == ["delivered", "delivered"]
        news = server.received[1].message
        assert news["Subject"] == "Claire, nos projets avancent grâce à vous"  # the flow's
        assert news["Reply-To"] == "dons@example.org"  # the template's
        plain, html = news.get_body(("plain",)), news.get_body(("html",))
        assert plain is not None and html is not None
        text = plain.get_content().replace("\r\n", "\n")
        assert text.startswith("Bonjour Clara,\n")  # %ab_firstname%, at send time
        assert "votre don de 120,00\xa0€" in text
        assert "<p>Bonjour Clara,</p>" in html.get_content()
        assert "Email sent to claire@example.org: Claire, nos projets avancent grâce à vous" in (
            flow.history(rid)
        )


def test_crmflow_worker_delivers_the_emails_its_runs_write(
    crmflow: Run, cli_env: dict[str, str], tmp_path: Path
) -> None:
    ctx, admin = _cli_context(crmflow, cli_env)
    _welcome(ctx, admin, "Anna")
    with _started() as server:
        cli_env["CRMFLOW_SMTP_URL"] = server.url
        worker = subprocess.Popen(
            [CRMFLOW, "worker"], env=cli_env, cwd=tmp_path, stderr=subprocess.PIPE, text=True
        )
        try:
            deadline = time.monotonic() + 30
            while not server.received and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            worker.send_signal(signal.SIGTERM)
            _, stderr = worker.communicate(timeout=30)
    assert [r.message["To"] for r in server.received] == ["anna@example.org"]
    assert worker.returncode == 0, stderr
    with ctx.engine.connect() as conn:
        assert [m.status for m in flow_messages(conn)] == ["delivered"]
    ctx.engine.dispose()
