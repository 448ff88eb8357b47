"""Inbound webhooks: a body is held to the bounds of every JSON body whatever content type the
sender declares (a CRM may send text/plain), so that deep nesting, a huge number or a lone
surrogate is a 422 saying where, not a 500 from the parser or the database."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from crmflow.services.context import Context
from tests.acceptance.test_inbound_webhooks import _flow, _start

BODIES = {
    "deep": (b'{"record_id": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested more than 64"),
    "huge number": (b'{"record_id": 1' + b"0" * 100_000 + b"}", "a number of 100,001 characters"),
    "surrogate": (b'{"match": {"email": "\\ud800"}}', "surrogate"),
    "nul": (b'{"match": {"email": "a\\u0000b"}}', "NUL"),
    "not utf-8": (b'{"match": {"email": "\xff"}}', "not UTF-8"),
}


@pytest.mark.parametrize("content_type", ["application/json", "text/plain", None])
@pytest.mark.parametrize("case", list(BODIES))
def test_a_hostile_webhook_body_is_a_422_saying_what(
    ctx: Context, client: TestClient, as_admin: dict[str, str], case: str, content_type: str | None
) -> None:
    _start(client, as_admin, _flow("open", "crm-call", secret=None), "open")
    body, says = BODIES[case]
    headers = dict(as_admin)
    if content_type:
        headers["Content-Type"] = content_type
    answer = client.post("/hooks/crm-call", content=body, headers=headers)
    assert answer.status_code == 422, answer.text
    assert says.lower() in answer.text.lower()
