"""The admin pages and imports through FastAPI's TestClient (fast), on SQLite and PostgreSQL: only
admins reach /admin (a member or a manager gets the 403 page saying who may, for pages and forms
alike); users created, changed, deactivated and reactivated with the services' refusals in plain
words; users and tokens paged by key; a token shown once; groups and private flows' members;
imports refused up front in plain words (format, empty file, unknown type, size, members), run in
the background and seen only by whoever started them."""

from __future__ import annotations

import re
from html import unescape

import httpx
import pytest

from crmflow.services import flows, jobs, records, users
from crmflow.services.context import Context
from crmflow.settings import Settings
from crmflow.web.pages import admin as admin_pages
from tests.acceptance.test_examples_end_to_end import EXAMPLES, _setup_like_the_demo
from tests.integration import test_web_tasks
from tests.integration.test_web_tasks import Browser


@pytest.fixture
def people(ctx: Context) -> Context:
    _setup_like_the_demo(ctx)
    return ctx


def _text(page: str) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", page).split())


def _refused(browser: Browser, path: str, **form: str) -> str:
    answer = browser.client.post(path, data={**form, "csrf_token": browser.csrf})
    assert answer.status_code == 403, answer.text
    return _text(unescape(answer.text))


def test_only_admins_reach_the_admin_pages_and_forms(people: Context) -> None:
    andrei, maria = Browser(people, "andrei"), Browser(people, "maria")
    for browser, role in ((andrei, "member"), (maria, "manager")):
        for path in ("/admin", "/admin/groups", "/admin/tokens", "/admin/flows"):
            answer = browser.client.get(path)
            assert answer.status_code == 403
            assert (
                f"only admins may open the admin pages; '{browser_name(browser)}' is a {role}"
                in (_text(unescape(answer.text)))
            )
    said = _refused(andrei, "/admin/users", username="eve", role="admin")
    assert "only admins may open the admin pages" in said
    assert _refused(andrei, "/admin/users/update", username="andrei", role="admin")
    assert _refused(maria, "/admin/groups/members", group="sales", username="maria", action="add")
    with pytest.raises(Exception, match="no user named 'eve'"):
        users.get_user(people, "eve")
    assert users.get_user(people, "andrei").role.value == "member"
    assert _refused(andrei, "/admin/tokens", username="maria", name="x")
    assert _refused(maria, "/admin/flows/members", flow="f", username="maria", action="add")


def browser_name(browser: Browser) -> str:
    page = browser.client.get("/").text
    found = re.search(r'<span class="who">([^<]+)</span>', page)
    assert found is not None
    return found.group(1)


def test_users_are_created_changed_and_deactivated_with_the_services_rules(
    people: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice = Browser(people, "alice")
    created = alice.post(
        "/admin/users",
        username="ioana",
        role="member",
        display_name="<b>Ioana</b>",
        email="ioana@example.org",
        password="a long password",
        manager="maria",
    )
    assert created == "ok: User ioana created."
    page = alice.client.get("/admin").text
    assert "&lt;b&gt;Ioana&lt;/b&gt;" in page and "<b>Ioana</b>" not in page
    assert users.get_user(people, "ioana").manager == "maria"

    # The services' refusals, in their words, where the form was.
    assert alice.post("/admin/users", username="ioana", role="member") == (
        "error: a user named 'ioana' already exists"
    )
    bad = alice.post("/admin/users", username="bad name!", role="boss", password="short")
    assert bad.startswith("error: ") and "is not a role" in bad
    short = alice.post("/admin/users", username="dan", role="member", password="short")
    assert "password: is shorter than 8 characters" in short
    cycle = alice.post("/admin/users/update", username="maria", role="manager", manager="ioana")
    assert "cannot be managed by 'ioana', who reports to them" in cycle
    assert alice.post("/admin/users/update", username="ioana", role="manager", manager="") == (
        "ok: ioana: role manager, no manager."
    )
    view = users.get_user(people, "ioana")
    assert view.role.value == "manager" and view.manager is None

    # Deactivated: her session ends at once; reactivated, she signs in again.
    monkeypatch.setitem(test_web_tasks.PASSWORDS, "ioana", "a long password")
    ioana = Browser(people, "ioana")
    assert ioana.client.get("/").status_code == 200
    said = alice.post("/admin/users/active", username="ioana", active="false")
    assert said == "ok: ioana deactivated: their sessions have ended."
    assert ioana.client.get("/").status_code == 303
    assert "Reactivate ioana" in alice.client.get("/admin").text
    assert alice.post("/admin/users/active", username="ioana", active="true") == (
        "ok: ioana reactivated."
    )
    assert Browser(people, "ioana").client.get("/").status_code == 200
    unknown = alice.post("/admin/users/update", username="nobody", role="member")
    assert unknown.startswith("error: no user named 'nobody'")


def test_users_and_tokens_are_paged_by_key_and_a_token_is_shown_once(
    people: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(admin_pages, "PAGE_SIZE", 3)
    alice = Browser(people, "alice")
    first = alice.get("/admin")
    found = re.search(r'href="/admin\?after=(\d+)" rel="next"', first)
    assert found is not None
    second = alice.get("/admin", after=found.group(1))
    names = re.findall(r"<strong>([^<]+)</strong><br>", first + second)
    rest = re.search(r'href="/admin\?after=(\d+)"', second)
    if rest:
        names += re.findall(r"<strong>([^<]+)</strong><br>", alice.get("/admin", after=rest[1]))
    assert {"alice", "maria", "andrei", "bogdan"} <= set(names)
    assert len(names) == len(set(names))  # no user twice across pages
    assert alice.client.get("/admin", params={"after": "x"}).status_code == 422

    answer = alice.client.post(
        "/admin/tokens",
        data={"username": "andrei", "name": "<i>sync</i>", "csrf_token": alice.csrf},
    )
    assert answer.status_code == 200 and answer.headers["cache-control"] == "no-store"
    token = re.search(r'id="new-token" readonly value="(crm_[^"]+)"', answer.text)
    assert token is not None
    assert users.authenticate_token(people, token.group(1)).username == "andrei"
    for _ in range(3):
        users.create_token(people, users.actor_by_username(people, "alice"), "bogdan", "more")
    listed = alice.get("/admin/tokens")
    assert token.group(1) not in listed and "<i>sync</i>" in listed
    assert 'href="/admin/tokens?after=' in listed
    token_id = re.search(r'name="token_id" value="(\d+)"', listed)
    assert token_id is not None
    assert alice.post("/admin/tokens/revoke", token_id=token_id.group(1)).startswith(
        f"ok: Token {token_id.group(1)} revoked"
    )
    assert alice.post("/admin/tokens/revoke", token_id="999999") == (
        "error: no API token with id 999999"
    )
    unknown = alice.client.post(
        "/admin/tokens", data={"username": "nobody", "name": "x", "csrf_token": alice.csrf}
    )
    assert unknown.status_code == 303


def test_groups_and_private_flows_members(people: Context) -> None:
    system = users.actor_by_username(people, "system")
    path = EXAMPLES / "service-orders.yaml"
    flows.create_flow(people, system, path.read_text(encoding="utf-8"), source=str(path))
    alice = Browser(people, "alice")
    assert alice.post("/admin/groups", name="<script>x</script>") == (
        "ok: Group <script>x</script> created."
    )
    assert "&lt;script&gt;x&lt;/script&gt;" in alice.client.get("/admin/groups").text
    assert alice.post("/admin/groups", name="sales").startswith("error: a group named 'sales'")
    assert alice.post("/admin/groups", name="  ") == "error: name: is empty (give the group a name)"
    assert alice.post("/admin/groups/members", group="sales", username="bogdan", action="add") == (
        "ok: bogdan added to sales."
    )
    groups = {g["name"]: g["members"] for g in users.list_groups(people)}
    assert "bogdan" in groups["sales"]
    alice.post("/admin/groups/members", group="sales", username="bogdan", action="remove")
    assert "bogdan" not in {g["name"]: g["members"] for g in users.list_groups(people)}["sales"]
    assert alice.post(
        "/admin/groups/members", group="nope", username="bogdan", action="add"
    ).startswith("error: no group named 'nope'")

    page = alice.get("/admin/flows")
    assert "service-orders" in page and "sales-orders" not in page
    assert alice.post(
        "/admin/flows/members", flow="service-orders", username="alice", action="add"
    ) == ("ok: alice may now see flow service-orders.")
    assert "alice" in flows.get_flow(people, system, "service-orders").members
    alice.post("/admin/flows/members", flow="service-orders", username="alice", action="remove")
    assert "alice" not in flows.get_flow(people, system, "service-orders").members


def _wait(ctx: Context, browser: Browser, job_path: str) -> str:
    """The import's progress fragment once a worker ran the job (it waits for one until then)."""
    waiting = browser.get(f"{job_path}/progress")
    assert "hx-trigger" in waiting and "Waiting for a worker" in waiting
    assert jobs.JobRunner(ctx, name="test-runner").run_once() == 1
    fragment = browser.get(f"{job_path}/progress")
    assert "hx-trigger" not in fragment
    return fragment


def _upload(browser: Browser, name: str, body: bytes, type_key: str = "company") -> httpx.Response:
    answer: httpx.Response = browser.client.post(
        "/imports",
        data={"type_key": type_key, "csrf_token": browser.csrf},
        files={"file": (name, body, "text/csv")},
    )
    return answer


def test_an_import_runs_in_the_background_for_whoever_started_it(people: Context) -> None:
    maria, bogdan, andrei = (Browser(people, n) for n in ("maria", "bogdan", "andrei"))
    assert "only managers and admins may import records" in _text(
        unescape(andrei.client.get("/imports").text)
    )
    assert _upload(andrei, "a.csv", b"name\nX\n").status_code == 403

    body = b"name,email\nOne,one@example.org\nTwo,<b>bad</b>\nThree,\n"
    answer = _upload(maria, "list.csv", body)
    assert answer.status_code == 303
    job_path = answer.headers["location"]
    report = _text(_wait(people, maria, job_path))
    assert "Import done: 2 imported, 1 refused, 3 read." in report
    assert "Line Why 3 email: '" in report and "is not a valid email address" in report
    raw = maria.client.get(f"{job_path}/progress").text
    assert "&lt;b&gt;bad&lt;/b&gt;" in raw and "<b>bad</b>" not in raw
    kept = {r.data.get("name") for r in records.list_records(people, "company", limit=1000).items}
    assert {"One", "Three"} <= kept and "Two" not in kept

    # Another user (not an admin) does not see it; an unknown id says what may have happened.
    assert bogdan.client.get(job_path).status_code == 404
    gone = maria.client.get("/imports/99999")
    assert gone.status_code == 404 and "no job 99999 here" in unescape(gone.text)
    assert maria.client.get("/imports/not-a-job").status_code == 422
    # The import form lists the imports asked for, linked to their reports.
    assert f'<a href="{job_path}">list.csv</a>' in maria.client.get("/imports").text


def test_an_import_with_a_bad_header_names_the_uploaded_file_and_says_it_once(
    people: Context,
) -> None:
    maria = Browser(people, "maria")
    answer = _upload(maria, "bad.csv", b"name,unknown\nX,Y\n")
    assert answer.status_code == 303
    report = _text(_wait(people, maria, answer.headers["location"]))
    assert "the import file bad.csv was refused" in report, report
    assert "crmflow-import-" not in report and "upload.csv" not in report  # no server path
    assert report.count("'unknown' is not a field") == 1, report


def test_an_import_is_refused_up_front_in_plain_words(people: Context) -> None:
    maria = Browser(people, "maria")
    for name, body, type_key, said in (
        ("list.xlsx", b"name\nX\n", "company", "cannot tell the format of 'list.xlsx'"),
        ("list.csv", b"", "company", "list.csv is empty"),
        ("list.csv", b"name\nX\n", "spaceship", "spaceship"),
    ):
        answer = _upload(maria, name, body, type_key)
        assert answer.status_code == 422
        assert said in unescape(answer.text)
        assert 'role="alert" class="problems"' in answer.text


def test_an_upload_over_the_request_limit_is_refused(people: Context) -> None:
    small = Context.from_settings(
        Settings(
            database_url=str(people.engine.url.render_as_string(hide_password=False)),
            timezone="Europe/Paris",
            max_request_bytes=2000,
        )
    )
    small.clock = people.clock
    maria = Browser(small, "maria")
    answer = _upload(maria, "big.csv", b"name\n" + b"x" * 5000 + b"\n")
    assert answer.status_code == 413
    assert "larger than 2,000 bytes, the server's limit" in answer.text
    small.engine.dispose()
