"""An existing CRM keeps crmflow's records in sync (issue 10): upserting imports from the API and
the command line, one record by external id, and batches of changes (signed or with a token)."""

from __future__ import annotations

import json
from pathlib import Path

from fastapi.testclient import TestClient

from tests.acceptance.conftest import Run

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
