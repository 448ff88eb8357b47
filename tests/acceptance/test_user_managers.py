"""A user's manager (the `manager_of` responsibility asks them): set and shown by the users API
and `crmflow users create/update --manager`; never the user themselves nor someone in their
own team (no cycle); an explicit null or "" removes it."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient

from crmflow.services.context import Context
from crmflow.store.database import read_connection
from crmflow.store.users import find_user_by_name, manager_of, team_of
from tests.acceptance.conftest import Run


def _create(
    client: TestClient, headers: dict[str, str], name: str, **more: str
) -> dict[str, object]:
    answer = client.post(
        "/api/users", headers=headers, json={"username": name, "role": "member", **more}
    )
    assert answer.status_code == 201, answer.text
    body: dict[str, object] = answer.json()
    return body


def test_the_api_sets_shows_and_removes_a_users_manager(
    ctx: Context, client: TestClient, as_admin: dict[str, str]
) -> None:
    assert _create(client, as_admin, "rita")["manager"] is None
    assert _create(client, as_admin, "ana", manager="rita")["manager"] == "rita"
    assert _create(client, as_admin, "ion", manager="rita")["manager"] == "rita"
    shown = client.get("/api/users/ana", headers=as_admin).json()
    assert shown["manager"] == "rita"
    with read_connection(ctx.engine) as conn:
        rita = find_user_by_name(conn, "rita")
        ana = find_user_by_name(conn, "ana")
        assert rita is not None and ana is not None
        boss = manager_of(conn, ana.id)
        assert boss is not None and boss.username == "rita"
        assert [u.username for u in team_of(conn, rita.id)] == ["ana", "ion"]
        assert manager_of(conn, rita.id) is None

    # Leaving `manager` out keeps it; an explicit null removes it.
    kept = client.patch("/api/users/ana", headers=as_admin, json={"display_name": "Ana P."})
    assert kept.json()["manager"] == "rita"
    removed = client.patch("/api/users/ana", headers=as_admin, json={"manager": None})
    assert removed.status_code == 200 and removed.json()["manager"] is None


def test_a_manager_who_is_the_user_their_team_or_nobody_is_refused_saying_why(
    client: TestClient, as_admin: dict[str, str]
) -> None:
    _create(client, as_admin, "rita")
    _create(client, as_admin, "ana", manager="rita")
    _create(client, as_admin, "dan", manager="ana")

    itself = client.patch("/api/users/rita", headers=as_admin, json={"manager": "rita"})
    assert itself.status_code == 422
    assert "cannot be managed by themselves" in itself.text

    cycle = client.patch("/api/users/rita", headers=as_admin, json={"manager": "dan"})
    assert cycle.status_code == 422
    [problem] = cycle.json()["problems"]
    assert problem["path"] == "manager"
    assert "'dan', who reports to them" in problem["message"]
    assert client.get("/api/users/rita", headers=as_admin).json()["manager"] is None

    unknown = client.post(
        "/api/users", headers=as_admin, json={"username": "eva", "role": "member", "manager": "zed"}
    )
    assert unknown.status_code == 422 and "no user named 'zed'" in unknown.text
    # Refused whole: the user was not created without their manager.
    assert client.get("/api/users/eva", headers=as_admin).status_code == 404


def test_the_command_line_sets_and_lists_a_manager(crmflow: Run) -> None:
    # (What is refused, and removing a manager, go through the same service: tested above.)
    crmflow("db", "upgrade")
    crmflow("users", "create", "rita", "--role", "manager")
    created = json.loads(crmflow("users", "create", "ana", "--manager", "rita").stdout)
    assert created["manager"] == "rita"
    listed = crmflow("users", "list").stdout.splitlines()
    [ana_line] = [line for line in listed if " ana " in line]
    assert [cell.strip() for cell in ana_line.split("│")][-3:-1] == ["rita", "True"]
