"""Errors on web routes are pages in plain words (404, 403 saying who may, 400/422 with the
problems, 500 without a trace), while the API's routes keep their JSON answers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from crmflow.errors import InvalidInputError, PermissionDeniedError, Problem
from crmflow.services.context import Context
from crmflow.web import create_site
from crmflow.web.auth import web_router


def _site_with_failing_pages(ctx: Context) -> FastAPI:
    app = create_site(ctx)
    router = web_router()

    @router.get("/test-denied")
    def denied() -> None:
        raise PermissionDeniedError("only the flow's owner or an admin may archive it")

    @router.get("/test-refused")
    def refused() -> None:
        problem = Problem("steps[1].wait", "is not a duration", hint="write e.g. 3d or 2h")
        raise InvalidInputError("the flow", [problem])

    @router.get("/test-bug")
    def bug() -> None:
        raise RuntimeError("secret internals /etc/passwd")

    @router.get("/test-number")
    def number(n: int) -> dict[str, int]:
        return {"n": n}

    app.include_router(router)
    return app


@pytest.fixture
def client(ctx: Context) -> Iterator[TestClient]:
    app = _site_with_failing_pages(ctx)
    with TestClient(app, raise_server_exceptions=False, follow_redirects=False) as test_client:
        yield test_client


def test_a_refused_permission_is_a_403_page_saying_who_may(client: TestClient) -> None:
    page = client.get("/test-denied")
    assert page.status_code == 403
    assert "text/html" in page.headers["content-type"]
    assert "You may not do this" in page.text
    assert "only the flow&#39;s owner or an admin may archive it" in page.text


def test_refused_input_is_a_page_listing_each_problem(client: TestClient) -> None:
    page = client.get("/test-refused")
    assert page.status_code == 422
    assert "the flow was refused" in page.text
    assert "steps[1].wait: is not a duration (write e.g. 3d or 2h)" in page.text


def test_a_bad_query_parameter_is_a_422_page(client: TestClient) -> None:
    page = client.get("/test-number", params={"n": "many"})
    assert page.status_code == 422
    assert "text/html" in page.headers["content-type"]
    assert "n: Input should be a valid integer" in page.text


def test_a_bug_is_a_500_page_without_a_trace(client: TestClient) -> None:
    page = client.get("/test-bug")
    assert page.status_code == 500
    assert "text/html" in page.headers["content-type"]
    assert "The server failed on this request" in page.text
    assert "secret internals" not in page.text
    assert "Traceback" not in page.text and "RuntimeError" not in page.text


def test_api_errors_stay_json(client: TestClient) -> None:
    answer = client.get("/api/me")
    assert answer.status_code == 401
    assert answer.json()["error"] == "AuthenticationError"
    refused = client.get("/api/tasks", params={"limit": "x"}, headers={"Authorization": "x"})
    assert refused.headers["content-type"].startswith("application/json")


def test_a_wrong_method_on_a_page_is_a_page(client: TestClient) -> None:
    page = client.put("/sign-in")
    # The CSRF check runs first: no token, refused; never a 500 or a JSON body.
    assert page.status_code in (403, 405)
    assert "text/html" in page.headers["content-type"]
