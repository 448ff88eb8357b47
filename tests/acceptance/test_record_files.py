"""A record's files as a user handles them: listed, uploaded, downloaded and deleted through the
API (`GET /api/records/{id}/files`, `PUT/GET/DELETE /api/records/{id}/files/{field}`, raw body
or multipart) and the command line (`crmflow records files/attach/file/detach`), uploads refused
with the limit and how to change it, and a flow's email that carries the record's PDF to a real
SMTP server."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

from fastapi.testclient import TestClient

from crmflow.api.app import create_app
from crmflow.engine.recordtypes import BUILTIN_TYPES
from crmflow.services import record_types, records
from crmflow.services.context import Actor, Context
from tests.acceptance.conftest import Run, auth_headers
from tests.conftest import make_user
from tests.integration.test_record_files import PDF, add_file_field


def test_a_member_uploads_downloads_and_deletes_a_records_file_through_the_api(
    ctx: Context, admin: Actor, client: TestClient
) -> None:
    add_file_field(ctx, admin, "contact", "contract")
    rid = records.create_record(ctx, admin, "contact", {"last_name": "Pop"}).id
    make_user(ctx, "andrei", "member")
    member = auth_headers(ctx, admin, "andrei")
    raw = {**member, "Content-Type": "application/octet-stream"}
    url = f"/api/records/{rid}/files/contract"

    put = client.put(f"{url}?filename=Contract%202026.pdf", content=PDF, headers=raw)
    assert put.status_code == 201, put.text
    assert put.json()["filename"] == "Contract 2026.pdf"
    assert put.json()["content_type"] == "application/pdf"
    assert put.json()["size"] == len(PDF)
    assert put.json()["replaced"] is False

    signed = b"%PDF-1.7\nsigned\n"
    form = client.put(url, files={"file": ("signed.pdf", signed, "text/plain")}, headers=member)
    assert form.status_code == 200, form.text
    assert form.json()["replaced"] is True
    assert form.json()["content_type"] == "application/pdf"  # the bytes', not the client's

    got = client.get(url, headers=member)
    assert got.status_code == 200
    assert got.content == signed
    assert got.headers["content-type"] == "application/pdf"
    assert 'filename="signed.pdf"' in got.headers["content-disposition"]
    assert got.headers["x-content-type-options"] == "nosniff"

    assert client.delete(url, headers=member).status_code == 204
    gone = client.get(url, headers=member)
    assert gone.status_code == 404
    assert f"crmflow records attach {rid} contract PATH" in gone.json()["message"]
    assert client.get(url).status_code == 401


def test_a_records_files_are_listed_for_whoever_may_read_the_record(
    ctx: Context, admin: Actor, client: TestClient
) -> None:
    document = BUILTIN_TYPES["contact"].as_dict()
    document["fields"] += [{"key": "contract", "type": "file"}, {"key": "photo", "type": "file"}]
    record_types.update_record_type(ctx, admin, "contact", document)
    rid = records.create_record(ctx, admin, "contact", {"last_name": "Pop"}).id
    make_user(ctx, "andrei", "member")
    member = auth_headers(ctx, admin, "andrei")
    url = f"/api/records/{rid}/files"
    empty = client.get(url, headers=member)
    assert empty.status_code == 200, empty.text
    assert empty.json() == {"record_id": rid, "files": []}

    png = b"\x89PNG\r\n\x1a\n" + bytes(100)
    raw = {**member, "Content-Type": "application/octet-stream"}
    assert client.put(f"{url}/photo?filename=me.png", content=png, headers=raw).is_success
    assert client.put(f"{url}/contract?filename=c.pdf", content=PDF, headers=raw).is_success
    listed = client.get(url, headers=member)
    assert listed.status_code == 200
    files = listed.json()["files"]
    assert [(f["field"], f["filename"], f["content_type"], f["size"]) for f in files] == [
        ("contract", "c.pdf", "application/pdf", len(PDF)),
        ("photo", "me.png", "image/png", len(png)),
    ]
    assert files[0]["sha256"] == hashlib.sha256(PDF).hexdigest()
    assert files[0]["created_at"] == ctx.now().isoformat()
    assert "content" not in files[0]  # the bytes are downloaded one by one

    assert client.get(url).status_code == 401
    missing = client.get("/api/records/999/files", headers=member)
    assert missing.status_code == 404
    assert "no record with id 999" in missing.json()["message"]
    assert client.get("/api/records/nope/files", headers=member).status_code == 422
    # The record itself is still read at its own path.
    assert client.get(f"/api/records/contact/{rid}", headers=member).status_code == 200


def test_refused_uploads_say_why_and_how_to_change_it(
    ctx: Context, admin: Actor, as_admin: dict[str, str]
) -> None:
    add_file_field(ctx, admin, "contact", "contract")
    rid = records.create_record(ctx, admin, "contact", {"last_name": "Pop"}).id
    url = f"/api/records/{rid}/files/contract"
    raw = {**as_admin, "Content-Type": "application/octet-stream"}
    small = dataclasses.replace(
        ctx, settings=ctx.settings.model_copy(update={"max_file_bytes": 1000})
    )
    with TestClient(create_app(small)) as client:
        too_large = client.put(f"{url}?filename=c.pdf", content=PDF, headers=raw)
        assert too_large.status_code == 413
        assert "CRMFLOW_MAX_FILE_BYTES" in too_large.json()["message"]

        program = client.put(f"{url}?filename=quote.pdf", content=b"MZ\x90\0" * 8, headers=raw)
        assert program.status_code == 422
        [problem] = program.json()["problems"]
        assert problem["path"] == "content_type"
        assert "application/octet-stream" in problem["message"]
        assert "CRMFLOW_FILE_TYPES" in problem["hint"]

        nameless = client.put(url, content=b"%PDF-1.4\n", headers=raw)
        assert nameless.status_code == 422
        assert nameless.json()["problems"][0]["path"] == "filename"

        not_a_file = client.put(
            f"/api/records/{rid}/files/email?filename=c.pdf", content=PDF[:100], headers=raw
        )
        assert not_a_file.status_code == 422
        assert not_a_file.json()["problems"][0]["hint"] == "its file fields: contract"

        missing = client.put(
            "/api/records/999/files/contract?filename=c.pdf", content=PDF[:100], headers=raw
        )
        assert missing.status_code == 404
        no_part = client.put(url, files={"other": ("c.pdf", PDF[:100])}, headers=as_admin)
        assert no_part.status_code == 422
        assert "no file part named `file`" in no_part.text


def test_the_command_line_attaches_writes_out_and_refuses_a_file(
    crmflow: Run, cli_env: dict[str, str], tmp_path: Path
) -> None:
    crmflow("db", "upgrade")
    document = BUILTIN_TYPES["contact"].as_dict()
    document.pop("builtin")
    document["fields"].append({"key": "contract", "type": "file"})
    (tmp_path / "contact.json").write_text(json.dumps(document))
    crmflow("types", "load", "contact.json")
    created = crmflow("records", "create", "contact", "--data", '{"last_name": "Pop"}')
    rid = str(json.loads(created.stdout)["id"])
    (tmp_path / "contract.pdf").write_bytes(PDF)

    attached = crmflow("records", "attach", rid, "contract", "contract.pdf")
    shown = json.loads(attached.stdout)
    assert (shown["filename"], shown["content_type"], shown["size"]) == (
        "contract.pdf",
        "application/pdf",
        len(PDF),
    )
    table = crmflow("records", "files", rid).stdout
    assert "contract.pdf" in table
    assert hashlib.sha256(PDF).hexdigest() in table
    assert f"{len(PDF):,}" in table
    [listed] = json.loads(crmflow("records", "files", rid, "--json").stdout)
    assert (listed["field"], listed["filename"], listed["size"]) == (
        "contract",
        "contract.pdf",
        len(PDF),
    )
    unknown = crmflow("records", "files", "999", check_exit=None)
    assert unknown.returncode != 0
    assert "no record with id 999" in unknown.stderr
    crmflow("records", "file", rid, "contract", "--output", "copy.pdf")
    assert (tmp_path / "copy.pdf").read_bytes() == PDF
    again = crmflow("records", "file", rid, "contract", "--output", "copy.pdf", check_exit=None)
    assert again.returncode != 0
    assert "--force" in again.stderr

    (tmp_path / "tool.pdf").write_bytes(b"MZ\x90\0" * 8)
    refused = crmflow("records", "attach", rid, "contract", "tool.pdf", check_exit=None)
    assert refused.returncode != 0
    assert "application/octet-stream" in refused.stderr
    assert "CRMFLOW_FILE_TYPES" in refused.stderr

    cli_env["CRMFLOW_MAX_FILE_BYTES"] = "1000"
    too_large = crmflow("records", "attach", rid, "contract", "contract.pdf", check_exit=None)
    assert too_large.returncode != 0
    assert f"is {len(PDF):,} bytes" in too_large.stderr
    assert "at most 1,000 bytes" in too_large.stderr
    assert "CRMFLOW_MAX_FILE_BYTES" in too_large.stderr
    del cli_env["CRMFLOW_MAX_FILE_BYTES"]

    crmflow("records", "detach", rid, "contract")
    none = crmflow("records", "files", rid)
    assert none.stdout == ""
    assert f"crmflow records attach {rid} FIELD PATH" in none.stderr
    gone = crmflow("records", "file", rid, "contract", "-o", "x.pdf", check_exit=None)
    assert gone.returncode != 0
    assert "has no file in contract" in gone.stderr


def test_a_binary_file_sent_without_a_content_type_is_kept_as_sent(
    ctx: Context, admin: Actor, client: TestClient, as_admin: dict[str, str]
) -> None:
    # `curl -T contract.pdf URL` sends the bytes with no Content-Type: a file, not JSON text.
    add_file_field(ctx, admin, "contact", "contract")
    rid = records.create_record(ctx, admin, "contact", {"last_name": "Pop"}).id
    binary = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n"
    url = f"/api/records/{rid}/files/contract"
    headers = as_admin
    put = client.put(f"{url}?filename=contract.pdf", content=binary, headers=headers)
    assert "content-type" not in {k.lower() for k in put.request.headers}
    assert put.status_code == 201, put.text
    assert client.get(url, headers=headers).content == binary
