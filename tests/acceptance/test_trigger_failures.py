"""A flow's failing triggers have their own route, `GET /api/flows/{key}/trigger-failures`, and are
printed by `crmflow flows show`: they change as the worker runs, without the flow's revision (its
ETag) changing, so a client holding the flow's ETag must still see a trigger start failing."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa
from fastapi.testclient import TestClient

from crmflow.services import flows
from crmflow.services.context import Actor, Context
from crmflow.store.database import create_db_engine
from crmflow.store.schema import flows as flow_table
from crmflow.store.trigger_failures import record_failure
from tests.acceptance.conftest import Run
from tests.acceptance.test_if_match import FLOW, YAML


def _fail_first_trigger(conn: sa.Connection, flow_id: int, now: datetime) -> None:
    record_failure(
        conn,
        flow_id=flow_id,
        trigger_index=0,
        trigger_type="manual",
        error="the saved query 'gone' no longer exists",
        now=now,
    )


def test_a_trigger_that_starts_failing_is_seen_by_a_client_holding_the_flows_etag(
    ctx: Context, admin: Actor, client: TestClient, as_admin: dict[str, str]
) -> None:
    client.post("/api/flows", content=FLOW.format(name="W"), headers={**as_admin, **YAML})
    read = client.get("/api/flows/welcome", headers=as_admin)
    assert "failing_triggers" not in read.json()
    assert client.get("/api/flows/welcome/trigger-failures", headers=as_admin).json() == []

    with ctx.engine.begin() as conn:
        _fail_first_trigger(conn, flows.get_flow(ctx, admin, "welcome").id, ctx.now())
    # The flow itself did not change: 304 is right for it ...
    etag = read.headers["ETag"]
    again = client.get("/api/flows/welcome", headers={**as_admin, "If-None-Match": etag})
    assert again.status_code == 304
    # ... and the failure is on its own route, never answered 304.
    failures = client.get("/api/flows/welcome/trigger-failures", headers=as_admin)
    assert failures.status_code == 200 and "etag" not in failures.headers
    [failure] = failures.json()
    assert (failure["trigger_index"], failure["trigger_type"], failure["failures"]) == (
        0,
        "manual",
        1,
    )
    assert "'gone' no longer exists" in failure["last_error"]
    assert failure["retry_at"] > failure["last_failed_at"]
    missing = client.get("/api/flows/nothing/trigger-failures", headers=as_admin)
    assert missing.status_code == 404


def test_cli_flows_show_prints_the_failing_triggers(
    crmflow: Run, cli_env: dict[str, str], tmp_path: Path
) -> None:
    crmflow("db", "upgrade")
    document = tmp_path / "welcome.yaml"
    document.write_text(FLOW.format(name="Welcome"))
    crmflow("flows", "create", str(document))
    assert json.loads(crmflow("flows", "show", "welcome").stdout)["failing_triggers"] == []

    engine = create_db_engine(cli_env["CRMFLOW_DATABASE_URL"])
    try:
        with engine.begin() as conn:
            flow_id = conn.execute(
                sa.select(flow_table.c.id).where(flow_table.c.key == "welcome")
            ).scalar_one()
            _fail_first_trigger(conn, flow_id, datetime.now(UTC))
    finally:
        engine.dispose()
    shown = json.loads(crmflow("flows", "show", "welcome").stdout)
    assert shown["key"] == "welcome" and shown["revision"] == 1
    [failure] = shown["failing_triggers"]
    assert "'gone' no longer exists" in failure["last_error"]
