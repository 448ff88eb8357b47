"""The records and saved-query pages through FastAPI's TestClient (fast): paging, search, a
record's timeline and files, entering and restarting with refusals in plain words, who sees
which flow, the filter builder's count, preview, problems and who may save."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from crmflow.delivery.dispatcher import Dispatcher
from crmflow.engine.lifecycle import LifecycleAction
from crmflow.services import (
    enrollments,
    flows,
    queries,
    record_files,
    record_types,
    records,
    web_sessions,
)
from crmflow.services.context import Actor, Context
from crmflow.services.run_views import record_status
from crmflow.services.web_sessions import SESSION_COOKIE
from crmflow.web import create_site
from tests.conftest import make_user

REPO = Path(__file__).resolve().parents[2]


def _flow_text(key: str, *, extra: str = "", trigger: str = "manual") -> str:
    return f"""\
schema_version: 1
key: {key}
name: Flow {key}
record_type: contact
controller: system
reentry: {{mode: always}}
triggers: [{{type: {trigger}}}]
{extra}steps:
  - key: hello
    actions:
      - type: send_email
        subject: "Hello"
        body: "Hi"
  - key: later
    timing: {{type: after, amount: 1, unit: days}}
    actions:
      - type: send_email
        subject: "Later"
        body: "Hi again"
"""


def _flow(ctx: Context, admin: Actor, key: str, **kw: str) -> None:
    flows.create_flow(ctx, admin, _flow_text(key, **kw))
    flows.change_status(ctx, admin, key, LifecycleAction.START)


def _contact(ctx: Context, admin: Actor, first: str, last: str = "Doe", **more: object) -> int:
    values = {"first_name": first, "last_name": last, "email": f"{first.lower()}@example.org"}
    return records.create_record(ctx, admin, "contact", {**values, **more}).id


@pytest.fixture
def site(ctx: Context) -> Iterator[TestClient]:
    with TestClient(create_site(ctx), raise_server_exceptions=False) as client:
        yield client


def _signed_in(ctx: Context, client: TestClient, username: str) -> tuple[TestClient, str]:
    signed = web_sessions.sign_in(ctx, username, "password123")
    client.cookies.set(SESSION_COOKIE, signed.token)
    return client, signed.session.csrf_token


@pytest.fixture
def alice(ctx: Context) -> Actor:
    return make_user(ctx, "alice", "admin")


def _ids(html: str) -> list[int]:
    return [int(i) for i in re.findall(r'<a href="/records/(\d+)">', html)]


def test_the_list_pages_by_id_and_the_search_finds_text_and_ids(
    ctx: Context, site: TestClient, alice: Actor
) -> None:
    ids = [_contact(ctx, alice, f"Person{i:02d}") for i in range(55)]
    special = _contact(ctx, alice, "Zoé", "<script>alert(1)</script>", phone="+40 721 000 111")
    client, _ = _signed_in(ctx, site, "alice")
    first = client.get("/records", params={"type": "contact"})
    assert first.status_code == 200
    assert _ids(first.text) == ids[:50]
    for label in ("first name", "last name", "email", "Owner"):
        assert f'<th scope="col">{label}</th>'.lower() in first.text.lower()
    found = re.search(r'href="(/records\?[^"]*after=\d+)"', first.text)
    assert found is not None
    second = client.get(found.group(1).replace("&amp;", "&"))
    assert _ids(second.text) == [*ids[50:], special]
    assert "Next page" not in second.text
    assert "<script>alert(1)</script>" not in second.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in second.text
    by_text = client.get("/records", params={"type": "contact", "q": "person07"})
    assert _ids(by_text.text) == [ids[7]]
    by_phone = client.get("/records", params={"type": "contact", "q": "721 000"})
    assert _ids(by_phone.text) == [special]
    by_id = client.get("/records", params={"type": "contact", "q": str(ids[3])})
    assert ids[3] in _ids(by_id.text)
    nothing = client.get("/records", params={"type": "contact", "q": "nobody-at-all"})
    assert "No records match" in nothing.text


def test_the_list_of_a_saved_query_shows_its_records(
    ctx: Context, site: TestClient, alice: Actor
) -> None:
    _contact(ctx, alice, "Ann", status="client")
    bob = _contact(ctx, alice, "Bob", status="donor")
    queries.save_query(
        ctx,
        alice,
        name="donors",
        record_type="contact",
        filter={"all": [{"field": "status", "op": "=", "value": "donor"}]},
    )
    client, _ = _signed_in(ctx, site, "alice")
    page = client.get("/records", params={"query": "donors"})
    assert _ids(page.text) == [bob]
    assert "records of the saved query donors" in page.text


def test_bad_input_on_the_records_pages_is_a_page_in_plain_words(
    ctx: Context, site: TestClient, alice: Actor
) -> None:
    client, _ = _signed_in(ctx, site, "alice")
    unknown = client.get("/records", params={"type": "spaceship"})
    assert unknown.status_code == 404
    assert "spaceship" in unknown.text
    assert client.get("/records/987654").status_code == 404
    assert client.get("/records", params={"after": "soon"}).status_code == 422
    assert client.get("/records", params={"query": "no-such-query"}).status_code == 404
    assert client.get("/queries/no-such-query").status_code == 404
    assert client.get("/queries/new", params={"record_type": "nope"}).status_code == 404
    huge = "99999999999999999999"  # no row has it, and SQLite cannot even bind it
    for path in (f"/records/{huge}", f"/records?after={huge}", f"/queries?after={huge}"):
        answer = client.get(path)
        assert answer.status_code == 422, path
        assert "out of range" in answer.text


def test_entering_a_record_shows_its_timeline_progress_and_restart(
    ctx: Context, site: TestClient, alice: Actor
) -> None:
    _flow(ctx, alice, "welcome")
    _flow(ctx, alice, "automatic", trigger="record_created")
    rid = _contact(ctx, alice, "Claire")
    client, csrf = _signed_in(ctx, site, "alice")
    page = client.get(f"/records/{rid}")
    assert "has not been in any flow" in page.text
    assert '<option value="welcome">' in page.text
    refused = client.post(f"/records/{rid}/enter", data={"flow": "automatic", "csrf_token": csrf})
    assert refused.status_code == 200  # after the redirect back to the record
    assert "Not entered into automatic" in refused.text
    assert "no manual trigger" in refused.text
    entered = client.post(f"/records/{rid}/enter", data={"flow": "welcome", "csrf_token": csrf})
    assert "Entered into welcome" in entered.text
    Dispatcher(ctx).run_once()
    page = client.get(f"/records/{rid}")
    assert re.search(r'class="progress-count"[^>]*>1/2<', page.text), page.text
    assert "step <strong>hello</strong>" in page.text
    assert "send_email" in page.text
    assert "now at step <strong>later</strong>" in page.text
    [run] = enrollments_of(ctx, alice, rid)
    restarted = client.post(
        f"/records/{rid}/restart", data={"enrollment": str(run), "csrf_token": csrf}
    )
    assert "Restarted in welcome" in restarted.text
    assert re.search(r'class="progress-count"[^>]*>0/2<', restarted.text)
    foreign = client.post(f"/records/{rid}/restart", data={"enrollment": "999", "csrf_token": csrf})
    assert "Not restarted" in foreign.text and "no run 999" in foreign.text


def enrollments_of(ctx: Context, actor: Actor, record_id: int) -> list[int]:
    return [e.id for e in record_status(ctx, actor, record_id).enrollments]


def test_a_member_sees_neither_a_private_flow_nor_its_runs(
    ctx: Context, site: TestClient, alice: Actor
) -> None:
    make_user(ctx, "andrei", "member")
    _flow(ctx, alice, "secret", extra="visibility: private\nmembers: [alice, system]\n")
    _flow(ctx, alice, "open")
    rid = _contact(ctx, alice, "Dana")
    enrollments.start_record(ctx, alice, "secret", rid)
    client, csrf = _signed_in(ctx, site, "andrei")
    page = client.get(f"/records/{rid}")
    assert page.status_code == 200
    assert '<option value="open">' in page.text
    assert "secret" not in page.text
    tried = client.post(f"/records/{rid}/enter", data={"flow": "secret", "csrf_token": csrf})
    assert "Not entered into secret" in tried.text
    assert len(enrollments_of(ctx, alice, rid)) == 1
    [run] = enrollments_of(ctx, alice, rid)
    restart = client.post(
        f"/records/{rid}/restart", data={"enrollment": str(run), "csrf_token": csrf}
    )
    assert "Not restarted" in restart.text


def test_a_form_without_its_token_is_refused(ctx: Context, site: TestClient, alice: Actor) -> None:
    _flow(ctx, alice, "welcome")
    rid = _contact(ctx, alice, "Eve")
    client, _ = _signed_in(ctx, site, "alice")
    answer = client.post(f"/records/{rid}/enter", data={"flow": "welcome"})
    assert answer.status_code == 403
    assert enrollments_of(ctx, alice, rid) == []


def test_a_file_field_is_a_download_link(ctx: Context, site: TestClient, alice: Actor) -> None:
    record_types.load_record_type_file(ctx, alice, REPO / "examples/types/candidate.yaml")
    rtype = record_types.get_record_type(ctx, "candidate")
    values = {
        f.key: "x@example.org" if f.type.value == "email" else "Radu"
        for f in rtype.fields
        if f.required
    }
    rid = records.create_record(ctx, alice, "candidate", values).id
    client, _ = _signed_in(ctx, site, "alice")
    assert "/files/cv" not in client.get(f"/records/{rid}").text
    record_files.put_file(ctx, alice, rid, "cv", "radu cv.pdf", b"%PDF-1.4 a cv")
    page = client.get(f"/records/{rid}")
    assert f'href="/records/{rid}/files/cv" download>radu cv.pdf<' in page.text
    got = client.get(f"/records/{rid}/files/cv")
    assert got.status_code == 200
    assert got.content == b"%PDF-1.4 a cv"
    assert got.headers["content-type"] == "application/pdf"
    assert got.headers["content-disposition"].startswith("attachment;")


def test_the_builder_counts_and_previews_and_says_what_is_wrong(
    ctx: Context, site: TestClient, alice: Actor
) -> None:
    today = ctx.now().astimezone(ctx.zone).date()
    recent = _contact(ctx, alice, "Recent", client_since=today.isoformat(), status="client")
    _contact(ctx, alice, "Old", client_since="2001-01-01", status="client")
    client, _ = _signed_in(ctx, site, "alice")
    params = {
        "record_type": "contact",
        "match": "all",
        "field": ["client_since", "status", ""],
        "op": ["in the last", "in", "="],
        "value": ["30", "client, donor", ""],
    }
    fragment = client.get("/queries/preview", params=params)
    assert fragment.status_code == 200
    assert 'id="query-count">1<' in fragment.text
    assert _ids(fragment.text) == [recent]
    wrong = {**params, "value": ["soon", "client, zzz", ""]}
    problems = client.get("/queries/preview", params=wrong).text
    assert "condition 1: &#39;in the last&#39; needs a whole number of days" in problems
    assert "condition 2, value[1]: &#39;zzz&#39; is not a choice of &#39;status&#39;" in problems


def test_a_manager_saves_a_query_and_a_member_may_not(
    ctx: Context, site: TestClient, alice: Actor
) -> None:
    make_user(ctx, "maria", "manager")
    make_user(ctx, "andrei", "member")
    form = {
        "record_type": "contact",
        "name": "new-clients",
        "description": "Clients of the last month",
        "match": "all",
        "field": ["client_since", ""],
        "op": ["in the last", "="],
        "value": ["30", ""],
    }
    member, csrf = _signed_in(ctx, site, "andrei")
    refused = member.post("/queries/new", data={**form, "csrf_token": csrf})
    assert refused.status_code == 403
    assert "Only managers and admins save queries" in refused.text
    with pytest.raises(Exception, match="no saved query"):
        queries.get_query(ctx, "new-clients")
    manager, csrf = _signed_in(ctx, site, "maria")
    bad = manager.post("/queries/new", data={**form, "name": "bad name!", "csrf_token": csrf})
    assert bad.status_code == 422
    assert "&#39;bad name!&#39; is not a valid query name" in bad.text
    assert 'value="Clients of the last month"' in bad.text  # the form keeps what was typed
    saved = manager.post("/queries/new", data={**form, "csrf_token": csrf})
    assert saved.status_code == 200
    assert str(saved.url).endswith("/queries/new-clients")
    assert "Saved the query new-clients" in saved.text
    stored = queries.get_query(ctx, "new-clients")
    assert stored.filter == {
        "all": [{"field": "client_since", "op": "between", "value": ["today - 30 days", "today"]}]
    }
    # The saved query opens in the builder as it was built.
    assert '<option value="in the last" selected>' in saved.text
    assert 'value="30"' in saved.text
    again = manager.post(
        "/queries/new-clients",
        data={**form, "value": ["60", ""], "csrf_token": csrf},
    )
    assert "Saved the query new-clients" in again.text
    assert queries.get_query(ctx, "new-clients").filter["all"][0]["value"][0] == "today - 60 days"
    listing = manager.get("/queries")
    assert '<a href="/queries/new-clients">new-clients</a>' in listing.text


def test_the_builder_adds_conditions_one_at_a_time_up_to_its_limit(
    ctx: Context, site: TestClient, alice: Actor
) -> None:
    client, _ = _signed_in(ctx, site, "alice")
    new = client.get("/queries/new", params={"record_type": "company"})
    assert new.text.count('class="query-row"') == 1
    row = client.get("/queries/row", params={"record_type": "company", "field": ["name", ""]})
    assert 'aria-label="Condition 3"' in row.text
    assert '<option value="industry">' in row.text  # the fields of the page's record type
    full = client.get("/queries/row", params={"record_type": "company", "field": ["x"] * 30})
    assert full.status_code == 204
