"""Inbound webhooks over HTTP: `POST /hooks/<key>` starts flows for a record, signed the Standard
Webhooks way or with an API token, on SQLite and PostgreSQL (FastAPI's TestClient)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import uuid
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from crmflow.api.app import create_app
from crmflow.services import webhooks_in
from crmflow.services.context import Actor, Context
from tests.acceptance.conftest import auth_headers
from tests.conftest import FrozenClock, make_user

SECRET = "whsec_" + base64.b64encode(b"a secret of thirty-two bytes!!!!").decode()


def _flow(
    key: str,
    hook: str,
    *,
    secret: str | None = SECRET,
    extra: str = "",
    record_type: str = "contact",
) -> str:
    secret_line = f"\n    secret: {secret}" if secret else ""
    return f"""\
schema_version: 1
key: {key}
name: {key}
record_type: {record_type}
reentry: {{mode: always}}
{extra}triggers:
  - type: webhook
    key: {hook}{secret_line}
steps:
  - key: note
    actions:
      - type: history
        message: "Hooked {{{{ record.first_name }}}}"
  - key: later
    timing: {{type: after, amount: 1, unit: days}}
    actions:
      - type: history
        message: "A day later"
"""


def _start(client: TestClient, as_admin: dict[str, str], text: str, key: str) -> None:
    yaml = {**as_admin, "Content-Type": "application/yaml"}
    created = client.post("/api/flows", content=text, headers=yaml)
    assert created.status_code == 201, created.text
    started = client.post(f"/api/flows/{key}/start", headers=as_admin)
    assert started.status_code == 200, started.text


def _contact(client: TestClient, as_admin: dict[str, str], name: str = "Ana", **data: Any) -> int:
    body = {"first_name": name, "last_name": "Pop", "email": f"{name.lower()}@example.org", **data}
    created = client.post("/api/records/contact", json={"data": body}, headers=as_admin)
    assert created.status_code == 201, created.text
    return int(created.json()["id"])


def _signed(
    ctx: Context,
    body: dict[str, Any],
    *,
    secret: str = SECRET,
    age: timedelta = timedelta(0),
    msg_id: str | None = None,
) -> tuple[bytes, dict[str, str]]:
    """The body and headers a Standard Webhooks sender sends, computed here by hand (as the
    docs show), not by crmflow's own code; each call its own webhook-id unless one is given (a
    retry keeps its id)."""
    raw = json.dumps(body).encode()
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    timestamp = str(int((ctx.now() - age).timestamp()))
    key = (
        base64.b64decode(secret.removeprefix("whsec_"))
        if secret.startswith("whsec_")
        else (secret.encode())
    )
    digest = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + raw, hashlib.sha256).digest()
    headers = {
        "Content-Type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": timestamp,
        "webhook-signature": "v1," + base64.b64encode(digest).decode(),
    }
    return raw, headers


def test_a_signed_call_enters_the_record_and_runs_its_first_step(
    ctx: Context, client: TestClient, as_admin: dict[str, str]
) -> None:
    _start(client, as_admin, _flow("onboard", "new-signup"), "onboard")
    rid = _contact(client, as_admin)
    raw, headers = _signed(ctx, {"record_id": rid})
    answer = client.post("/hooks/new-signup", content=raw, headers=headers)
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert result["entered"] == 1
    [flow] = result["flows"]
    assert flow["flow"] == "onboard" and flow["entered"] is True
    assert flow["run"]["step"] == "later" and flow["run"]["status"] == "active"
    runs = client.get(result["runs"], headers=as_admin).json()
    [run] = runs["flows"]
    assert run["flow"] == "onboard"
    assert [(r["step"], r["status"]) for r in run["step_runs"]] == [("note", "done")]
    assert any("Hooked Ana" in h["message"] for h in runs["history"])
    # crmflow's own helper signs the same way as a sender does by hand (another call: its id).
    again = {
        **headers,
        "webhook-id": "msg_again",
        "webhook-signature": webhooks_in.sign(SECRET, "msg_again", ctx.now(), raw),
    }
    second = client.post("/hooks/new-signup", content=raw, headers=again).json()
    assert second["entered"] == 1 and "replayed" not in second


def test_a_raw_secret_and_a_match_on_a_field_name_the_record(
    ctx: Context, client: TestClient, as_admin: dict[str, str]
) -> None:
    _start(client, as_admin, _flow("raw", "by-email", secret="not-base64 at all"), "raw")
    rid = _contact(client, as_admin, "Ioana")
    _contact(client, as_admin, "Mihai")
    body = {"record_type": "contact", "match": {"email": "ioana@example.org"}}
    raw, headers = _signed(ctx, body, secret="not-base64 at all")
    answer = client.post("/hooks/by-email", content=raw, headers=headers)
    assert answer.status_code == 200, answer.text
    assert answer.json()["record_id"] == rid and answer.json()["entered"] == 1

    raw, headers = _signed(
        ctx, {"match": {"email": "nobody@example.org"}}, secret="not-base64 at all"
    )
    nobody = client.post("/hooks/by-email", content=raw, headers=headers)
    assert nobody.status_code == 404
    assert "no contact record has email = 'nobody@example.org'" in nobody.json()["message"]

    raw, headers = _signed(ctx, {"match": {"last_name": "Pop"}}, secret="not-base64 at all")
    several = client.post("/hooks/by-email", content=raw, headers=headers)
    assert several.status_code == 409
    assert "more than one contact record" in several.json()["message"]

    raw, headers = _signed(ctx, {"match": {"emial": "x"}}, secret="not-base64 at all")
    unknown = client.post("/hooks/by-email", content=raw, headers=headers)
    assert unknown.status_code == 422
    assert "emial" in json.dumps(unknown.json()["problems"])


def test_a_wrong_or_missing_signature_is_refused_with_how_to_sign(
    ctx: Context, client: TestClient, as_admin: dict[str, str]
) -> None:
    _start(client, as_admin, _flow("onboard", "new-signup"), "onboard")
    rid = _contact(client, as_admin)
    other = "whsec_" + base64.b64encode(b"another secret, another sender").decode()
    raw, headers = _signed(ctx, {"record_id": rid}, secret=other)
    wrong = client.post("/hooks/new-signup", content=raw, headers=headers)
    assert wrong.status_code == 401
    assert "matches no secret" in wrong.json()["message"]
    assert "HMAC-SHA256" in wrong.json()["message"]

    raw, headers = _signed(ctx, {"record_id": rid})
    tampered = client.post("/hooks/new-signup", content=raw.replace(b"}", b" }"), headers=headers)
    assert tampered.status_code == 401

    unsigned = client.post("/hooks/new-signup", json={"record_id": rid})
    assert unsigned.status_code == 401
    message = unsigned.json()["message"]
    assert "webhook-id, webhook-timestamp, webhook-signature" in message
    assert "HMAC-SHA256" in message
    # A token does not stand in for the signature of a hook that has a secret.
    with_token = client.post("/hooks/new-signup", json={"record_id": rid}, headers=as_admin)
    assert with_token.status_code == 401

    garbled = {**headers, "webhook-signature": "v1 no comma"}
    assert (
        "no v1 signature"
        in client.post("/hooks/new-signup", content=raw, headers=garbled).json()["message"]
    )
    runs = client.get(f"/api/records/contact/{rid}/runs", headers=as_admin).json()
    assert runs["flows"] == []


def test_a_stale_or_future_timestamp_is_refused(
    ctx: Context, client: TestClient, as_admin: dict[str, str], clock: FrozenClock
) -> None:
    _start(client, as_admin, _flow("onboard", "new-signup"), "onboard")
    rid = _contact(client, as_admin)
    raw, headers = _signed(ctx, {"record_id": rid}, age=timedelta(minutes=6))
    stale = client.post("/hooks/new-signup", content=raw, headers=headers)
    assert stale.status_code == 401
    assert "6 minutes old" in stale.json()["message"]
    raw, headers = _signed(ctx, {"record_id": rid}, age=-timedelta(minutes=10))
    future = client.post("/hooks/new-signup", content=raw, headers=headers)
    assert future.status_code == 401
    assert "in the future" in future.json()["message"]
    # Within the tolerance the same call is taken (a sender's clock a little behind).
    raw, headers = _signed(ctx, {"record_id": rid}, age=timedelta(minutes=4))
    assert client.post("/hooks/new-signup", content=raw, headers=headers).status_code == 200


def test_an_unsigned_hook_needs_an_api_token_of_a_user_who_sees_the_flow(
    ctx: Context, client: TestClient, as_admin: dict[str, str], admin: Actor
) -> None:
    _start(client, as_admin, _flow("open", "crm-call", secret=None), "open")
    _start(
        client,
        as_admin,
        _flow(
            "hidden", "secret-call", secret=None, extra="visibility: private\nmembers: [system]\n"
        ),
        "hidden",
    )
    rid = _contact(client, as_admin)
    anonymous = client.post("/hooks/crm-call", json={"record_id": rid})
    assert anonymous.status_code == 401
    assert "Authorization: Bearer" in anonymous.json()["message"]
    bad = client.post(
        "/hooks/crm-call", json={"record_id": rid}, headers={"Authorization": "Bearer crm_nope"}
    )
    assert bad.status_code == 401

    make_user(ctx, "andrei", "member")
    as_andrei = auth_headers(ctx, admin, "andrei")
    answer = client.post("/hooks/crm-call", json={"record_id": rid}, headers=as_andrei)
    assert answer.status_code == 200, answer.text
    assert answer.json()["flows"][0]["entered"] is True
    # A private flow is not there for a user who is not its member: the same 404 as no hook.
    hidden = client.post("/hooks/secret-call", json={"record_id": rid}, headers=as_andrei)
    unknown = client.post("/hooks/no-such-hook", json={"record_id": rid}, headers=as_andrei)
    assert hidden.status_code == unknown.status_code == 404
    assert "hidden" not in hidden.text
    member = client.post("/hooks/secret-call", json={"record_id": rid}, headers=as_admin)
    assert member.json()["flows"][0]["flow"] == "hidden"


def test_an_unknown_key_or_record_is_404_and_a_bad_body_422(
    ctx: Context, client: TestClient, as_admin: dict[str, str]
) -> None:
    unknown = client.post("/hooks/nothing-here", json={"record_id": 1})
    assert unknown.status_code == 404
    assert (
        "no started flow has a webhook trigger with key 'nothing-here'"
        in (unknown.json()["message"])
    )
    _start(client, as_admin, _flow("open", "crm-call", secret=None), "open")
    missing = client.post("/hooks/crm-call", json={"record_id": 999999}, headers=as_admin)
    assert missing.status_code == 404
    assert "no record with id 999999" in missing.json()["message"]
    nameless = client.post("/hooks/crm-call", json={"id": 3}, headers=as_admin)
    assert nameless.status_code == 422
    assert nameless.json()["problems"][0]["path"] == "record_id"
    not_json = client.post("/hooks/crm-call", content=b"record=3", headers=as_admin)
    assert not_json.status_code == 422
    for huge in (2**63, -(2**63) - 1, 0):
        out_of_range = client.post("/hooks/crm-call", json={"record_id": huge}, headers=as_admin)
        assert out_of_range.status_code == 422, out_of_range.text
        problem = out_of_range.json()["problems"][0]
        assert problem["path"] == "record_id"
        assert "out of range" in problem["message"]


def test_refusals_say_why_paused_entry_condition_and_reentry(
    ctx: Context, client: TestClient, as_admin: dict[str, str]
) -> None:
    condition = "entry_condition: record.first_name == 'Ana'\n"
    _start(client, as_admin, _flow("picky", "signup", extra=condition), "picky")
    _start(client, as_admin, _flow("sleepy", "signup"), "sleepy")
    assert client.post("/api/flows/sleepy/pause", headers=as_admin).status_code == 200
    rid = _contact(client, as_admin, "Elena")
    raw, headers = _signed(ctx, {"record_id": rid})
    answer = client.post("/hooks/signup", content=raw, headers=headers)
    assert answer.status_code == 200, answer.text
    by_flow = {f["flow"]: f for f in answer.json()["flows"]}
    assert answer.json()["entered"] == 0
    assert by_flow["picky"]["entered"] is False
    assert by_flow["picky"]["reason"] == "entry condition false: record.first_name == 'Ana'"
    assert by_flow["sleepy"]["reason"] == "flow paused: no record enters until it is resumed"
    # The reasons are kept where people look for them: the not-entered list of each flow.
    why = client.get("/api/flows/picky/not-entered", headers=as_admin).json()["items"]
    assert [(d["trigger"], d["reason"]) for d in why] == [
        ("webhook", "entry condition false: record.first_name == 'Ana'")
    ]

    # A record that may enter does; re-entry 'never' keeps it out the second time.
    never = _flow("once", "welcome").replace("{mode: always}", "{mode: never}")
    _start(client, as_admin, never, "once")
    ana = _contact(client, as_admin, "Ana")
    raw, headers = _signed(ctx, {"record_id": ana})
    assert client.post("/hooks/welcome", content=raw, headers=headers).json()["entered"] == 1
    raw, headers = _signed(ctx, {"record_id": ana})  # another call, not a replay
    second = client.post("/hooks/welcome", content=raw, headers=headers).json()
    assert second["flows"][0]["reason"].startswith("re-entry: never")


def _hooked(client: TestClient, as_admin: dict[str, str], rid: int) -> int:
    """How many times a hook's flow started the record (its first step's history)."""
    runs = client.get(f"/api/records/contact/{rid}/runs", headers=as_admin).json()
    return sum("Hooked" in h["message"] for h in runs["history"])


def test_a_signed_call_sent_again_is_answered_as_the_first_and_starts_nothing(
    ctx: Context, client: TestClient, as_admin: dict[str, str], clock: FrozenClock
) -> None:
    # Re-entry 'always': only the webhook-id keeps a record from entering twice.
    _start(client, as_admin, _flow("onboard", "new-signup"), "onboard")
    rid = _contact(client, as_admin)
    raw, headers = _signed(ctx, {"record_id": rid}, msg_id="msg_retried")
    first = client.post("/hooks/new-signup", content=raw, headers=headers)
    assert first.status_code == 200, first.text
    assert first.json()["entered"] == 1 and "replayed" not in first.json()

    # The same call replayed as it is, within its signature's 5 minutes.
    clock.advance(minutes=1)
    replayed = client.post("/hooks/new-signup", content=raw, headers=headers)
    assert replayed.status_code == 200, replayed.text
    answer = replayed.json()
    assert answer["replayed"] is True
    assert "already received (webhook-id msg_retried" in answer["message"]
    assert "nothing was started again" in answer["message"]
    assert {k: v for k, v in answer.items() if k not in ("replayed", "message")} == first.json()

    # A sender's retry half an hour later: same id and body, fresh timestamp and signature;
    # and through another server on the same database (a restart, or another process).
    clock.advance(minutes=30)
    raw, headers = _signed(ctx, {"record_id": rid}, msg_id="msg_retried")
    other = Context.from_settings(ctx.settings)
    other.clock = clock
    try:
        with TestClient(create_app(other)) as other_client:
            retried = other_client.post("/hooks/new-signup", content=raw, headers=headers)
    finally:
        other.engine.dispose()
    assert retried.status_code == 200, retried.text
    assert retried.json()["replayed"] is True
    assert retried.json()["flows"] == first.json()["flows"]
    assert _hooked(client, as_admin, rid) == 1

    # The same id signed but with the wrong secret is refused as any bad signature: only a
    # sender holding the secret learns that an id was taken.
    other_secret = "whsec_" + base64.b64encode(b"another secret, another sender").decode()
    raw, headers = _signed(ctx, {"record_id": rid}, secret=other_secret, msg_id="msg_retried")
    assert client.post("/hooks/new-signup", content=raw, headers=headers).status_code == 401

    # The same id with another body is a sender reusing ids: a 409, not a silent drop.
    raw, headers = _signed(ctx, {"record_id": rid, "note": "x"}, msg_id="msg_retried")
    reused = client.post("/hooks/new-signup", content=raw, headers=headers)
    assert reused.status_code == 409
    assert "msg_retried was already taken on hook 'new-signup'" in reused.json()["message"]
    assert "for a different body" in reused.json()["message"]

    # Another call (its own id) with the same body starts the record again: re-entry allows it.
    raw, headers = _signed(ctx, {"record_id": rid})
    again = client.post("/hooks/new-signup", content=raw, headers=headers)
    assert again.json()["entered"] == 1 and "replayed" not in again.json()
    assert _hooked(client, as_admin, rid) == 2

    # Ids are remembered RECEIPT_RETENTION; later calls forget the older ones.
    clock.advance(seconds=webhooks_in.RECEIPT_RETENTION.total_seconds())
    raw, headers = _signed(ctx, {"record_id": rid})
    assert client.post("/hooks/new-signup", content=raw, headers=headers).json()["entered"] == 1
    raw, headers = _signed(ctx, {"record_id": rid}, msg_id="msg_retried")
    forgotten = client.post("/hooks/new-signup", content=raw, headers=headers).json()
    assert forgotten["entered"] == 1 and "replayed" not in forgotten
    assert _hooked(client, as_admin, rid) == 4


def test_two_senders_on_one_hook_key_each_have_their_own_webhook_ids(
    ctx: Context, client: TestClient, as_admin: dict[str, str]
) -> None:
    """Flows with their own secrets may share a hook key; their senders pick ids without
    knowing of each other, so the same id from both is two calls, and neither sees the other's
    answer."""
    other = "whsec_" + base64.b64encode(b"another secret, thirty-two bytes").decode()
    _start(client, as_admin, _flow("from-shop", "shared"), "from-shop")
    _start(client, as_admin, _flow("from-forms", "shared", secret=other), "from-forms")
    rid = _contact(client, as_admin)

    raw, headers = _signed(ctx, {"record_id": rid}, msg_id="evt_1")
    shop = client.post("/hooks/shared", content=raw, headers=headers)
    assert shop.status_code == 200, shop.text
    assert [f["flow"] for f in shop.json()["flows"]] == ["from-shop"]

    # The second sender's own evt_1, with another body than the first sender's: taken.
    forms_body = {"record_id": rid, "source": "forms"}
    raw, headers = _signed(ctx, forms_body, secret=other, msg_id="evt_1")
    forms = client.post("/hooks/shared", content=raw, headers=headers)
    assert forms.status_code == 200, forms.text
    assert "replayed" not in forms.json()
    assert [(f["flow"], f["entered"]) for f in forms.json()["flows"]] == [("from-forms", True)]
    assert _hooked(client, as_admin, rid) == 2

    # Each sender's retry is answered as its own first call, and nothing starts again.
    raw, headers = _signed(ctx, forms_body, secret=other, msg_id="evt_1")
    again = client.post("/hooks/shared", content=raw, headers=headers)
    assert again.json()["replayed"] is True
    assert [f["flow"] for f in again.json()["flows"]] == ["from-forms"]
    raw, headers = _signed(ctx, {"record_id": rid}, msg_id="evt_1")
    assert [
        f["flow"]
        for f in client.post("/hooks/shared", content=raw, headers=headers).json()["flows"]
    ] == ["from-shop"]
    # A sender that reuses its own id for another body is still told so.
    raw, headers = _signed(ctx, {"record_id": rid}, secret=other, msg_id="evt_1")
    assert client.post("/hooks/shared", content=raw, headers=headers).status_code == 409
    assert _hooked(client, as_admin, rid) == 2


def test_a_signed_call_that_failed_can_be_sent_again_with_its_webhook_id(
    ctx: Context, client: TestClient, as_admin: dict[str, str]
) -> None:
    _start(client, as_admin, _flow("onboard", "new-signup"), "onboard")
    rid = _contact(client, as_admin)
    raw, headers = _signed(ctx, {"id": rid}, msg_id="msg_fixed")
    nameless = client.post("/hooks/new-signup", content=raw, headers=headers)
    assert nameless.status_code == 422
    raw, headers = _signed(ctx, {"record_id": 999999}, msg_id="msg_fixed")
    assert client.post("/hooks/new-signup", content=raw, headers=headers).status_code == 404
    # Fixed by the sender, sent again with the same id: taken (a failed call left no id).
    raw, headers = _signed(ctx, {"record_id": rid}, msg_id="msg_fixed")
    fixed = client.post("/hooks/new-signup", content=raw, headers=headers)
    assert fixed.status_code == 200, fixed.text
    assert fixed.json()["entered"] == 1 and "replayed" not in fixed.json()
    assert client.post("/hooks/new-signup", content=raw, headers=headers).json()["replayed"]
    assert _hooked(client, as_admin, rid) == 1

    too_long = {**headers, "webhook-id": "m" * 256}
    too_long["webhook-signature"] = webhooks_in.sign(SECRET, "m" * 256, ctx.now(), raw)
    refused = client.post("/hooks/new-signup", content=raw, headers=too_long)
    assert refused.status_code == 422
    assert refused.json()["problems"][0]["path"] == "webhook-id"


def test_two_deliveries_of_one_call_at_once_start_the_record_once(
    ctx: Context, client: TestClient, as_admin: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both pass the first look for the id before either is taken: the id written in the
    transaction of the starts decides (the second waits for the first to end)."""
    _start(client, as_admin, _flow("onboard", "new-signup"), "onboard")
    rid = _contact(client, as_admin)
    raw, headers = _signed(ctx, {"record_id": rid})
    signature = webhooks_in.Signature(
        headers["webhook-id"], headers["webhook-timestamp"], headers["webhook-signature"]
    )
    both_read = threading.Barrier(2, timeout=30)
    named = webhooks_in._record_named

    def in_step(*args: Any, **kwargs: Any) -> tuple[int, str]:
        both_read.wait()
        return named(*args, **kwargs)

    monkeypatch.setattr(webhooks_in, "_record_named", in_step)
    answers: list[webhooks_in.HookResult | webhooks_in.HookReplay] = []

    def deliver() -> None:
        answers.append(
            webhooks_in.receive_hook(ctx, "new-signup", raw, signature=signature, token=None)
        )

    threads = [threading.Thread(target=deliver) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(type(a).__name__ for a in answers) == ["HookReplay", "HookResult"]
    assert _hooked(client, as_admin, rid) == 1


def test_a_call_with_an_api_token_is_not_deduplicated_by_its_webhook_id(
    ctx: Context, client: TestClient, as_admin: dict[str, str]
) -> None:
    """Nothing binds the header to an unsigned call: such calls are governed, like a manual
    start, by the flow's re-entry policy ('always' here)."""
    _start(client, as_admin, _flow("open", "crm-call", secret=None), "open")
    rid = _contact(client, as_admin)
    headers = {**as_admin, "webhook-id": "msg_same"}
    for _ in range(2):
        answer = client.post("/hooks/crm-call", json={"record_id": rid}, headers=headers)
        assert answer.json()["entered"] == 1 and "replayed" not in answer.json()
    assert _hooked(client, as_admin, rid) == 2
