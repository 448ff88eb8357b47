"""Idempotency keys and Message-IDs: the same step run always gives the same ones, and two
different actions, step runs or enrollments never share one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from crmflow.engine.commands import (
    COMMANDS,
    EmailPayload,
    OutboxMessage,
    idempotency_key,
    message_id,
)
from crmflow.engine.definition import FlowDefinition
from crmflow.engine.recordtypes import type_catalog
from crmflow.engine.runtime import RecordSnapshot
from crmflow.engine.transition import Outcome, advance, enter
from crmflow.engine.validation import ValidationContext, flow_from_data

NOW = datetime(2026, 5, 4, 9, 0, tzinfo=UTC)
ZONE = ZoneInfo("Europe/Rome")

FLOW = {
    "schema_version": 1,
    "key": "sequence",
    "name": "Sequence",
    "record_type": "contact",
    "triggers": [{"type": "manual"}],
    "steps": [
        {
            "key": "hello",
            "actions": [
                {
                    "type": "send_email",
                    "from": "Shop <offers@Example.org>",
                    "subject": "Hi",
                    "body": "Hello {{ record.first_name }}",
                },
                {"type": "send_sms", "key": "sms", "message": "Hi {{ record.first_name }}"},
                {"type": "webhook", "url": "https://erp.example.org/hook", "body": "{}"},
            ],
        },
        {
            "key": "again",
            "timing": {"type": "after", "amount": 1},
            "actions": [{"type": "send_email", "subject": "Again", "body": "x"}],
        },
    ],
}


def flow() -> FlowDefinition:
    return flow_from_data(FLOW, context=ValidationContext(record_types=type_catalog()))


def record(record_id: int = 3) -> RecordSnapshot:
    values = {
        "first_name": "Giulia",
        "last_name": "Rossi",
        "email": "g@example.org",
        "phone": "+39 011 555 0101",
    }
    return RecordSnapshot(id=record_id, type="contact", values=values)


def run(enrollment_id: int = 10) -> Outcome:
    return enter(
        flow(), enrollment_id=enrollment_id, flow_version=1, record=record(), now=NOW, zone=ZONE
    )


def outbox(outcome: Outcome) -> list[OutboxMessage]:
    return [c for c in outcome.commands if isinstance(c, OutboxMessage)]


def email_payload(message: OutboxMessage) -> EmailPayload:
    """The payload of an email message (the test knows which messages are emails)."""
    assert isinstance(message.payload, EmailPayload)
    return message.payload


def test_the_same_step_run_gives_the_same_keys_and_message_ids() -> None:
    first, again = outbox(run()), outbox(run())
    assert [m.idempotency_key for m in first] == [m.idempotency_key for m in again]
    assert email_payload(first[0]).message_id == email_payload(again[0]).message_id
    assert first == again


def test_keys_differ_between_actions_step_runs_and_enrollments() -> None:
    entered = run()
    later = advance(flow(), entered.state, entered.record, now=NOW + timedelta(days=1), zone=ZONE)
    other = run(enrollment_id=11)
    keys = [m.idempotency_key for m in outbox(entered) + outbox(later) + outbox(other)]
    assert len(keys) == 7  # 3 + 1 + 3
    assert len(set(keys)) == len(keys)
    ids = [
        email_payload(m).message_id
        for m in outbox(entered) + outbox(later) + outbox(other)
        if m.channel == "email"
    ]
    assert len(set(ids)) == len(ids) == 3


def test_keys_name_the_enrollment_the_step_run_and_the_action() -> None:
    email, sms, hook = outbox(run())
    assert email.idempotency_key == idempotency_key(10, 1, "#0")
    assert sms.idempotency_key == idempotency_key(10, 1, "sms")  # the action's key wins
    assert hook.idempotency_key == idempotency_key(10, 1, "#2")
    assert (email.step_key, email.step_run, email.action_index) == ("hello", 1, 0)


def test_message_ids_are_valid_and_use_the_senders_domain() -> None:
    email = email_payload(outbox(run())[0])
    assert email.message_id.endswith("@example.org>")
    assert email.message_id.startswith("<")
    assert message_id("k") == message_id("k") != message_id("k2")
    assert message_id("k").endswith("@crmflow.local>")


def test_commands_round_trip_through_json() -> None:
    commands = list(run().commands)
    data = COMMANDS.dump_python(commands, mode="json")
    assert [c["kind"] for c in data] == ["outbox"] * 3
    assert COMMANDS.validate_python(data) == commands
