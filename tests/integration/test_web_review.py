"""Review of the web pages as an attacker and a careless user (issue 12): each test here failed on
a bug the review found. Ids and page cursors beyond the database's range, and digits int() does
not read ('²', thousands of them), are refused in plain words or ignored, never a 500."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from crmflow.services import flows, web_sessions
from crmflow.services.context import Context
from crmflow.services.web_sessions import SESSION_COOKIE
from crmflow.web import create_site
from tests.conftest import make_user

HUGE = "99999999999999999999999"  # beyond 64 bits: names no row, and PostgreSQL cannot bind it

FLOW = """\
schema_version: 1
key: hello
name: Hello
record_type: contact
controller: system
triggers: [{type: manual}]
steps:
  - key: greet
    actions:
      - type: send_email
        subject: "Hello"
        body: "Hi"
"""


@pytest.fixture
def site(ctx: Context) -> Iterator[tuple[TestClient, str]]:
    """An admin's browser: the client and the session's CSRF token."""
    alice = make_user(ctx, "alice", "admin")
    flows.create_flow(ctx, alice, FLOW)
    with TestClient(
        create_site(ctx), raise_server_exceptions=False, follow_redirects=False
    ) as client:
        signed = web_sessions.sign_in(ctx, "alice", "password123")
        client.cookies.set(SESSION_COOKIE, signed.token)
        yield client, signed.session.csrf_token


def test_pages_given_an_id_or_cursor_beyond_64_bits_refuse_it_in_words(
    site: tuple[TestClient, str],
) -> None:
    client, _ = site
    for path in [
        f"/tasks?after={HUGE}",
        f"/tasks/{HUGE}",
        f"/inbox?after={HUGE}",
        f"/messages?before={HUGE}",
        f"/messages/{HUGE}",
        f"/admin?after={HUGE}",
        f"/admin/tokens?after={HUGE}",
    ]:
        page = client.get(path)
        assert page.status_code == 422, (path, page.status_code)
        assert "out of range" in page.text, path


def test_forms_posted_with_an_id_beyond_64_bits_are_refused_in_words(
    site: tuple[TestClient, str],
) -> None:
    client, token = site
    for path, form in [
        (f"/tasks/{HUGE}/start", {}),
        (f"/tasks/{HUGE}/complete", {}),
        (f"/tasks/{HUGE}/comments", {"text": "hello"}),
        (f"/tasks/{HUGE}/reassign", {"to_user": "alice"}),
        (f"/tasks/{HUGE}/decide", {"button": "validate"}),
        (f"/inbox/{HUGE}/read", {}),
        ("/admin/tokens/revoke", {"token_id": HUGE}),
    ]:
        answer = client.post(path, data={**form, "csrf_token": token})
        assert answer.status_code == 422, (path, answer.status_code)
        assert "out of range" in answer.text, path


def test_a_record_search_for_a_superscript_digit_is_a_search_not_a_500(
    site: tuple[TestClient, str],
) -> None:
    client, _ = site
    page = client.get("/records", params={"type": "contact", "q": "²"})
    assert page.status_code == 200
    assert "The server failed" not in page.text


def test_the_editor_ignores_a_revision_int_cannot_read(site: tuple[TestClient, str]) -> None:
    """The revision field is the page's own; a forged one ('²', 5,000 digits) is no 500: the
    flow is saved as without one (the editor's check of a stale revision is for honest pages)."""
    client, token = site
    for revision in ("²", "1" * 5000):
        answer = client.post(
            "/flows/hello/edit",
            data={"text": FLOW.replace("Hi", "Hi there"), "revision": revision}
            | {"csrf_token": token},
        )
        assert answer.status_code in (303, 409, 412, 422), (revision[:5], answer.status_code)
        assert "The server failed" not in answer.text


def test_a_simulation_given_a_superscript_digit_says_it_is_no_number(
    site: tuple[TestClient, str],
) -> None:
    client, token = site
    for form in (
        {"flow": "hello", "record_id": "²", "days": "30"},
        {"flow": "hello", "record_text": "first_name: Ann", "days": "²"},
    ):
        answer = client.post("/simulate", data={**form, "csrf_token": token})
        assert answer.status_code == 422, (form, answer.status_code)
        assert "&#39;²&#39; is not a" in answer.text


def test_signing_in_with_a_nul_in_the_username_is_refused_in_words(ctx: Context) -> None:
    """Anyone may post the sign-in form: a NUL character (which PostgreSQL refuses in a query)
    is refused as every form's NUL is, not a 500."""
    with TestClient(create_site(ctx), raise_server_exceptions=False) as client:
        form = client.get("/sign-in")
        token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
        assert token is not None
        answer = client.post(
            "/sign-in",
            data={"username": "a\x00b", "password": "secret", "csrf_token": token.group(1)},
        )
    assert answer.status_code == 422
    assert "username: contains a NUL character" in answer.text


def test_a_nul_character_in_a_form_field_is_refused_in_words(
    site: tuple[TestClient, str], backend: str
) -> None:
    if backend != "postgresql":
        pytest.skip("SQLite stores a NUL character")
    client, token = site
    nul = "a\x00b"
    for path, form in [
        ("/admin/groups", {"name": nul}),
        ("/admin/tokens", {"username": "alice", "name": nul}),
        ("/records/1/enter", {"flow": nul}),
        ("/simulate", {"flow": nul, "record_text": "first_name: Ann", "days": "3"}),
        ("/queries/new", {"name": nul, "record_type": "contact", "field": "first_name"}),
    ]:
        answer = client.post(path, data={**form, "csrf_token": token})
        assert answer.status_code == 422, (path, answer.status_code)
        assert "contains a NUL character" in answer.text, path
