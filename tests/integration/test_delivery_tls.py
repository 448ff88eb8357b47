"""Emails to an SMTP server that wants TLS and a password (aiosmtpd on 127.0.0.1 with a
certificate made for the test): STARTTLS then AUTH (`smtp+starttls://user:password@...`), TLS
from the first byte (`smtps://`), and the URL forms."""

from __future__ import annotations

import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import AuthResult, LoginPassword

from crmflow.delivery.dispatcher import Dispatcher
from crmflow.delivery.email import SmtpSender, SmtpTarget, parse_smtp_url
from crmflow.services.context import Actor, Context
from tests.integration.test_delivery_smtp import SmtpServer, _welcome


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    request = ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
    subject = ["-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"]
    subprocess.run(
        ["openssl", *request, *subject, "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    return cert, key


def _server_tls(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    return context


def _client_tls(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    """The client's check: the test's certificate is the one trusted root."""
    return ssl.create_default_context(cafile=str(certificate[0]))


def _authenticator(
    server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and auth_data == (b"crm user", b"s3cr@t")
    return AuthResult(success=ok)


@pytest.fixture
def starttls_server(certificate: tuple[Path, Path]) -> Iterator[SmtpServer]:
    server = SmtpServer(
        tls_context=_server_tls(certificate),
        require_starttls=True,
        auth_required=True,
        authenticator=_authenticator,
    )
    server.start()
    yield server
    server.stop()


def test_starttls_and_auth_deliver_with_the_user_and_password_of_the_url(
    ctx: Context, admin: Actor, starttls_server: SmtpServer, certificate: tuple[Path, Path]
) -> None:
    _welcome(ctx, admin, "Claire", "Paul")
    url = f"smtp+starttls://crm%20user:s3cr%40t@127.0.0.1:{starttls_server.port}"
    sender = SmtpSender(parse_smtp_url(url), tls_context=_client_tls(certificate))
    assert Dispatcher(ctx, sender=sender).run_once().delivered == 2
    assert len(starttls_server.received) == 2
    assert sender.connections == 1


def test_smtps_speaks_tls_from_the_first_byte(
    ctx: Context, admin: Actor, certificate: tuple[Path, Path]
) -> None:
    server = SmtpServer(ssl_context=_server_tls(certificate))
    server.start()
    try:
        _welcome(ctx, admin, "Claire")
        target = parse_smtp_url(f"smtps://127.0.0.1:{server.port}")
        sender = SmtpSender(target, tls_context=_client_tls(certificate))
        assert Dispatcher(ctx, sender=sender).run_once().delivered == 1
    finally:
        server.stop()
    assert [r.message["To"] for r in server.received] == ["claire@example.org"]


def test_the_smtp_url_forms() -> None:
    assert parse_smtp_url("smtp://mail.example.org") == SmtpTarget("mail.example.org", 25, "plain")
    assert parse_smtp_url("smtp+starttls://u:p@mail.example.org") == SmtpTarget(
        "mail.example.org", 587, "starttls", "u", "p"
    )
    assert parse_smtp_url("smtp://mail.example.org:2525?starttls=1").security == "starttls"
    assert parse_smtp_url("smtps://mail.example.org").port == 465
    with pytest.raises(ValueError, match="not an SMTP URL"):
        parse_smtp_url("http://mail.example.org")
