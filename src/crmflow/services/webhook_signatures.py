"""Standard Webhooks signatures of inbound calls: their headers read and checked, and a body's
signature under a trigger's secret.

A flow whose webhook trigger has a `secret` takes calls signed the Standard Webhooks way: headers
`webhook-id`, `webhook-timestamp`, `webhook-signature` (`v1,` and the base64 HMAC-SHA256 of
`<id>.<timestamp>.<body>` under the secret; a `whsec_<base64>` secret is the bytes it encodes,
any other secret its UTF-8 bytes), the timestamp within `SIGNATURE_TOLERANCE` of now, by the
context's clock. Each refusal says what is wrong and how to sign (`HOW_TO_SIGN`).
`crmflow.services.webhooks_in` checks calls with these, and re-exports `Signature` and `sign`.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from standardwebhooks import Webhook
from standardwebhooks.webhooks import EmptyWebhookSecretError

from crmflow.engine.definition.checks import WHSEC_PREFIX
from crmflow.errors import AuthenticationError, InvalidInputError, Problem

__all__ = [
    "HOW_TO_SIGN",
    "SIGNATURE_TOLERANCE",
    "Signature",
    "Signed",
    "read_signature",
    "sign",
    "signed_with",
]

SIGNATURE_TOLERANCE = timedelta(minutes=5)

HOW_TO_SIGN = (
    "sign each call the Standard Webhooks way: header webhook-id (a unique id for the call), "
    "webhook-timestamp (the Unix time in seconds when it is sent) and webhook-signature "
    "'v1,<base64 of HMAC-SHA256 over \"<webhook-id>.<webhook-timestamp>.<body>\">', keyed with "
    "the flow's secret (a whsec_ secret: the bytes of the base64 after 'whsec_'; any other: its "
    "UTF-8 bytes); see 'webhook' in docs/flows.md"
)


@dataclass(frozen=True)
class Signature:
    """The Standard Webhooks headers of a call, as received (None: absent)."""

    id: str | None = None
    timestamp: str | None = None
    signature: str | None = None

    @property
    def present(self) -> bool:
        return any((self.id, self.timestamp, self.signature))


def _webhook(secret: str) -> Webhook | None:
    """The signer for a trigger's secret, or None when the secret cannot be one (a whsec_
    secret that is not base64, or empty)."""
    try:
        key: str | bytes = secret if secret.startswith(WHSEC_PREFIX) else secret.encode()
        return Webhook(key)
    except (ValueError, EmptyWebhookSecretError):  # binascii.Error is a ValueError
        return None


def sign(secret: str, msg_id: str, timestamp: datetime, body: bytes) -> str:
    """The `webhook-signature` value a sender puts on `body` (for tests and examples)."""
    signer = _webhook(secret)
    if signer is None:
        raise InvalidInputError("the secret", [Problem("secret", "not a usable webhook secret")])
    # The library reads the datetime's fields as UTC: give it UTC.
    at = timestamp.astimezone(UTC)
    return signer.sign(msg_id=msg_id, timestamp=at, data=body.decode("utf-8"))


@dataclass(frozen=True)
class Signed:
    """A call's signature headers, read and checked for form and time."""

    id: str
    at: datetime
    signatures: list[bytes]  # the v1 signatures the call carries


def read_signature(signature: Signature, *, now: datetime) -> Signed:
    """The call's signature headers checked for form and time (not yet against a secret)."""
    missing = [
        name
        for name, value in (
            ("webhook-id", signature.id),
            ("webhook-timestamp", signature.timestamp),
            ("webhook-signature", signature.signature),
        )
        if not value
    ]
    if missing:
        raise AuthenticationError(
            f"this hook takes signed calls only, and the call has no {', '.join(missing)} "
            f"header; {HOW_TO_SIGN}"
        )
    assert signature.id and signature.timestamp and signature.signature
    try:
        at = datetime.fromtimestamp(int(signature.timestamp.strip()), UTC)
    except (ValueError, OverflowError, OSError):
        raise AuthenticationError(
            f"webhook-timestamp must be the Unix time in seconds (e.g. {int(now.timestamp())}), "
            f"not {signature.timestamp!r}; {HOW_TO_SIGN}"
        ) from None
    if at < now - SIGNATURE_TOLERANCE:
        raise AuthenticationError(
            f"webhook-timestamp {signature.timestamp} is {_age(now - at)} old: a signed call is "
            f"taken for {_age(SIGNATURE_TOLERANCE)} after it is signed (sign each call when it "
            f"is sent, with the current time; check the sender's clock)"
        )
    if at > now + SIGNATURE_TOLERANCE:
        raise AuthenticationError(
            f"webhook-timestamp {signature.timestamp} is {_age(at - now)} in the future: more "
            f"than {_age(SIGNATURE_TOLERANCE)} ahead of this server's clock (check the sender's "
            "clock)"
        )
    found: list[bytes] = []
    for part in signature.signature.split():
        version, _, value = part.partition(",")
        if version != "v1" or not value:
            continue
        try:
            found.append(base64.b64decode(value, validate=True))
        except binascii.Error:
            continue
    if not found:
        raise AuthenticationError(
            f"webhook-signature holds no v1 signature (expected 'v1,<base64>', several separated "
            f"by spaces), got {signature.signature[:80]!r}; {HOW_TO_SIGN}"
        )
    return Signed(signature.id, at, found)


def _age(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds < 120:
        return f"{seconds} seconds"
    if seconds < 7200:
        return f"{seconds // 60} minutes"
    return f"{seconds // 3600} hours"


def signed_with(secret: str, signed: Signed, body: str) -> bool:
    """Whether one of the call's v1 signatures is that of `body` under `secret`."""
    signer = _webhook(secret)
    if signer is None:
        return False
    expected = base64.b64decode(signer.sign(signed.id, signed.at, body).partition(",")[2])
    return any(hmac.compare_digest(expected, s) for s in signed.signatures)
