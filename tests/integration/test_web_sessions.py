"""The web application's sessions and CSRF rules, through FastAPI's TestClient (fast): sign in
and out, the failed sign-in limit, expiry, deactivated users, CSRF refusals, where `next=` may
lead, error pages and security headers. On SQLite and PostgreSQL."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from crmflow.services import users
from crmflow.services.context import Actor, Context
from crmflow.services.web_sessions import SESSION_COOKIE
from crmflow.testing import FrozenClock
from crmflow.web import create_site
from crmflow.web.auth import safe_next
from tests.conftest import make_user

_CSRF = re.compile(r'name="csrf_token" value="([0-9a-f]{64})"')


@pytest.fixture
def site(ctx: Context) -> Iterator[TestClient]:
    with TestClient(create_site(ctx), follow_redirects=False) as client:
        yield client


@pytest.fixture
def maria(ctx: Context) -> Actor:
    return make_user(ctx, "maria", "manager")


def csrf_of(client: TestClient, path: str = "/sign-in") -> str:
    page = client.get(path)
    found = _CSRF.search(page.text)
    assert found is not None, page.text
    return found.group(1)


def sign_in(client: TestClient, username: str = "maria", password: str = "password123"):  # type: ignore[no-untyped-def]
    token = csrf_of(client)
    form = {"username": username, "password": password, "csrf_token": token, "next": "/"}
    return client.post("/sign-in", data=form)


def test_signing_in_sets_an_http_only_lax_cookie_and_opens_the_dashboard(
    site: TestClient, maria: Actor
) -> None:
    answer = sign_in(site)
    assert answer.status_code == 303
    assert answer.headers["location"] == "/"
    cookie = answer.headers["set-cookie"]
    assert f"{SESSION_COOKIE}=" in cookie
    assert "HttpOnly" in cookie
    assert "SameSite=lax" in cookie
    assert "Secure" not in cookie  # plain http, and the settings do not ask for it
    dashboard = site.get("/")
    assert dashboard.status_code == 200
    assert "Hello, maria" in dashboard.text
    assert 'id="open-tasks">0<' in dashboard.text


def test_the_cookie_is_secure_over_https(ctx: Context, maria: Actor) -> None:
    with TestClient(create_site(ctx), base_url="https://testserver", follow_redirects=False) as c:
        answer = sign_in(c)
    assert answer.status_code == 303
    assert "Secure" in answer.headers["set-cookie"]


def test_the_database_keeps_no_clear_session_token(
    site: TestClient, ctx: Context, maria: Actor
) -> None:
    sign_in(site)
    token = site.cookies[SESSION_COOKIE]
    with ctx.engine.connect() as conn:
        rows = conn.execute(sa.text("select token_hash from web_sessions")).all()
    assert len(rows) == 1
    assert rows[0][0] != token and token not in rows[0][0]


def test_a_wrong_password_is_refused_with_a_message_in_plain_words(
    site: TestClient, maria: Actor
) -> None:
    answer = sign_in(site, password="wrong-password")
    assert answer.status_code == 401
    assert "Wrong username or password" in answer.text
    assert SESSION_COOKIE not in site.cookies
    assert site.get("/").status_code == 303


def test_too_many_failures_lock_sign_in_with_when_to_retry(
    site: TestClient, ctx: Context, maria: Actor
) -> None:
    for _ in range(ctx.settings.login_attempts - 1):
        assert sign_in(site, password="wrong-password").status_code == 401
    locked = sign_in(site, password="wrong-password")
    assert locked.status_code == 429
    assert "Too many failed sign-ins. Try again in 60 seconds" in locked.text
    assert locked.headers["retry-after"] == "60"
    # Even the right password waits.
    assert sign_in(site).status_code == 429


def test_signing_out_ends_the_session_for_good(site: TestClient, maria: Actor) -> None:
    sign_in(site)
    token = site.cookies[SESSION_COOKIE]
    csrf = csrf_of(site, "/")
    answer = site.post("/sign-out", data={"csrf_token": csrf})
    assert answer.status_code == 303
    assert answer.headers["location"] == "/sign-in"
    site.cookies.set(SESSION_COOKIE, token)  # the old cookie, replayed
    again = site.get("/")
    assert again.status_code == 303
    assert again.headers["location"] == "/sign-in?next=/"


def test_a_post_without_the_csrf_token_is_refused_with_a_page_saying_to_reload(
    site: TestClient, maria: Actor
) -> None:
    sign_in(site)
    refused = site.post("/sign-out")
    assert refused.status_code == 403
    assert "text/html" in refused.headers["content-type"]
    assert "reload the page" in refused.text
    wrong = site.post("/sign-out", headers={"X-CSRF-Token": "0" * 64})
    assert wrong.status_code == 403
    assert site.get("/").status_code == 200  # still signed in


def test_htmx_requests_carry_the_token_in_a_header(site: TestClient, maria: Actor) -> None:
    sign_in(site)
    csrf = csrf_of(site, "/")
    assert f'hx-headers=\'{{"X-CSRF-Token": "{csrf}"}}\'' in site.get("/").text
    answer = site.post("/sign-out", headers={"X-CSRF-Token": csrf})
    assert answer.status_code == 303


def test_the_sign_in_form_itself_needs_its_token(site: TestClient, maria: Actor) -> None:
    form = {"username": "maria", "password": "password123", "next": "/"}
    assert site.post("/sign-in", data=form).status_code == 403


def test_a_session_ends_when_idle_too_long(
    site: TestClient, ctx: Context, clock: FrozenClock, maria: Actor
) -> None:
    sign_in(site)
    clock.advance(minutes=ctx.settings.web_session_idle_minutes - 1)
    assert site.get("/").status_code == 200  # used: its idle time starts again
    clock.advance(minutes=ctx.settings.web_session_idle_minutes - 1)
    assert site.get("/").status_code == 200
    clock.advance(minutes=ctx.settings.web_session_idle_minutes)
    assert site.get("/").status_code == 303


def test_a_session_ends_after_its_whole_life_however_used(
    site: TestClient, ctx: Context, clock: FrozenClock, maria: Actor
) -> None:
    sign_in(site)
    step = timedelta(minutes=ctx.settings.web_session_idle_minutes // 2)
    lived = timedelta()
    while lived + step < timedelta(hours=ctx.settings.web_session_max_hours):
        clock.advance(step)
        lived += step
        assert site.get("/").status_code == 200
    clock.advance(step)
    assert site.get("/").status_code == 303


def test_a_deactivated_user_is_signed_out_and_cannot_sign_in(
    site: TestClient, ctx: Context, admin: Actor, maria: Actor
) -> None:
    sign_in(site)
    assert site.get("/").status_code == 200
    users.update_user(ctx, admin, "maria", active=False)
    assert site.get("/").status_code == 303
    users.update_user(ctx, admin, "maria", active=True)
    assert site.get("/").status_code == 303  # the old session does not come back
    users.update_user(ctx, admin, "maria", active=False)
    site.cookies.clear()
    assert sign_in(site).status_code == 401


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("/tasks?state=open", "/tasks?state=open"),
        ("/flows/welcome", "/flows/welcome"),
        ("//evil.example/x", "/"),
        ("/\\evil.example", "/"),
        ("/\t/evil.example", "/"),
        ("https://evil.example/", "/"),
        ("javascript:alert(1)", "/"),
        ("tasks", "/"),
        ("", "/"),
    ],
)
def test_next_is_a_local_path_only(given: str, kept: str) -> None:
    assert safe_next(given) == kept


def test_sign_in_goes_back_to_next_but_never_to_another_site(
    site: TestClient, maria: Actor
) -> None:
    page = site.get("/sign-in", params={"next": "//evil.example/"})
    assert 'name="next" value="/"' in page.text
    token = csrf_of(site)
    form = {
        "username": "maria",
        "password": "password123",
        "csrf_token": token,
        "next": "https://evil.example/",
    }
    assert site.post("/sign-in", data=form).headers["location"] == "/"


def test_a_page_sends_to_sign_in_and_back(site: TestClient, maria: Actor) -> None:
    answer = site.get("/")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/sign-in?next=/"
    # An htmx request is not redirected (the page would go, with what was typed in it): a 401
    # with the banner to show, and where to sign in when nothing was typed (app.js).
    htmx = site.get("/", headers={"HX-Request": "true", "HX-Current-URL": "http://testserver/"})
    assert htmx.status_code == 401 and "hx-redirect" not in htmx.headers
    assert htmx.headers["x-crmflow-sign-in"] == "/sign-in?next=/"


def test_unknown_pages_are_html_and_unknown_api_paths_stay_json(site: TestClient) -> None:
    page = site.get("/no-such-page")
    assert page.status_code == 404
    assert "text/html" in page.headers["content-type"]
    assert "Page not found" in page.text
    api = site.get("/api/no-such-thing")
    assert api.status_code == 404
    assert api.headers["content-type"].startswith("application/json")


def test_pages_carry_the_security_headers_and_the_api_does_not_change(
    site: TestClient,
) -> None:
    page = site.get("/sign-in")
    policy = page.headers["content-security-policy"]
    assert "default-src 'self'" in policy
    directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
    # Scripts: the server's files and the one inline import map, by its hash; never any inline.
    assert directives["script-src"].split() == ["'self'", directives["script-src"].split()[1]]
    assert directives["script-src"].split()[1].startswith("'sha256-")
    assert "frame-ancestors 'none'" in policy
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["referrer-policy"] == "same-origin"
    assert "<script>" not in page.text  # no inline script: the policy would block it
    assert "content-security-policy" not in site.get("/api/health").headers


def test_the_web_static_files_are_served(site: TestClient) -> None:
    answer = site.get("/static/web/app.css")
    assert answer.status_code == 200
    assert "text/css" in answer.headers["content-type"]


def test_odd_sign_in_input_gets_a_page_never_a_500(site: TestClient, maria: Actor) -> None:
    token = csrf_of(site)
    empty = site.post("/sign-in", data={"csrf_token": token})
    assert empty.status_code == 401
    assert "Wrong username or password" in empty.text
    long_name = site.post("/sign-in", data={"csrf_token": token, "username": "x" * 300})
    assert long_name.status_code == 422
    assert "username" in long_name.text
    as_file = site.post("/sign-in", files={"csrf_token": ("t.txt", token.encode())})
    assert as_file.status_code == 403  # a file is not the token
    site.cookies.set(SESSION_COOKIE, "z" * 5000)
    assert site.get("/").status_code == 303
    assert site.get("/sign-in", params={"next": "/" + "a" * 5000}).status_code == 200
