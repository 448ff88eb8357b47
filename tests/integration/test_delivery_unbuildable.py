"""An email that can never be built fails at its first attempt, saying why, instead of being
tried again for hours: a line break in a header (a subject or an address made from a record's
field; an email header cannot carry one, and it would be a header injection), or a stored
template whose filter cannot format the record's value."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from crmflow.delivery.dispatcher import Dispatcher
from crmflow.engine.lifecycle import LifecycleAction
from crmflow.services import enrollments as runs
from crmflow.services import flows, records, templates
from crmflow.services.context import Actor, Context
from crmflow.store.schema import outbox

FLOW = """\
schema_version: 1
key: {key}
name: {key}
record_type: contact
triggers: [{{type: manual}}]
steps:
  - key: hello
    actions:
      - type: send_email
{action}
"""


def _outcome(ctx: Context, admin: Actor, key: str, action: str, first_name: str) -> Any:
    flows.create_flow(ctx, admin, FLOW.format(key=key, action=action))
    flows.change_status(ctx, admin, key, LifecycleAction.START)
    data = {"first_name": first_name, "last_name": "Martin", "email": "claire@example.org"}
    runs.start_record(ctx, admin, key, records.create_record(ctx, admin, "contact", data).id)
    Dispatcher(ctx).run_once()
    with ctx.engine.connect() as conn:
        row = conn.execute(sa.select(outbox.c.status, outbox.c.attempts, outbox.c.last_error))
        return row.one()


def test_a_line_break_in_the_subject_fails_the_email_at_once(ctx: Context, admin: Actor) -> None:
    action = '        subject: "News for {{ record.first_name }}"\n        body: "Hello"'
    row = _outcome(ctx, admin, "news", action, "Claire\r\nBcc: all@example.org")
    assert (row.status, row.attempts) == ("failed", 1)
    assert "Subject" in row.last_error and "line break" in row.last_error


def test_a_template_filter_that_cannot_format_the_value_fails_the_email_at_once(
    ctx: Context, admin: Actor
) -> None:
    templates.save_template(ctx, admin, "amount", {"text": "{{ record.first_name | number }}"})
    action = '        subject: "News"\n        template: amount'
    row = _outcome(ctx, admin, "amounts", action, "1e1000")
    assert (row.status, row.attempts) == ("failed", 1)
    assert "the template 'amount' did not render" in row.last_error
