"""Background jobs over the API (`GET /api/jobs`, `GET /api/jobs/{id}`): each user sees the jobs
they asked for, newest first and paged, an admin everyone's; another user's job is 404, as one
that does not exist; a finished import shows its report."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from crmflow.services import jobs
from crmflow.services.context import Actor, Context
from tests.acceptance.conftest import auth_headers
from tests.conftest import make_user


def _import(ctx: Context, actor: Actor, name: str, rows: int = 2) -> int:
    lines = ["first_name,last_name,email"]
    lines += [f"A,{name}{i},{name.lower()}{i}@example.org" for i in range(rows)]
    content = ("\n".join(lines) + "\n").encode()
    job = jobs.submit_import(
        ctx, actor, type_key="contact", filename=f"{name}.csv", content=content, fmt="csv"
    )
    return job.id


def _ids(client: TestClient, headers: dict[str, str], query: str = "") -> list[int]:
    answer = client.get(f"/api/jobs{query}", headers=headers)
    assert answer.status_code == 200, answer.text
    return [j["id"] for j in answer.json()["items"]]


def test_each_user_reads_their_own_jobs_and_an_admin_everyones(
    ctx: Context, admin: Actor, client: TestClient
) -> None:
    maria = make_user(ctx, "maria", "manager")
    ion = make_user(ctx, "ion", "manager")
    make_user(ctx, "eva", "member")
    as_maria = auth_headers(ctx, admin, "maria")
    as_ion = auth_headers(ctx, admin, "ion")
    as_eva = auth_headers(ctx, admin, "eva")
    as_admin = auth_headers(ctx, admin, admin.username)
    first = _import(ctx, maria, "Pop")
    other = _import(ctx, ion, "Ionescu")
    second = _import(ctx, maria, "Popa")

    assert _ids(client, as_maria) == [second, first]  # newest first
    assert _ids(client, as_ion) == [other]
    assert _ids(client, as_eva) == []
    assert _ids(client, as_admin) == [second, other, first]

    mine = client.get(f"/api/jobs/{first}", headers=as_maria)
    assert mine.status_code == 200, mine.text
    job: dict[str, Any] = mine.json()
    assert (job["kind"], job["subject"], job["state"], job["by"]) == (
        "import",
        "type:contact",
        "waiting",
        "maria",
    )
    assert job["percent"] == 0 and job["result"] is None and job["finished_at"] is None

    # Another user's job is not found, exactly as a job that does not exist.
    for headers in (as_ion, as_eva):
        refused = client.get(f"/api/jobs/{first}", headers=headers)
        assert refused.status_code == 404, refused.text
        assert "maria" not in refused.text and "Pop" not in refused.text
    missing = client.get(f"/api/jobs/{second + 1000}", headers=as_ion)
    assert missing.status_code == 404
    assert refused.json()["error"] == missing.json()["error"]
    assert client.get(f"/api/jobs/{first}", headers=as_admin).status_code == 200
    assert client.get("/api/jobs").status_code == 401
    assert client.get(f"/api/jobs/{first}").status_code == 401


def test_jobs_page_newest_first_filter_by_state_and_show_an_import_s_report(
    ctx: Context, admin: Actor, manager: Actor, client: TestClient
) -> None:
    headers = auth_headers(ctx, admin, manager.username)
    made = [_import(ctx, manager, f"N{i}", rows=i + 1) for i in range(5)]

    page = client.get("/api/jobs?limit=2", headers=headers).json()
    assert [j["id"] for j in page["items"]] == [made[4], made[3]]
    seen = [j["id"] for j in page["items"]]
    while page["next_after"] is not None:
        page = client.get(f"/api/jobs?limit=2&after={page['next_after']}", headers=headers).json()
        seen += [j["id"] for j in page["items"]]
    assert seen == made[::-1]  # every job once, newest first, no page past the end
    assert client.get("/api/jobs?limit=0", headers=headers).status_code == 422
    assert client.get("/api/jobs?state=lost", headers=headers).status_code == 422

    assert jobs.JobRunner(ctx, name="test").run_once() == 5
    assert _ids(client, headers, "?state=waiting") == []
    assert _ids(client, headers, "?state=done&state=failed") == made[::-1]
    done = client.get(f"/api/jobs/{made[2]}", headers=headers).json()
    assert (done["state"], done["percent"], done["error"]) == ("done", 100, None)
    assert done["finished_at"] is not None and done["attempts"] == 1
    report = done["result"]
    assert (report["read"], report["imported"], report["source"]) == (3, 3, "N2.csv")
