"""The dispatcher's lean email builder (`build_simple_email`) writes a message without
attachments as `build_email` (the email package) does, byte for byte but the MIME boundary and
where MIME-Version stands; the List-Unsubscribe URL stays one `<url>` (the email package encoded
it as RFC 2047 words, which a mail client cannot use as a link); a header with a line break
fails the message for good, as before."""

from __future__ import annotations

import re
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default

import pytest

from crmflow.delivery.email import OutgoingEmail, build_email, build_simple_email, with_headers
from crmflow.engine.commands import Attachment, EmailPayload
from crmflow.errors import DeliveryError

SENDER = "CRM <crm@example.org>"
PAYLOADS = [
    EmailPayload(message_id="<a1@crm>", to=("anna@example.org",), subject="Hi", body="Dear Anna."),
    EmailPayload(
        message_id="<a2@crm>",
        from_address="Les Amis <dons@example.org>",
        to=("Zoé Müller <zoe@example.org>", "b@example.org"),
        cc=("c@example.org",),
        reply_to="r@example.org",
        subject="Bonjour Zoé, un sujet bien plus long que les soixante-dix-huit caractères permis",
        body="héllo\n.dot\r\nline\n\n" + "x" * 200 + "\n  trailing   \nend=equals €",
    ),
    EmailPayload(
        message_id="<a3@crm>",
        to=tuple(f"person{n}@example.org" for n in range(9)),
        subject="A" * 120,
        body="",
    ),
]


def _normalised(data: bytes) -> bytes:
    data = re.sub(rb"={15}\d+==|=_crmflow_[0-9a-f]{32}", b"BOUNDARY", data)
    data = re.sub(rb"Date: [^\r]*", b"Date: X", data)
    return data.replace(b"MIME-Version: 1.0\r\n", b"")


@pytest.mark.parametrize("payload", PAYLOADS, ids=["short", "encoded", "folded"])
@pytest.mark.parametrize("html", [None, "<p>Héllo</p>\n<p>x</p>"], ids=["text", "html"])
def test_the_lean_builder_writes_what_the_email_package_writes(
    payload: EmailPayload, html: str | None
) -> None:
    lean = build_simple_email(payload, SENDER, html=html)
    full = OutgoingEmail.of(build_email(payload, SENDER, html=html))
    assert _normalised(lean.data) == _normalised(full.data)
    assert lean.data.count(b"MIME-Version: 1.0\r\n") == 1
    assert (lean.subject, lean.sender) == (full.subject, full.sender)
    parsed = message_from_bytes(lean.data, policy=default)
    assert isinstance(parsed, EmailMessage)
    assert parsed["Subject"] == payload.subject
    text = parsed.get_body(("plain",))
    assert text is not None
    got = text.get_content().replace("\r\n", "\n")
    assert got == "\n".join((payload.body or "").splitlines()) + "\n"


def test_the_unsubscribe_url_is_one_line_a_client_can_follow() -> None:
    url = "<https://crm.example.org/u/YW5uYUBleGFtcGxlLm9yZw." + "x" * 43 + ">"
    headers = [("List-Unsubscribe", url), ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click")]
    lean = build_simple_email(PAYLOADS[0], SENDER, headers=headers)
    assert f"\r\nList-Unsubscribe: {url}\r\n".encode() in lean.data
    parsed = message_from_bytes(lean.data, policy=default)
    assert parsed["List-Unsubscribe"] == url


def test_an_email_with_an_attachment_carries_the_same_one_line_unsubscribe_url() -> None:
    url = "<https://crm.example.org/u/YW5uYUBleGFtcGxlLm9yZw." + "x" * 43 + ">"
    headers = [("List-Unsubscribe", url), ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click")]
    attachment = Attachment(filename="receipt.txt", content="Thank you", content_type="text/plain")
    payload = PAYLOADS[0].model_copy(update={"attachments": (attachment,)})
    email = with_headers(OutgoingEmail.of(build_email(payload, SENDER)), headers)
    assert f"\r\nList-Unsubscribe: {url}\r\n".encode() in email.data
    assert b"=?utf-8?" not in email.data
    parsed = message_from_bytes(email.data, policy=default)
    assert isinstance(parsed, EmailMessage)
    assert parsed["List-Unsubscribe"] == url
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert parsed["Message-ID"] == "<a1@crm>"
    [part] = list(parsed.iter_attachments())
    assert (part.get_filename(), part.get_content()) == ("receipt.txt", "Thank you")
    assert email.data.count(b"List-Unsubscribe:") == 1


def test_a_header_with_a_line_break_fails_the_message_for_good() -> None:
    payload = PAYLOADS[0].model_copy(update={"subject": "Hi\r\nBcc: victim@example.org"})
    with pytest.raises(DeliveryError, match="line break") as raised:
        build_simple_email(payload, SENDER)
    assert raised.value.permanent
