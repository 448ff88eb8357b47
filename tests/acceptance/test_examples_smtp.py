"""The seed flows of `examples/` that send email run end to end to a real SMTP server: each runs
on its sample record through the real system with a frozen clock (as in
test_examples_end_to_end), the dispatcher delivers after each round of the worker with
CRMFLOW_SMTP_URL pointing at an aiosmtpd server on 127.0.0.1, and the server received each
email: its recipients, subject and a line of its body.

property-sale-follow-up sends no email of its own (tasks and in-app notifications): its emails
are the late notices to its controller, as its tasks are left undone past their deadlines (so
are donor-thank-you's and event-automations' last ones). recruitment-approval emails each level
the links of its buttons (`email_link: true`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage

import pytest
from fastapi.testclient import TestClient

from crmflow.delivery.dispatcher import Dispatcher
from crmflow.services.context import Context
from tests.acceptance.test_examples_end_to_end import CASES, EXAMPLES, Case, drive
from tests.conftest import FrozenClock
from tests.integration.test_delivery_smtp import SmtpServer, with_smtp


@dataclass(frozen=True)
class Sent:
    """What the server must have received for one email."""

    envelope: set[str]  # RCPT TO (to, cc and bcc)
    to: str  # the To header
    subject: str
    line: str  # a line of the text body


EXPECTED: dict[str, list[Sent]] = {
    "donor-thank-you": [
        Sent(
            {"claire.martin@example.org"},
            "claire.martin@example.org",
            "Merci Claire !",
            "Merci pour votre don de 750",
        ),
        Sent(
            {"claire.martin@example.org"},
            "claire.martin@example.org",
            "Claire, nos projets avancent grâce à vous",
            "les nouveaux bancs du parc",
        ),
        # The thank-you call is left undone past its deadline: the controller is told.
        Sent(
            {"maria@example.org"},
            "maria@example.org",
            "crmflow: step call of flow donor-thank-you is late (record 1)",
            "Step 'call' is late: task 'Call Claire Martin to thank them'",
        ),
    ],
    "event-automations": [
        Sent(
            {"events@example.org", "logistics@example.org"},
            "events@example.org",
            "In 7 days: Donor evening",
            "at Cluj, Sala Mare.",
        ),
        Sent(
            {"alice@example.org"},
            "alice@example.org",
            "crmflow: step prepare of flow event-automations is late (record 1)",
            "Step 'prepare' is late: task 'Prepare Donor evening (Cluj, Sala Mare)'",
        ),
    ],
    # A marketing email: one message to each recipient (To, Cc, Bcc), with their own
    # unsubscribe link (docs/delivery.md).
    "six-month-promotion": [
        Sent(
            {address},
            "giulia.rossi@example.org",
            "Giulia, 15% off for six months with us",
            "Use the code SIX-",
        )
        for address in ("giulia.rossi@example.org", "sales@example.org", "archive@example.org")
    ],
    "recruitment-approval": [
        Sent(
            {"maria@example.org"},
            "maria@example.org",
            "Decision needed: Hire Ioana Popescu as Service technician?",
            "Validate: http",
        ),
        Sent(
            {"alice@example.org"},
            "alice@example.org",
            "Decision needed: Service technician at 42000 a year: approved by the manager.",
            "Refuse: http",
        ),
    ],
    "property-sale-follow-up": [
        # Only the late notices to the controller: each step's task is left undone.
        Sent(
            {"maria@example.org"},
            "maria@example.org",
            "crmflow: step paperwork of flow property-sale-follow-up is late (record 1)",
            "Step 'paperwork' is late: task 'Complete the sale file of Via Roma 12'",
        ),
        Sent(
            {"maria@example.org"},
            "maria@example.org",
            "crmflow: step keys-handover of flow property-sale-follow-up is late (record 1)",
            "Step 'keys-handover' is late: task 'Hand over the keys of Via Roma 12'",
        ),
        Sent(
            {"maria@example.org"},
            "maria@example.org",
            "crmflow: step satisfaction-call of flow property-after-sale is late (record 1)",
            "Step 'satisfaction-call' is late: task 'Call the buyer of Via Roma 12'",
        ),
    ],
    "sales-orders": [
        Sent(
            {"orders@example.org"},
            "orders@example.org",
            "Your order S-2024-0042 was delivered",
            "Thank you for your order.",
        )
    ],
}


def _text(message: EmailMessage) -> str:
    body = message.get_body(preferencelist=("plain",))
    assert isinstance(body, EmailMessage), message
    return str(body.get_content())


@pytest.fixture(params=[c for c in CASES if c.flow in EXPECTED], ids=lambda c: c.flow if c else "")
def case(request: pytest.FixtureRequest, backend: str) -> Case:
    if backend != "sqlite":  # the delivery is the same; the flows run on both backends elsewhere
        pytest.skip("delivery of the seed flows is checked on SQLite")
    assert isinstance(request.param, Case)
    return request.param


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    server = SmtpServer()
    server.start()
    yield server
    server.stop()


def test_seed_flow_emails_reach_the_smtp_server(
    ctx: Context, clock: FrozenClock, client: TestClient, case: Case, smtp: SmtpServer
) -> None:
    delivering = with_smtp(ctx, smtp.url)
    drive(ctx, clock, client, case, each_round=lambda: Dispatcher(delivering).run_once())
    expected = EXPECTED[case.flow]
    got = [
        # A long subject is folded: its unfolded text starts after the space of the fold.
        Sent(
            set(r.rcpt_tos),
            str(r.message["To"]),
            str(r.message["Subject"]).strip(),
            _text(r.message),
        )
        for r in smtp.received
    ]
    assert [(g.envelope, g.to, g.subject) for g in got] == [
        (e.envelope, e.to, e.subject) for e in expected
    ]
    for sent, received, want in zip(got, smtp.received, expected, strict=True):
        assert want.line in sent.line, (want.line, sent.line)
        assert "Bcc" not in received.message


def test_every_seed_flow_that_sends_email_has_a_case() -> None:
    sending = {
        path.stem
        for path in EXAMPLES.glob("*.yaml")
        if re.search(r"type: send_email|email_link: true", path.read_text(encoding="utf-8"))
    }
    # And those whose tasks are left late (their controller is emailed).
    assert sending <= set(EXPECTED)
