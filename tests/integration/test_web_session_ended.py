"""A session that ends while a page is open: the page's htmx requests get a 401 with the banner
that says so (in place of the page's hidden `#session-ended`), never a redirect that would
take the page, and what was typed in it, away; `GET /session` gives a page the CSRF token of
the session signed in again (in another tab); a request without htmx is sent to sign in as
before."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from httpx import Response

from crmflow.services.context import Actor, Context
from crmflow.testing import FrozenClock
from crmflow.web import create_site
from tests.conftest import make_user
from tests.integration.test_web_sessions import csrf_of, sign_in

BANNER = re.compile(r'<div id="session-ended"[^>]*>')
PAGE = "http://testserver/flows/new/form?kind=manual"


@pytest.fixture
def site(ctx: Context) -> Iterator[TestClient]:
    with TestClient(create_site(ctx), follow_redirects=False) as client:
        yield client


@pytest.fixture
def maria(ctx: Context) -> Actor:
    return make_user(ctx, "maria", "admin")


def _expire(ctx: Context, clock: FrozenClock) -> None:
    clock.advance(timedelta(minutes=ctx.settings.web_session_idle_minutes, seconds=1))


def _assert_session_ended(answer: Response) -> None:
    assert answer.status_code == 401, answer.text
    assert "hx-redirect" not in answer.headers and "location" not in answer.headers
    assert answer.headers["hx-retarget"] == "#session-ended"
    assert answer.headers["hx-reswap"] == "outerHTML"
    # A page where nothing was typed goes to sign in, then back to the page (not the fragment).
    assert answer.headers["x-crmflow-sign-in"] == "/sign-in?next=/flows/new/form%3Fkind%3Dmanual"
    shown = BANNER.search(answer.text)
    assert shown is not None and "hidden" not in shown.group(0), answer.text
    assert "Your session has ended" in answer.text
    assert 'href="/sign-in?next=/signed-in" target="_blank"' in answer.text


def test_a_signed_in_page_carries_the_banner_hidden(site: TestClient, maria: Actor) -> None:
    sign_in(site)
    page = site.get("/flows/new/form")
    shown = BANNER.search(page.text)
    assert shown is not None and " hidden" in shown.group(0)
    assert 'action="/sign-out" class="inline-form" data-no-session-check' in page.text
    assert BANNER.search(site.get("/sign-in").text) is None  # signed out: no banner


def test_htmx_requests_of_an_ended_session_get_the_banner_not_a_redirect(
    site: TestClient, ctx: Context, clock: FrozenClock, maria: Actor
) -> None:
    sign_in(site)
    token = csrf_of(site, "/flows/new/form")
    htmx = {"HX-Request": "true", "HX-Current-URL": PAGE}
    form = {"name": "Thanks", "record_type": "contact", "trigger": "manual"}
    live = site.post("/flows/new/form/check", data=form, headers={**htmx, "X-CSRF-Token": token})
    assert live.status_code == 200  # live: the check answers
    _expire(ctx, clock)

    # A live check (a POST: its CSRF token was the ended session's), a fragment (a GET), and a
    # poll (the live checks' header) all get the banner.
    polled = {**htmx, "X-CSRF-Token": token, "X-Crmflow-Poll": "1"}
    _assert_session_ended(site.post("/flows/new/form/check", data=form, headers=polled))
    fields = site.get("/flows/new/form/trigger?trigger=manual", headers=htmx)
    _assert_session_ended(fields)
    _assert_session_ended(site.get("/session", headers=htmx))
    # Without htmx (a link, a form sent without JavaScript): the sign-in page, as before.
    plain = site.get("/flows/new/form")
    assert (plain.status_code, plain.headers["location"]) == (303, "/sign-in?next=/flows/new/form")
    # A stale token with a live session stays a CSRF refusal (nothing to sign in again for).
    sign_in(site)
    stale = site.post("/flows/new/form/check", data=form, headers={**htmx, "X-CSRF-Token": token})
    assert stale.status_code == 403 and "x-crmflow-sign-in" not in stale.headers


def test_session_gives_the_token_of_the_session_signed_in_again(
    site: TestClient, ctx: Context, clock: FrozenClock, maria: Actor
) -> None:
    sign_in(site)
    first = site.get("/session", headers={"HX-Request": "true"})
    assert first.status_code == 200 and first.headers["cache-control"] == "no-store"
    assert first.json() == {"user": "maria", "csrf_token": csrf_of(site, "/flows")}
    _expire(ctx, clock)
    assert site.get("/session", headers={"HX-Request": "true"}).status_code == 401

    assert sign_in(site).status_code == 303  # as in another tab: the same cookie jar
    again = site.get("/session", headers={"HX-Request": "true"}).json()
    assert again["user"] == "maria" and again["csrf_token"] != first.json()["csrf_token"]
    # The new token is the one a save must carry: the form sent with it is saved.
    form = {"name": "Thanks", "record_type": "contact", "trigger": "manual"}
    saved = site.post("/flows/new/form", data={**form, "csrf_token": again["csrf_token"]})
    assert (saved.status_code, saved.headers["location"]) == (303, "/flows/thanks/form")
    back = site.get("/signed-in")
    assert back.status_code == 200 and "go back to its tab" in back.text
