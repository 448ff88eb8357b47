"""What a browser may keep of the answers: no copy of a signed-in page or of an API answer
with data (Back after signing out shows nothing), a revalidated one of an API answer with an
ETag, and the static files cached as before."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from crmflow.services import records, users
from crmflow.services.context import Actor, Context
from crmflow.web import create_site
from tests.conftest import make_user

_CSRF = re.compile(r'name="csrf_token" value="([0-9a-f]{64})"')


@pytest.fixture
def site(ctx: Context) -> Iterator[TestClient]:
    with TestClient(create_site(ctx), follow_redirects=False) as client:
        yield client


def _sign_in(site: TestClient, username: str) -> None:
    found = _CSRF.search(site.get("/sign-in").text)
    assert found is not None
    form = {"username": username, "password": "password123", "csrf_token": found.group(1)}
    assert site.post("/sign-in", data={**form, "next": "/"}).status_code == 303


def test_no_signed_in_page_is_kept_to_show_again_after_signing_out(
    site: TestClient, ctx: Context, admin: Actor
) -> None:
    make_user(ctx, "ada", "admin")
    record = records.create_record(ctx, admin, "contact", {"last_name": "Secretson"}).id
    _sign_in(site, "ada")
    for path in (f"/records/{record}", "/admin", "/flows", "/"):
        page = site.get(path)
        assert page.status_code == 200, path
        assert page.headers["content-type"].startswith("text/html")
        assert page.headers["cache-control"] == "no-store", path
    shown = site.get(f"/records/{record}").text
    assert "Secretson" in shown
    token = _CSRF.search(shown)
    assert token is not None
    assert site.post("/sign-out", data={"csrf_token": token.group(1)}).status_code == 303
    again = site.get(f"/records/{record}")
    assert again.status_code == 303 and "Secretson" not in again.text
    # The static files of the pages are cached as before.
    css = site.get("/static/web/app.css")
    assert css.status_code == 200
    assert "no-store" not in css.headers.get("cache-control", "")
    assert css.headers["etag"]


def test_api_answers_with_data_are_not_stored_and_etags_still_revalidate(
    site: TestClient, ctx: Context, admin: Actor
) -> None:
    auth = {"Authorization": f"Bearer {users.create_token(ctx, admin, admin.username).token}"}
    record = records.create_record(ctx, admin, "contact", {"last_name": "Secretson"}).id
    listed = site.get("/api/records/contact", headers=auth)
    assert listed.status_code == 200
    assert listed.headers["cache-control"] == "no-store"
    assert site.get("/api/users", headers=auth).headers["cache-control"] == "no-store"
    # A record has an ETag: a client may keep it, asking each time whether it is current.
    one = site.get(f"/api/records/contact/{record}", headers=auth)
    assert one.status_code == 200
    assert one.headers["cache-control"] == "no-cache, private"
    same = site.get(
        f"/api/records/contact/{record}", headers={**auth, "If-None-Match": one.headers["etag"]}
    )
    assert same.status_code == 304
    assert same.headers["etag"] == one.headers["etag"]
    assert "no-store" not in same.headers["cache-control"]
    # A refusal says nothing worth keeping either; the API's own files keep their caching.
    assert site.get("/api/records/contact").headers["cache-control"] == "no-store"
    swagger = site.get("/static/swagger-ui/swagger-ui.css")
    assert swagger.status_code == 200
    assert "no-store" not in swagger.headers.get("cache-control", "")
