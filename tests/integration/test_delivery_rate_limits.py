"""Rate limits per channel and per destination domain (CRMFLOW_RATE_LIMIT_EMAIL,
CRMFLOW_RATE_LIMIT_DOMAINS), at a frozen clock: a message over a limit is not sent and not
failed but put back pending, its attempt not counted, due at its turn; the messages put back
are spread at the limit's pace and go at their turn; the dispatcher threads of a process share
the limits; a bad setting is refused saying how to write it."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from pydantic import ValidationError

from crmflow.delivery.dispatcher import Dispatcher
from crmflow.delivery.rate_limits import RateLimiter, shared_limiter
from crmflow.engine.commands import EmailPayload, message_id
from crmflow.services.context import Context
from crmflow.settings import Settings
from crmflow.store.outbox import insert_ignoring_duplicates
from crmflow.store.schema import outbox
from tests.conftest import FrozenClock
from tests.integration.test_delivery_smtp import SmtpServer, with_smtp


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    server = SmtpServer()
    server.start()
    yield server
    server.stop()


def _emails(ctx: Context, *addresses: str) -> None:
    now = ctx.now()
    rows: list[dict[str, Any]] = []
    for n, to in enumerate(addresses):
        key = f"news:{n}"
        payload = EmailPayload(message_id=message_id(key), to=(to,), subject=key, body="Hi")
        rows.append(
            {
                "enrollment_id": 1,
                "step_key": "mail",
                "step_run": 1,
                "idempotency_key": key,
                "kind": "email",
                "payload": payload.model_dump(mode="json"),
                "status": "pending",
                "not_before": now,
                "attempts": 0,
                "created_at": now,
            }
        )
    with ctx.engine.begin() as conn:
        insert_ignoring_duplicates(conn, rows)


def _rows(ctx: Context) -> list[Any]:
    with ctx.engine.connect() as conn:
        return list(conn.execute(sa.select(outbox).order_by(outbox.c.id)))


def _limited(ctx: Context, url: str, **limits: Any) -> tuple[Context, RateLimiter]:
    limited = with_smtp(ctx, url, **limits)
    return limited, RateLimiter(limited.settings)  # a fresh one: no slots taken by other tests


def test_emails_over_the_channel_limit_wait_pending_for_their_turn(
    ctx: Context, smtp: SmtpServer, clock: FrozenClock
) -> None:
    _emails(ctx, *(f"reader{n}@example.org" for n in range(10)))
    limited, limiter = _limited(ctx, smtp.url, rate_limit_email="3/s")
    start = ctx.now()
    result = Dispatcher(limited, limiter=limiter).run_once()
    assert (result.claimed, result.delivered, result.deferred) == (10, 3, 7)
    assert len(smtp.received) == 3
    rows = _rows(ctx)
    waiting = [r for r in rows if r.status != "delivered"]
    # Put back as they were: pending, no attempt counted, nothing failed, no error.
    assert {(r.status, r.attempts, r.last_error, r.lease_owner) for r in waiting} == {
        ("pending", 0, None, None)
    }
    # Spread at the limit's pace: one every third of a second after the first burst of 3.
    assert [round((r.not_before - start).total_seconds(), 3) for r in waiting] == [
        round(n / 3, 3) for n in range(1, 8)
    ]

    clock.advance(seconds=1)  # the turns of three of them have come: they go, on their slots
    assert Dispatcher(limited, limiter=limiter).run_once().delivered == 3
    clock.advance(seconds=2)
    assert Dispatcher(limited, limiter=limiter).run_once().delivered == 4
    assert Counter(r.status for r in _rows(ctx)) == {"delivered": 10}
    assert {r.attempts for r in _rows(ctx)} == {1}
    assert len(smtp.received) == len(set(smtp.message_ids())) == 10


def test_a_domain_limit_holds_back_that_domain_only(
    ctx: Context, smtp: SmtpServer, clock: FrozenClock
) -> None:
    _emails(ctx, *(["a@gmail.com", "b@GMAIL.com", "c@gmail.com"] + ["d@example.org"] * 3))
    limited, limiter = _limited(ctx, smtp.url, rate_limit_domains="gmail.com=1/m")
    result = Dispatcher(limited, limiter=limiter).run_once()
    assert (result.delivered, result.deferred) == (4, 2)
    sent = sorted(r.rcpt_tos[0].lower() for r in smtp.received)
    assert sent == ["a@gmail.com", "d@example.org", "d@example.org", "d@example.org"]
    start = ctx.now()
    assert [r.not_before - start for r in _rows(ctx) if r.status == "pending"] == [
        timedelta(minutes=1),
        timedelta(minutes=2),
    ]
    clock.advance(minutes=1)
    assert Dispatcher(limited, limiter=limiter).run_once().delivered == 1


def test_a_retry_over_the_limit_stays_a_retry_and_keeps_its_error(
    ctx: Context, smtp: SmtpServer, clock: FrozenClock
) -> None:
    _emails(ctx, "a@example.org", "b@example.org")
    smtp.fail_data = 2
    limited, limiter = _limited(ctx, smtp.url, rate_limit_email="1/s")
    unlimited = with_smtp(ctx, smtp.url)
    assert Dispatcher(unlimited).run_once().retrying == 2
    clock.advance(hours=1)  # both retries due
    assert Dispatcher(limited, limiter=limiter).run_once().deferred == 1
    [waiting] = [r for r in _rows(ctx) if r.status != "delivered"]
    assert (waiting.status, waiting.attempts) == ("retrying", 1)
    assert waiting.last_error == "DATA refused: 451 4.3.0 try again later"
    assert waiting.next_attempt_at == ctx.now() + timedelta(seconds=1)


def test_dispatcher_threads_of_a_process_share_one_limiter_and_processes_a_share() -> None:
    settings = Settings(rate_limit_email="100/s", rate_limit_processes=4)
    assert shared_limiter(settings) is shared_limiter(settings.model_copy())
    assert RateLimiter(settings).rates["email"].count == 25


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("rate_limit_email", "fast", "write a number of messages per s, m or h"),
        ("rate_limit_sms", "10/day", "write a number of messages per s, m or h"),
        ("rate_limit_domains", "gmail.com:20/s", "is not domain=rate, e.g. gmail.com=20/s"),
        ("rate_limit_domains", "gmail.com=0/s", "write a number of messages per s, m or h"),
    ],
)
def test_a_bad_rate_limit_setting_is_refused_saying_how_to_write_it(
    name: str, value: str, says: str
) -> None:
    with pytest.raises(ValidationError, match=says):
        Settings.model_validate({name: value})
