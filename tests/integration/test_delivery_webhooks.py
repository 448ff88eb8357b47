"""The dispatcher calls a flow's webhooks on a real HTTP server (http.server on 127.0.0.1,
started by each test), on SQLite and PostgreSQL: the request as the receiver sees it (method,
headers, JSON body, a Standard Webhooks signature that verifies), 500 then 200 retried and
delivered once, 429's Retry-After taken as the next attempt, 400 failed at once, a slow server
timed out, and loopback/private/metadata addresses refused unless CRMFLOW_WEBHOOK_ALLOW lists
them (tests allow 127.0.0.1/32; one shows it refused by default)."""

from __future__ import annotations

import dataclasses
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from standardwebhooks import Webhook

from crmflow.delivery.dispatcher import Dispatcher
from crmflow.delivery.email import DeliveryError
from crmflow.delivery.http import new_client, resolve_checked
from crmflow.delivery.webhook import WebhookSender
from crmflow.engine.commands import WebhookPayload
from crmflow.engine.lifecycle import LifecycleAction
from crmflow.services import enrollments as runs
from crmflow.services import flows, records
from crmflow.services.context import Actor, Context
from crmflow.settings import allowed_networks
from crmflow.store.schema import outbox
from tests.conftest import FrozenClock

SECRET = "whsec_" + "c2VjcmV0LWZvci10aGUtdGVzdHMtMTIzNDU2Nzg5MA=="
LOOPBACK = "127.0.0.1/32"

FLOW = """\
schema_version: 1
key: notify
name: Notify
record_type: contact
reentry: {{mode: always}}
triggers: [{{type: manual}}]
steps:
  - key: tell
    actions:
      - type: webhook
        key: tell
        url: "{url}/hooks/{{{{record.id}}}}"
        method: PUT
        headers: {{X-Flow: notify, Webhook-Id: forged}}
        body: '{{"name": "{{{{ record.first_name }}}}"}}'
        timeout_seconds: {timeout}
{secret}"""


@dataclasses.dataclass
class Reply:
    status: int = 200
    body: str = "ok"
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    delay: float = 0.0
    trickle: float = 0.0  # seconds between two bytes of the body


@dataclasses.dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class HttpServer:
    """An HTTP server on 127.0.0.1 that keeps every request and answers with the next of
    `replies` (then 200 ok)."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.requests: list[Request] = []
        self.replies: list[Reply] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                headers = {k.lower(): v for k, v in self.headers.items()}
                server.requests.append(Request(self.command, self.path, headers, body))
                reply = server.replies.pop(0) if server.replies else Reply()
                time.sleep(reply.delay)
                data = reply.body.encode()
                try:
                    self.send_response(reply.status)
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    if reply.trickle:
                        for byte in data:
                            self.wfile.write(bytes([byte]))
                            self.wfile.flush()
                            time.sleep(reply.trickle)
                    else:
                        self.wfile.write(data)
                except OSError:  # the client gave up (a timeout test)
                    pass

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _any  # noqa: N815

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        self.port = int(self.httpd.server_address[1])
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def http_server() -> Iterator[HttpServer]:
    server = HttpServer()
    server.start()
    yield server
    server.stop()


def with_settings(ctx: Context, **settings: Any) -> Context:
    return dataclasses.replace(ctx, settings=ctx.settings.model_copy(update=settings))


def _notify(
    ctx: Context, admin: Actor, url: str, *, secret: bool = True, timeout: float = 5
) -> int:
    """The notify flow started for a new contact: its webhook is in the outbox."""
    line = f"        secret: {SECRET}\n" if secret else ""
    flows.create_flow(ctx, admin, FLOW.format(url=url, timeout=timeout, secret=line))
    flows.change_status(ctx, admin, "notify", LifecycleAction.START)
    data = {"first_name": "Claire", "last_name": "Martin", "email": "claire@example.org"}
    rid = records.create_record(ctx, admin, "contact", data).id
    runs.start_record(ctx, admin, "notify", rid)
    return rid


def _row(ctx: Context) -> Any:
    with ctx.engine.connect() as conn:
        [row] = conn.execute(sa.select(outbox).where(outbox.c.kind == "webhook"))
        return row


def test_the_receiver_gets_a_signed_call_it_can_verify(
    ctx: Context, admin: Actor, clock: FrozenClock, http_server: HttpServer
) -> None:
    rid = _notify(ctx, admin, http_server.url)
    # The library verifies the timestamp against the real clock: send at the real time.
    clock.set(datetime.now(UTC).replace(microsecond=0))
    result = Dispatcher(with_settings(ctx, webhook_allow=LOOPBACK)).run_once()
    assert (result.claimed, result.delivered) == (1, 1)

    [got] = http_server.requests
    row = _row(ctx)
    assert (got.method, got.path) == ("PUT", f"/hooks/{rid}")
    assert got.body == b'{"name": "Claire"}'
    assert got.headers["content-type"] == "application/json"
    assert got.headers["x-flow"] == "notify"
    assert got.headers["host"] == f"127.0.0.1:{http_server.port}"
    # The flow cannot forge the id: crmflow's headers win.
    assert got.headers["webhook-id"] == got.headers["idempotency-key"] == row.idempotency_key
    assert got.headers["webhook-timestamp"] == str(int(ctx.now().timestamp()))
    assert Webhook(SECRET).verify(got.body, got.headers) == {"name": "Claire"}
    assert (row.status, row.attempts, row.server_reply) == ("delivered", 1, "200 ok")


def test_an_unsigned_call_has_no_signature_header(
    ctx: Context, admin: Actor, http_server: HttpServer
) -> None:
    _notify(ctx, admin, http_server.url, secret=False)
    Dispatcher(with_settings(ctx, webhook_allow=LOOPBACK)).run_once()
    [got] = http_server.requests
    assert "webhook-signature" not in got.headers
    assert got.headers["webhook-id"] == _row(ctx).idempotency_key


def test_a_500_is_retried_and_the_call_delivered_once_with_the_same_id(
    ctx: Context, admin: Actor, clock: FrozenClock, http_server: HttpServer
) -> None:
    _notify(ctx, admin, http_server.url)
    http_server.replies = [Reply(500, "database down")]
    dispatched = with_settings(ctx, webhook_allow=LOOPBACK)
    assert Dispatcher(dispatched).run_once().retrying == 1
    row = _row(ctx)
    assert row.status == "retrying"
    assert row.last_error.endswith("answered 500 database down")
    assert Dispatcher(dispatched).run_once().claimed == 0  # not before its time
    clock.set(row.next_attempt_at)
    assert Dispatcher(dispatched).run_once().delivered == 1
    assert Dispatcher(dispatched).run_once().claimed == 0
    first, second = http_server.requests
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    row = _row(ctx)
    assert (row.status, row.attempts, row.last_error) == ("delivered", 2, None)


def test_a_429_is_tried_again_when_retry_after_says(
    ctx: Context, admin: Actor, http_server: HttpServer
) -> None:
    _notify(ctx, admin, http_server.url)
    http_server.replies = [Reply(429, "slow down", {"Retry-After": "120"})]
    assert Dispatcher(with_settings(ctx, webhook_allow=LOOPBACK)).run_once().retrying == 1
    row = _row(ctx)
    assert row.status == "retrying"
    assert row.next_attempt_at == ctx.now() + timedelta(seconds=120)
    assert "Retry-After: 120s" in row.last_error


def test_a_retry_after_is_bounded(ctx: Context, admin: Actor, http_server: HttpServer) -> None:
    _notify(ctx, admin, http_server.url)
    http_server.replies = [Reply(503, "", {"Retry-After": "99999999"})]
    dispatched = with_settings(ctx, webhook_allow=LOOPBACK, delivery_retry_max_seconds=600)
    Dispatcher(dispatched).run_once()
    assert _row(ctx).next_attempt_at == ctx.now() + timedelta(seconds=600)


def test_of_a_long_answer_only_the_start_is_kept(
    ctx: Context, admin: Actor, http_server: HttpServer
) -> None:
    _notify(ctx, admin, http_server.url)
    http_server.replies = [Reply(200, "x" * 5_000_000)]
    assert Dispatcher(with_settings(ctx, webhook_allow=LOOPBACK)).run_once().delivered == 1
    assert _row(ctx).server_reply == "200 " + "x" * 500


def test_a_body_trickled_a_byte_at_a_time_is_read_for_one_read_timeout_at_most(
    ctx: Context, admin: Actor, http_server: HttpServer
) -> None:
    _notify(ctx, admin, http_server.url, timeout=0.5)
    http_server.replies = [Reply(200, "x" * 100, trickle=0.1)]  # 10 s in all
    started = time.monotonic()
    assert Dispatcher(with_settings(ctx, webhook_allow=LOOPBACK)).run_once().delivered == 1
    assert time.monotonic() - started < 2.0
    assert _row(ctx).server_reply.startswith("200 x")


def test_a_400_fails_at_once(ctx: Context, admin: Actor, http_server: HttpServer) -> None:
    _notify(ctx, admin, http_server.url)
    http_server.replies = [Reply(400, "unknown field name")]
    dispatched = with_settings(ctx, webhook_allow=LOOPBACK)
    assert Dispatcher(dispatched).run_once().failed == 1
    assert Dispatcher(dispatched).run_once().claimed == 0
    row = _row(ctx)
    assert (row.status, row.attempts) == ("failed", 1)
    assert row.last_error.endswith("answered 400 unknown field name")
    assert len(http_server.requests) == 1


def test_a_slow_server_times_out_and_is_retried(
    ctx: Context, admin: Actor, http_server: HttpServer
) -> None:
    _notify(ctx, admin, http_server.url, timeout=0.3)
    http_server.replies = [Reply(200, "late", delay=2.0)]
    started = time.monotonic()
    assert Dispatcher(with_settings(ctx, webhook_allow=LOOPBACK)).run_once().retrying == 1
    assert time.monotonic() - started < 1.5
    assert "timed out" in _row(ctx).last_error


def test_loopback_is_refused_by_default_and_the_error_names_the_setting(
    ctx: Context, admin: Actor, http_server: HttpServer
) -> None:
    _notify(ctx, admin, http_server.url)
    assert Dispatcher(ctx).run_once().failed == 1
    row = _row(ctx)
    assert row.status == "failed"
    assert "127.0.0.1, a loopback address" in row.last_error
    assert "CRMFLOW_WEBHOOK_ALLOW" in row.last_error
    assert http_server.requests == []


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://localhost:8080/x", "loopback"),  # a name: its resolved address is checked
        ("http://10.1.2.3/x", "a private address"),
        ("http://192.168.0.10/x", "a private address"),
        ("http://169.254.169.254/latest/meta-data", "link-local"),
        ("http://[::1]/x", "loopback"),
        ("http://[::ffff:10.0.0.1]/x", "a private address"),
        ("http://0.0.0.0/x", "not a public address"),
    ],
)
def test_addresses_that_are_not_public_are_refused(url: str, why: str) -> None:
    with pytest.raises(DeliveryError, match=why) as refused:
        resolve_checked(url, ())
    assert refused.value.permanent


def test_the_allow_list_lets_listed_networks_through() -> None:
    allow = allowed_networks("127.0.0.1/32, 10.0.0.0/8")
    target = resolve_checked("http://10.1.2.3:8080/hook?a=1", allow)
    assert (target.url, target.host_header) == ("http://10.1.2.3:8080/hook?a=1", "10.1.2.3:8080")
    with pytest.raises(DeliveryError, match="a private address"):
        resolve_checked("http://192.168.0.10/x", allow)
    with pytest.raises(DeliveryError, match="only http:// and https://"):
        resolve_checked("file:///etc/passwd", allow)
    with pytest.raises(ValueError, match="not an address or network"):
        allowed_networks("10.0.0.0/8,intranet")


@pytest.fixture(scope="module")
def localhost_tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[ssl.SSLContext, Path]:
    """A server context with a self-signed certificate for the name `localhost` only (no IP in
    it), and the certificate, for the client to trust."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    request = ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
    subject = ["-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"]
    subprocess.run(
        ["openssl", *request, *subject, "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert, key)
    return server, cert


def test_https_goes_to_the_checked_address_with_the_name_for_tls(
    ctx: Context, localhost_tls: tuple[ssl.SSLContext, Path]
) -> None:
    server_tls, cert = localhost_tls
    server = HttpServer(tls=server_tls)
    server.start()
    try:
        trusting = new_client(verify=ssl.create_default_context(cafile=str(cert)))
        settings = ctx.settings.model_copy(update={"webhook_allow": "127.0.0.1/32,::1/128"})
        sender = WebhookSender(settings, trusting)
        # The name resolves to 127.0.0.1; the call goes there, and TLS checks `localhost`.
        payload = WebhookPayload(url=f"https://localhost:{server.port}/tls", body='{"a": 1}')
        assert sender.send(payload, "key-1", ctx.now()).reply == "200 ok"
        [got] = server.requests
        assert (got.path, got.headers["host"]) == ("/tls", f"localhost:{server.port}")
        # The certificate names no address: called by its address, the check refuses it.
        by_address = WebhookPayload(url=f"https://127.0.0.1:{server.port}/tls")
        with pytest.raises(DeliveryError, match="CERTIFICATE_VERIFY_FAILED"):
            sender.send(by_address, "key-2", ctx.now())
        sender.close()
    finally:
        server.stop()


ALL_CHANNELS = """\
schema_version: 1
key: everything
name: Everything
record_type: contact
triggers: [{{type: manual}}]
steps:
  - key: all
    actions:
      - type: send_email
        key: mail
        subject: "Hello"
        body: "Hi"
      - type: webhook
        key: hook
        url: "{url}/refuse"
      - type: send_sms
        key: sms
        message: "Hi"
"""


def _everything(ctx: Context, admin: Actor, url: str) -> None:
    flows.create_flow(ctx, admin, ALL_CHANNELS.format(url=url))
    flows.change_status(ctx, admin, "everything", LifecycleAction.START)
    data = {"first_name": "Ana", "last_name": "Pop", "email": "ana@x.org", "phone": "+40721234567"}
    rid = records.create_record(ctx, admin, "contact", data).id
    runs.start_record(ctx, admin, "everything", rid)


def _statuses(ctx: Context) -> dict[str, str]:
    with ctx.engine.connect() as conn:
        return {r.kind: r.status for r in conn.execute(sa.select(outbox.c.kind, outbox.c.status))}


def test_one_dispatcher_delivers_all_three_channels_and_a_failure_stays_alone(
    ctx: Context, admin: Actor, http_server: HttpServer
) -> None:
    _everything(ctx, admin, http_server.url)
    http_server.replies = [Reply(404, "no such hook")]
    result = Dispatcher(with_settings(ctx, webhook_allow=LOOPBACK)).run_once()
    assert (result.claimed, result.delivered, result.failed) == (3, 2, 1)
    assert _statuses(ctx) == {"email": "caught", "webhook": "failed", "sms": "caught"}


def test_an_unforeseen_error_in_one_message_leaves_the_others_delivered(
    ctx: Context, admin: Actor, http_server: HttpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    _everything(ctx, admin, http_server.url)

    def broken(*args: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(WebhookSender, "send", broken)
    result = Dispatcher(with_settings(ctx, webhook_allow=LOOPBACK)).run_once()
    assert (result.delivered, result.retrying) == (2, 1)
    assert _statuses(ctx) == {"email": "caught", "webhook": "retrying", "sms": "caught"}
    assert _row(ctx).last_error == "RuntimeError: a bug"
