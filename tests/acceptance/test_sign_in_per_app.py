"""The count of failed sign-ins belongs to the app that `create_app` made: a server process
counts its own, and two apps in one process (tests, or an embedding) do not share a lockout."""

from __future__ import annotations

from fastapi.testclient import TestClient

from crmflow.api.app import create_app
from crmflow.services import users
from crmflow.services.context import Actor, Context

PASSWORD = "correct-horse-1"


def test_each_app_counts_its_own_failed_sign_ins(ctx: Context, admin: Actor) -> None:
    ctx.settings.login_attempts = 2
    users.create_user(ctx, admin, username="ana", role="member", password=PASSWORD)
    wrong = {"username": "ana", "password": "not-it"}
    right = {"username": "ana", "password": PASSWORD}
    with TestClient(create_app(ctx)) as first, TestClient(create_app(ctx)) as second:
        assert first.post("/api/auth/token", json=wrong).status_code == 401
        assert first.post("/api/auth/token", json=wrong).status_code == 429  # the limit: locked
        locked = first.post("/api/auth/token", json=right)
        assert locked.status_code == 429, locked.text
        assert int(locked.headers["Retry-After"]) >= 1
        # The other app never saw those failures: the right password signs in.
        assert second.post("/api/auth/token", json=right).status_code == 200
    # A new app (a restarted server) starts with no count.
    with TestClient(create_app(ctx)) as restarted:
        assert restarted.post("/api/auth/token", json=right).status_code == 200
