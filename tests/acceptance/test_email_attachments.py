"""A flow's email carries the record's files (`attachments:`) to a real SMTP server (aiosmtpd on
127.0.0.1), on SQLite and PostgreSQL: the receiver gets the PDF byte for byte under its name,
and a related record's file too; an email whose file was deleted fails alone, saying why; the
mail catcher lists the attachments by name."""

from __future__ import annotations

from typing import Any

from crmflow.delivery.dispatcher import Dispatcher
from crmflow.engine.lifecycle import LifecycleAction
from crmflow.services import enrollments as runs
from crmflow.services import flows, mail, record_files, records, run_views
from crmflow.services.context import Actor, Context
from tests.integration.test_delivery_smtp import SmtpServer, smtp, with_smtp
from tests.integration.test_record_files import PDF, add_file_field

__all__ = ["smtp"]  # the fixture, used by name

PNG = b"\x89PNG\r\n\x1a\n" + bytes(200)
FLOW = """\
schema_version: 1
key: contract-mail
name: Contract by email
record_type: contact
reentry: {mode: always}
triggers: [{type: manual}]
steps:
  - key: send
    actions:
      - type: send_email
        key: contract
        from: "Sales <sales@example.org>"
        subject: "Your contract, {{ record.first_name }}"
        body: "Please find your contract attached."
        attachments: [contract, company.logo]
        category: transactional
"""


def _setup(ctx: Context, admin: Actor) -> tuple[int, int]:
    """Two contacts of one company, each with a contract, the company with its logo; the flow
    started for both (their emails are in the outbox)."""
    add_file_field(ctx, admin, "contact", "contract")
    add_file_field(ctx, admin, "company", "logo")
    company = records.create_record(ctx, admin, "company", {"name": "Acme"}).id
    record_files.put_file(ctx, admin, company, "logo", "acme.png", PNG)
    flows.create_flow(ctx, admin, FLOW)
    flows.change_status(ctx, admin, "contract-mail", LifecycleAction.START)
    ids = []
    for name in ("Ana", "Radu"):
        data = {"first_name": name, "last_name": "Pop", "email": f"{name.lower()}@example.org"}
        rid = records.create_record(ctx, admin, "contact", {**data, "company": company}).id
        record_files.put_file(ctx, admin, rid, "contract", f"contract-{name}.pdf", PDF)
        runs.start_record(ctx, admin, "contract-mail", rid)
        ids.append(rid)
    return ids[0], ids[1]


def _email_message(ctx: Context, admin: Actor, rid: int) -> dict[str, Any]:
    [view] = run_views.record_status(ctx, admin, rid).enrollments
    [action] = [a for run in view.step_runs for a in run.actions if a["type"] == "send_email"]
    message = action["message"]
    assert isinstance(message, dict)
    return message


def test_the_receiver_gets_the_records_pdf_and_the_related_records_logo(
    ctx: Context, admin: Actor, smtp: SmtpServer
) -> None:
    _setup(ctx, admin)
    result = Dispatcher(with_smtp(ctx, smtp.url)).run_once()
    assert result.delivered == 2

    got = sorted(smtp.received, key=lambda r: r.rcpt_tos)
    mail_ = got[0].message
    assert got[0].rcpt_tos == ["ana@example.org"]
    assert mail_.get_content_type() == "multipart/mixed"
    body, *attached = list(mail_.iter_parts())
    assert body.get_content().strip() == "Please find your contract attached."
    assert [(p.get_filename(), p.get_content_type()) for p in attached] == [
        ("contract-Ana.pdf", "application/pdf"),
        ("acme.png", "image/png"),
    ]
    assert attached[0].get_content() == PDF
    assert attached[1].get_content() == PNG
    radu_files = [p.get_filename() for p in got[1].message.iter_attachments()]
    assert radu_files == ["contract-Radu.pdf", "acme.png"]


def test_an_email_whose_file_was_deleted_fails_alone_saying_why(
    ctx: Context, admin: Actor, smtp: SmtpServer
) -> None:
    ana, radu = _setup(ctx, admin)
    record_files.delete_file(ctx, admin, ana, "contract")
    result = Dispatcher(with_smtp(ctx, smtp.url)).run_once()
    assert (result.delivered, result.failed) == (1, 1)

    assert [r.rcpt_tos for r in smtp.received] == [["radu@example.org"]]
    failed = _email_message(ctx, admin, ana)
    assert failed["status"] == "failed"
    assert failed["attempts"] == 1  # not retried: another attempt would find the same
    assert (
        f"the attachment contract: record {ana} has no file in contract" in (failed["last_error"])
    )
    assert f"crmflow records attach {ana} contract PATH" in failed["last_error"]
    assert _email_message(ctx, admin, radu)["status"] == "delivered"


def test_an_email_larger_than_the_limit_fails_saying_which_setting(
    ctx: Context, admin: Actor, smtp: SmtpServer
) -> None:
    ana, _ = _setup(ctx, admin)
    small = with_smtp(ctx, smtp.url, max_email_bytes=2000)
    assert Dispatcher(small).run_once().failed == 2
    assert smtp.received == []
    error = _email_message(ctx, admin, ana)["last_error"]
    assert "contract-Ana.pdf" in error
    assert "CRMFLOW_MAX_EMAIL_BYTES" in error


def test_the_mail_catcher_lists_the_attachments_by_name(ctx: Context, admin: Actor) -> None:
    _setup(ctx, admin)
    assert Dispatcher(with_smtp(ctx, None)).run_once().delivered == 2
    [newest, _] = mail.list_caught(ctx, admin)
    shown = mail.readable(newest.rendered)
    assert "[attachment contract-" in shown
    assert ".pdf (application/pdf)]" in shown
    assert "[attachment acme.png (image/png)]" in shown


def test_a_related_file_of_an_empty_reference_fails_the_action_saying_why(
    ctx: Context, admin: Actor
) -> None:
    _setup(ctx, admin)
    data = {"last_name": "Alone", "email": "alone@example.org"}  # no company
    rid = records.create_record(ctx, admin, "contact", data).id
    runs.start_record(ctx, admin, "contract-mail", rid)
    [view] = run_views.record_status(ctx, admin, rid).enrollments
    [action] = view.step_runs[0].actions
    assert action["status"] == "failed"
    assert action["detail"] == (
        "the attachment 'company.logo': the record's company is empty, so there is no company "
        "record to take the file from"
    )
    assert "message" not in action  # nothing was written to the outbox for it


def test_a_file_many_emails_of_a_batch_attach_is_read_once(
    ctx: Context, admin: Actor, smtp: SmtpServer
) -> None:
    _setup(ctx, admin)  # two contracts, and the company's logo that both emails carry
    dispatcher = Dispatcher(with_smtp(ctx, smtp.url))
    assert dispatcher.run_once().delivered == 2
    assert dispatcher.attachments.reads == 3  # not 4: the logo once
    logos = [p.get_content() for r in smtp.received for p in r.message.iter_attachments()]
    assert logos.count(PNG) == 2


def _logo(ctx: Context, company: int) -> record_files.FileInfo:
    [info] = [f for f in record_files.list_files(ctx, company) if f.field == "logo"]
    return info


def test_the_cache_reads_a_replaced_file_anew_and_keeps_no_more_bytes_than_its_bound(
    ctx: Context, admin: Actor
) -> None:
    add_file_field(ctx, admin, "company", "logo")
    company = records.create_record(ctx, admin, "company", {"name": "Acme"}).id
    record_files.put_file(ctx, admin, company, "logo", "acme.png", PNG)
    old = _logo(ctx, company)
    cache = record_files.AttachmentCache(max_bytes=len(PNG) * 2)
    with ctx.engine.connect() as conn:
        assert cache.content(conn, old) == PNG
        assert cache.content(conn, old) == PNG
    assert cache.reads == 1

    new_png = PNG + b"\x01" * 10
    record_files.put_file(ctx, admin, company, "logo", "acme.png", new_png)
    new = _logo(ctx, company)
    assert new.sha256 != old.sha256
    with ctx.engine.connect() as conn:
        assert cache.content(conn, new) == new_png  # another checksum: read again
        assert cache.content(conn, new) == new_png
        assert cache.reads == 2
        # Described before it was replaced: not the bytes kept, nor the new ones.
        assert record_files.AttachmentCache(10_000).content(conn, old) is None

    # The bound: both versions do not fit together, the older one was dropped; a file larger
    # than the bound is never kept.
    with ctx.engine.connect() as conn:
        assert cache.content(conn, old) is None  # dropped when new came in: read, and gone
        assert cache.reads == 3
        tiny = record_files.AttachmentCache(max_bytes=10)
        tiny.content(conn, new)
        tiny.content(conn, new)
        assert tiny.reads == 2
