"""Test mode: a run whose messages all go to the flow's test recipients instead (pure).

A flow lists `test_recipients` (email addresses and phone numbers); a run started in test mode
(`crmflow flows start KEY ... --test`, the API's `test: true`) keeps them, and each message it
writes to the outbox is rewritten here before it is stored:

- an email goes to the test email addresses only (To; no Cc, no Bcc), its subject starts with
  "[TEST] " (a stored template's subject too: the dispatcher keeps the prefix);
- an SMS goes to each test phone number (one message each);
- a webhook is called as usual, with the header `webhook-test: true`, so the receiver can tell
  (there is no recipient to replace);
- a message with no test recipient of its kind (an SMS when the list holds only addresses) is
  not sent: its row is written `failed`, saying why.

Nothing else about the run differs: its steps, waits, conditions and record changes are those
of any run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from crmflow.engine.recordtypes.values import PHONE_PATTERN, normalise_email
from crmflow.errors import Problem

__all__ = [
    "TEST_HEADER",
    "TEST_PREFIX",
    "Rewrite",
    "prefixed_subject",
    "recipient_problems",
    "rewritten_for_test",
    "split_recipients",
]

TEST_PREFIX = "[TEST] "
TEST_HEADER = "webhook-test"
MAX_TEST_RECIPIENTS = 20


def split_recipients(recipients: Sequence[str]) -> tuple[list[str], list[str]]:
    """(email addresses, phone numbers) of a flow's test recipients: an address has an @."""
    emails = [r.strip() for r in recipients if "@" in r]
    phones = [r.strip() for r in recipients if "@" not in r]
    return emails, phones


def recipient_problems(recipients: Sequence[str], path: str = "test_recipients") -> list[Problem]:
    """What is wrong with a flow's test recipients: each must be an email address or a phone
    number, at most MAX_TEST_RECIPIENTS of them."""
    problems: list[Problem] = []
    if len(recipients) > MAX_TEST_RECIPIENTS:
        problems.append(
            Problem(path, f"at most {MAX_TEST_RECIPIENTS} test recipients", "list fewer")
        )
    for index, value in enumerate(recipients):
        where = f"{path}[{index}]"
        if "@" in value:
            try:
                normalise_email(value)
            except ValueError as exc:
                problems.append(Problem(where, f"{value!r} is not a valid email address: {exc}"))
        elif not PHONE_PATTERN.match(value.strip()):
            problems.append(
                Problem(
                    where,
                    f"{value!r} is neither an email address nor a phone number",
                    "an address like you@example.org, or a number like +40 721 000 000",
                )
            )
    return problems


def prefixed_subject(subject: str) -> str:
    """The subject of a test email: "[TEST] " first, once."""
    return subject if subject.startswith(TEST_PREFIX) else TEST_PREFIX + subject


Rewrite = tuple[str, dict[str, Any] | None, str]  # (key suffix, payload or None, why not)


def rewritten_for_test(
    kind: str, payload: dict[str, Any], recipients: Sequence[str]
) -> list[Rewrite]:
    """The messages a test run sends instead of `payload` (an outbox payload as JSON): each
    with the suffix of its idempotency key ("" for the first) and its payload, or None and why
    it is not sent."""
    emails, phones = split_recipients(recipients)
    if kind == "email":
        if not emails:
            return [("", None, "a test run: the flow's test_recipients hold no email address")]
        subject = prefixed_subject(str(payload.get("subject") or ""))
        return [("", {**payload, "to": emails, "cc": [], "bcc": [], "subject": subject}, "")]
    if kind == "sms":
        if not phones:
            return [("", None, "a test run: the flow's test_recipients hold no phone number")]
        return [
            ("" if i == 0 else f":test{i}", {**payload, "to": phone}, "")
            for i, phone in enumerate(phones)
        ]
    headers = {**dict(payload.get("headers") or {}), TEST_HEADER: "true"}
    return [("", {**payload, "headers": headers}, "")]
