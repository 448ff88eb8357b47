"""A record that a `run_sql` action updates has a new version, hence a new ETag: an If-Match
read before the SQL ran is refused (412) instead of overwriting what the SQL wrote."""

from __future__ import annotations

from fastapi.testclient import TestClient

from crmflow.services.context import Context

# The administrator's SQL writes the record's data without touching its version.
SET_FIRST_NAME = {
    "sqlite": "update records set data = json_set(data, '$.first_name', :name) where id = :id",
    "postgresql": "update records set data = jsonb_set(data, '{first_name}', to_jsonb("
    "cast(:name as text))) where id = :id",
}
FLOW = """\
schema_version: 1
key: rename
name: Rename
record_type: contact
triggers: [{{type: manual}}]
steps:
  - key: sql
    actions:
      - type: run_sql
        sql: "{sql}"
        params: {{id: {{cel: record.id}}, name: Renamed}}
"""


def test_a_record_updated_by_run_sql_has_a_new_etag(
    ctx: Context, client: TestClient, as_admin: dict[str, str]
) -> None:
    ctx.settings.allow_sql_actions = True
    sql = SET_FIRST_NAME[ctx.engine.dialect.name]
    created = client.post(
        "/api/flows",
        content=FLOW.format(sql=sql),
        headers={**as_admin, "Content-Type": "application/yaml"},
    )
    assert created.status_code == 201, created.text
    assert client.post("/api/flows/rename/start", headers=as_admin).status_code == 200
    record = client.post(
        "/api/records/contact", json={"data": {"last_name": "Pop"}}, headers=as_admin
    )
    url = f"/api/records/contact/{record.json()['id']}"
    read = client.get(url, headers=as_admin)
    assert read.headers["ETag"] == '"1"'

    started = client.post(
        "/api/flows/rename/runs", json={"record_id": record.json()["id"]}, headers=as_admin
    )
    assert started.status_code in (200, 201), started.text
    after = client.get(url, headers=as_admin)
    assert after.json()["data"]["first_name"] == "Renamed"  # the SQL ran
    assert (after.headers["ETag"], after.json()["version"]) == ('"2"', 2)

    # A client that read version 1 cannot overwrite the SQL's change unknowingly.
    stale = client.patch(
        url, json={"data": {"first_name": "Lost"}}, headers={**as_admin, "If-Match": '"1"'}
    )
    assert stale.status_code == 412, stale.text
    # crmflow's own writes still add exactly one (the trigger leaves them alone).
    fresh = client.patch(
        url, json={"data": {"first_name": "Ana"}}, headers={**as_admin, "If-Match": '"2"'}
    )
    assert (fresh.status_code, fresh.headers["ETag"]) == (200, '"3"'), fresh.text
