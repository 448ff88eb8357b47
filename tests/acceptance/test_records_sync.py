"""An existing CRM keeps crmflow's records in sync (issue 10): upserting imports from the API and
the command line, one record by external id, and batches of changes (signed or with a token)."""

from __future__ import annotations

import base64
import json
from datetime import datetime, timedelta
from pathlib import Path

from fastapi.testclient import TestClient

from crmflow.services import users
from crmflow.services.context import Actor, Context
from crmflow.services.webhook_signatures import sign
from tests.acceptance.conftest import Run, auth_headers

CSV = b"external_id,first_name,last_name\ncrm-1,Ana,Pop\ncrm-2,Ion,Rusu\n"


def test_the_api_import_upserts_by_external_id(
    client: TestClient, as_admin: dict[str, str]
) -> None:
    def upload(body: bytes) -> dict[str, object]:
        answer = client.post(
            "/api/records/contact/import?upsert_by=external_id",
            files={"file": ("contacts.csv", body)},
            headers=as_admin,
        )
        assert answer.status_code == 200, answer.text
        report: dict[str, object] = answer.json()
        return report

    assert upload(CSV)["imported"] == 2
    again = upload(CSV.replace(b"Rusu", b"Rusu-Dinu"))
    assert (again["upsert_by"], again["imported"], again["updated"], again["unchanged"]) == (
        "external_id",
        0,
        1,
        1,
    )
    listed = client.get("/api/records/contact", headers=as_admin).json()["items"]
    assert [r["data"]["last_name"] for r in listed] == ["Pop", "Rusu-Dinu"]
    refused = client.post(
        "/api/records/contact/import?upsert_by=nickname",
        files={"file": ("contacts.csv", CSV)},
        headers=as_admin,
    )
    assert refused.status_code == 422 and "nickname" in refused.text


def test_the_cli_import_upserts_by_external_id(crmflow: Run, tmp_path: Path) -> None:
    crmflow("db", "upgrade")
    file = tmp_path / "contacts.csv"
    file.write_bytes(CSV)
    crmflow("records", "import", "contact", str(file), "--upsert-by", "external_id")
    file.write_bytes(CSV.replace(b"Pop", b"Popescu"))
    done = crmflow("records", "import", "contact", str(file), "--upsert-by", "external_id")
    assert '"updated": 1' in done.stderr and '"imported": 0' in done.stderr
    exported = crmflow("records", "export", "contact").stdout.splitlines()
    assert sorted(json.loads(line)["last_name"] for line in exported) == ["Popescu", "Rusu"]


def test_put_by_external_id_creates_then_updates_with_etags(
    client: TestClient, as_admin: dict[str, str]
) -> None:
    url = "/api/records/contact/external/crm-42"
    assert client.get(url, headers=as_admin).status_code == 404
    created = client.put(url, json={"data": {"last_name": "Pop"}}, headers=as_admin)
    assert created.status_code == 201, created.text
    assert created.json()["external_id"] == "crm-42" and created.headers["ETag"] == '"1"'

    stale = {**as_admin, "If-Match": '"7"'}
    refused = client.put(url, json={"data": {"first_name": "Ana"}}, headers=stale)
    assert refused.status_code == 412
    fresh = {**as_admin, "If-Match": '"1"'}
    updated = client.put(url, json={"data": {"first_name": "Ana"}}, headers=fresh)
    assert updated.status_code == 200 and updated.headers["ETag"] == '"2"'
    assert updated.json()["data"] == {"first_name": "Ana", "last_name": "Pop"}
    read = client.get(url, headers=as_admin)
    assert read.json() == updated.json()
    assert client.get(url, headers={**as_admin, "If-None-Match": '"2"'}).status_code == 304
    by_id = client.get(f"/api/records/contact/{created.json()['id']}", headers=as_admin)
    assert by_id.json()["external_id"] == "crm-42"


CHANGES = (
    b'{"op": "upsert", "external_id": "a", "data": {"last_name": "Ana"}}\n'
    b'{"op": "upsert", "external_id": "b", "data": {"last_name": "B", "email": "nope"}}\n'
    b'{"op": "delete", "external_id": "zz"}\n'
)
NDJSON = {"Content-Type": "application/x-ndjson"}


def test_a_batch_of_changes_with_a_manager_token_reports_bad_lines(
    ctx: Context, client: TestClient, admin: Actor, manager: Actor, member: Actor
) -> None:
    url = "/api/records/contact/changes"
    as_member = {**auth_headers(ctx, admin, member.username), **NDJSON}
    assert client.post(url, content=CHANGES, headers=as_member).status_code == 403
    assert client.post(url, content=CHANGES, headers=NDJSON).status_code == 401
    as_manager = {**auth_headers(ctx, admin, manager.username), **NDJSON}
    answer = client.post(url, content=CHANGES, headers=as_manager)
    assert answer.status_code == 200, answer.text
    report = answer.json()
    assert (report["created"], report["absent"], report["rejected"]) == (1, 1, 1)
    assert report["errors"][0]["line"] == 2
    assert report["errors"][0]["problems"][0]["path"] == "email"


def _signed(secret: str, body: bytes, at: datetime) -> dict[str, str]:
    return {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": sign(secret, "msg_1", at, body),
        **NDJSON,
    }


def test_a_signed_batch_needs_no_token(ctx: Context, client: TestClient) -> None:
    url = "/api/records/contact/changes"
    secret = "whsec_" + base64.b64encode(b"a sync secret of 32 bytes.......").decode()
    headers = _signed(secret, CHANGES, ctx.now())
    unset = client.post(url, content=CHANGES, headers=headers)
    assert unset.status_code == 401 and "CRMFLOW_SYNC_SECRET" in unset.text

    ctx.settings = ctx.settings.model_copy(update={"sync_secret": secret})
    answer = client.post(url, content=CHANGES, headers=headers)
    assert answer.status_code == 200, answer.text
    assert answer.json()["created"] == 1
    record = client.get("/api/records/contact/external/a", headers=headers | _token(ctx))
    assert record.json()["owner"] == "system"

    tampered = client.post(url, content=CHANGES.replace(b"Ana", b"Eve"), headers=headers)
    assert tampered.status_code == 401 and "does not match" in tampered.text
    old = _signed(secret, CHANGES, ctx.now() - timedelta(hours=1))
    assert client.post(url, content=CHANGES, headers=old).status_code == 401


def _token(ctx: Context) -> dict[str, str]:
    system = users.ensure_system_user(ctx)
    return auth_headers(ctx, system, system.username)


def test_the_cli_syncs_a_batch_and_reports_bad_lines(crmflow: Run, tmp_path: Path) -> None:
    crmflow("db", "upgrade")
    file = tmp_path / "changes.jsonl"
    file.write_bytes(CHANGES)
    done = crmflow("records", "sync", "contact", str(file), check_exit=1)
    assert f"{file}:2: email:" in done.stdout
    assert '"created": 1' in done.stderr and '"absent": 1' in done.stderr
    file.write_bytes(b'{"op": "delete", "external_id": "a"}\n')
    deleted = crmflow("records", "sync", "contact", str(file))
    assert '"deleted": 1' in deleted.stderr
    assert crmflow("records", "export", "contact").stdout == ""


def test_hostile_lines_are_reported_by_number_and_the_rest_applied(
    client: TestClient, as_admin: dict[str, str]
) -> None:
    deep = b'{"external_id": "d", "data": {"last_name": ' + b"[" * 100_000 + b"]" * 100_000 + b"}}"
    long_number = b'{"external_id": "n", "data": {"last_name": "N", "total_donations": ' + (
        b"9" * 5000 + b"}}"
    )
    nul = b'{"external_id": "z", "data": {"last_name": "a\\u0000b"}}'
    nul_id = b'{"op": "upsert", "external_id": "x\\u0000y", "data": {"last_name": "N"}}'
    good = b'{"external_id": "ok", "data": {"last_name": "Fine"}}'
    body = b"\n".join([deep, long_number, nul, b"\xff\xfe", nul_id, good]) + b"\n"
    answer = client.post(
        "/api/records/contact/changes", content=body, headers={**as_admin, **NDJSON}
    )
    assert answer.status_code == 200, answer.text
    report = answer.json()
    assert [e["line"] for e in report["errors"]] == [1, 2, 3, 4, 5]
    assert report["errors"][4]["problems"][0]["path"] == "external_id"
    assert "NUL character" in report["errors"][4]["problems"][0]["message"]
    assert report["created"] == 1
