"""Sign-in under attack: timing does not tell which usernames exist, and failed sign-ins are
throttled per username and per client address (429 with Retry-After), on both backends."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from crmflow.services import users
from crmflow.services.context import Actor, Context
from crmflow.services.throttle import SignInThrottle
from tests.conftest import FrozenClock

PASSWORD = "correct-horse-1"


def sign_in(client: TestClient, username: str, password: str) -> tuple[int, dict[str, object]]:
    answer = client.post("/api/auth/token", json={"username": username, "password": password})
    return answer.status_code, answer.json()


def add_user(ctx: Context, admin: Actor, username: str) -> None:
    users.create_user(ctx, admin, username=username, role="member", password=PASSWORD)


@pytest.mark.real_password_hash
def test_an_unknown_user_takes_as_long_as_a_wrong_password(
    ctx: Context, admin: Actor, client: TestClient, backend: str
) -> None:
    if backend != "sqlite":
        pytest.skip("the password check is the same code on both backends; timed on SQLite")
    ctx.settings.login_attempts = 1000  # this test times failures, it does not count them
    add_user(ctx, admin, "ana")
    sign_in(client, "nobody-at-all", "x")  # the dummy hash is made once, on first use
    unknown: list[float] = []
    wrong: list[float] = []
    # Interleaved, so that a busy machine slows both kinds alike; compared by their fastest
    # sample, since a shared machine only ever adds time. Without the dummy hash an unknown
    # user answers in milliseconds, against a tenth of a second or more for a wrong password.
    for attempt in range(8):
        for username, times in ((f"nobody-{attempt}", unknown), ("ana", wrong)):
            started = time.perf_counter()
            status, body = sign_in(client, username, "not-the-password")
            times.append(time.perf_counter() - started)
            assert status == 401, body
            assert "wrong username or password" in str(body["message"])
    ratio = min(unknown) / min(wrong)
    assert 0.6 < ratio < 1.67, (ratio, unknown, wrong)


@pytest.mark.real_password_hash
def test_every_failed_sign_in_checks_one_password_hash_of_the_same_cost(
    ctx: Context, admin: Actor, client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Unknown, deactivated and password-less users cost one argon2 check like a wrong password."""
    ctx.settings.login_attempts = 1000
    add_user(ctx, admin, "ana")
    add_user(ctx, admin, "gone")
    users.update_user(ctx, admin, "gone", active=False)
    users.create_user(ctx, admin, username="nopass", role="member")
    checked: list[str] = []

    def verify(password: str, stored: str) -> bool:
        checked.append(stored.rsplit("$", 2)[0])  # the algorithm and its cost parameters
        return False

    monkeypatch.setattr(users._password_hash, "verify", verify)
    for username in ("ana", "nobody", "gone", "nopass"):
        checked.clear()
        status, body = sign_in(client, username, PASSWORD)
        assert status == 401, (username, body)
        assert len(checked) == 1, (username, checked)
        assert checked[0].startswith("$argon2id$v=19$m=65536,t=3,p=4"), (username, checked)


def test_failed_sign_ins_lock_the_user_until_the_wait_is_over(
    ctx: Context, admin: Actor, client: TestClient, clock: FrozenClock
) -> None:
    ctx.settings.login_attempts = 2
    lockout = ctx.settings.login_lockout_seconds
    add_user(ctx, admin, "ana")
    assert sign_in(client, "ana", "guess-1")[0] == 401
    status, body = sign_in(client, "ana", "guess-2")
    assert status == 429, body  # the failure that reaches the limit starts the wait
    # While locked, even the right password is refused, and the answer says how long to wait.
    answer = client.post("/api/auth/token", json={"username": "ana", "password": PASSWORD})
    assert answer.status_code == 429
    assert answer.headers["Retry-After"] == str(lockout)
    assert answer.json()["retry_after"] == lockout
    assert "too many failed sign-ins for user 'ana'" in answer.json()["message"]
    assert f"{lockout} more seconds" in answer.json()["message"]

    clock.advance(seconds=lockout - 1)
    assert sign_in(client, "ana", PASSWORD)[0] == 429
    clock.advance(seconds=1)
    # Failures going on after a lockout lock again at once, for twice as long.
    status, body = sign_in(client, "ana", "guess-3")
    assert (status, body["retry_after"]) == (429, 2 * lockout), body
    clock.advance(seconds=2 * lockout)
    status, body = sign_in(client, "ana", PASSWORD)
    assert status == 200, body
    token = body["token"]
    assert client.get("/api/me", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    # A success forgets the user's failures: the next wrong password is a plain 401 again (from
    # another address: a success does not clear the failures of the address they came from).
    with TestClient(client.app, client=("198.51.100.4", 40000)) as elsewhere:
        assert sign_in(elsewhere, "ana", "guess-4")[0] == 401


def test_failed_sign_ins_from_one_address_lock_that_address_only(
    ctx: Context, admin: Actor, client: TestClient
) -> None:
    ctx.settings.login_attempts = 3
    add_user(ctx, admin, "ana")
    # Spraying one guess over many usernames never locks a username, but locks the address.
    statuses = [sign_in(client, f"user{i}", "123456")[0] for i in range(3)]
    assert statuses == [401, 401, 429]
    status, body = sign_in(client, "ana", PASSWORD)
    assert status == 429, body
    assert "too many failed sign-ins for address testclient" in str(body["message"])
    # Another address is not held up, and ana's own count was never touched.
    with TestClient(client.app, client=("203.0.113.7", 40000)) as elsewhere:
        status, body = sign_in(elsewhere, "ana", PASSWORD)
    assert status == 200, body


def test_the_throttle_stays_bounded_under_a_username_spray() -> None:
    throttle = SignInThrottle(max_keys=100)
    now = datetime(2026, 1, 1, tzinfo=UTC)
    lockout = timedelta(seconds=60)
    for i in range(5000):
        throttle.failed(now, f"spray{i}", f"10.0.{i // 250}.{i % 250}", attempts=5, lockout=lockout)
    assert len(throttle) <= 100
    # The most recent keys are the ones kept.
    for _ in range(5):
        throttle.failed(now, "target", None, attempts=5, lockout=lockout)
    locked = throttle.check(now, "target", None)
    assert locked is not None and locked.retry_after == 60
