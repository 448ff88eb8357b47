"""Test mode, the pure part: a flow's test recipients are checked when it is saved, and a test
run's messages are rewritten to go to them (subject "[TEST] ", one SMS per number, a webhook
marked with its header)."""

from __future__ import annotations

from typing import Any

from crmflow.engine.test_mode import TEST_HEADER, rewritten_for_test
from crmflow.engine.validation import flow_from_data
from tests.unit.test_flow_validation import CONTEXT, flow, paths

RECIPIENTS = ["me@Example.org", "+40 721 000 000", "+33 6 12 34 56 78"]


def test_test_recipients_are_email_addresses_or_phone_numbers() -> None:
    definition = flow_from_data(flow(test_recipients=RECIPIENTS), context=CONTEXT)
    assert definition.test_recipients == RECIPIENTS
    found = paths(flow(test_recipients=["me@example.org", "me@", "call me", "12"]))
    assert set(found) == {"test_recipients[1]", "test_recipients[2]", "test_recipients[3]"}
    assert "is not a valid email address" in found["test_recipients[1]"].message
    assert "neither an email address nor a phone number" in found["test_recipients[2]"].message
    assert "+40 721 000 000" in found["test_recipients[2]"].hint


EMAIL: dict[str, Any] = {
    "channel": "email",
    "to": ["claire@example.org"],
    "cc": ["boss@example.org"],
    "bcc": ["archive@example.org"],
    "subject": "Your quote",
}


def test_a_test_email_goes_to_the_test_addresses_only_with_a_test_subject() -> None:
    [(suffix, payload, why)] = rewritten_for_test("email", EMAIL, RECIPIENTS)
    assert (suffix, why) == ("", "")
    assert payload is not None
    assert (payload["to"], payload["cc"], payload["bcc"]) == (["me@Example.org"], [], [])
    assert payload["subject"] == "[TEST] Your quote"
    [(_, again, _)] = rewritten_for_test("email", payload, RECIPIENTS)
    assert again is not None and again["subject"] == "[TEST] Your quote"  # once


def test_a_test_sms_goes_to_each_test_number_and_a_webhook_says_it_is_a_test() -> None:
    sms = rewritten_for_test("sms", {"channel": "sms", "to": "+40 700", "text": "Hi"}, RECIPIENTS)
    assert [(s, p and p["to"]) for s, p, _ in sms] == [
        ("", "+40 721 000 000"),
        (":test1", "+33 6 12 34 56 78"),
    ]
    webhook = {"channel": "webhook", "url": "https://erp.example.org", "headers": {"X-A": "1"}}
    [(_, called, _)] = rewritten_for_test("webhook", webhook, RECIPIENTS)
    assert called is not None and called["headers"] == {"X-A": "1", TEST_HEADER: "true"}


def test_a_message_without_a_test_recipient_of_its_kind_is_not_sent() -> None:
    [(_, payload, why)] = rewritten_for_test("sms", {"to": "+40 700", "text": "Hi"}, ["me@x.org"])
    assert payload is None and "no phone number" in why
    [(_, payload, why)] = rewritten_for_test("email", EMAIL, ["+40 721 000 000"])
    assert payload is None and "no email address" in why
