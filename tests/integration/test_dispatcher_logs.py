"""The dispatcher's log lines about a message carry the keys of the run that wrote it, as the
worker's lines do (issue 14): `flow`, `version`, `enrollment`, `record`, `step`, read from the
outbox row; so do the lines other modules log while it handles the message."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from crmflow import logs
from crmflow.delivery.dispatcher import Dispatcher
from crmflow.services.context import Actor, Context
from tests.conftest import FrozenClock
from tests.integration.test_delivery_smtp import SmtpServer, _rows, _welcome, with_smtp


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    out = io.StringIO()
    logs.configure(level="DEBUG", fmt="json")
    root = logging.getLogger()
    [handler] = [h for h in root.handlers if h.get_name() == "crmflow-structlog"]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(out)
    try:
        yield out
    finally:
        root.removeHandler(handler)
        root.setLevel(logging.WARNING)


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    server = SmtpServer()
    server.start()
    yield server
    server.stop()


def _lines(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def _keys(line: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(line.get(k) for k in ("flow", "version", "enrollment", "record", "step"))


def test_a_failed_delivery_is_logged_with_the_keys_of_its_run(
    ctx: Context, admin: Actor, smtp: SmtpServer, json_logs: io.StringIO
) -> None:
    [rid] = _welcome(ctx, admin, "Claire")
    [row] = _rows(ctx)
    smtp.refuse = {"claire@example.org", "office@example.org", "archive@example.org"}
    assert Dispatcher(with_smtp(ctx, smtp.url)).run_once().failed == 1

    lines = _lines(json_logs)
    run = ("welcome", 1, row.enrollment_id, rid, "hello")
    [failed] = [line for line in lines if f"message {row.id} failed" in line["event"]]
    assert failed["level"] == "warning" and failed["logger"] == "crmflow.delivery"
    assert "RCPT TO refused: 550" in failed["event"]
    assert _keys(failed) == run
    # The refused addresses put on the suppression list, logged by another module
    # (delivery.suppression) while the dispatcher handled the message: the same keys.
    [bounced] = [line for line in lines if "hard bounce" in line["event"]]
    assert not bounced["event"].startswith("dispatcher ")
    assert _keys(bounced) == run
    # Every line that names the message carries them.
    about = [line for line in lines if f"message {row.id}" in line["event"]]
    assert len(about) >= 2
    assert all(_keys(line) == run for line in about)


def test_a_retried_delivery_is_logged_with_the_keys_of_its_run_and_the_next_one_alone(
    ctx: Context, admin: Actor, clock: FrozenClock, json_logs: io.StringIO
) -> None:
    claire, ana = _welcome(ctx, admin, "Claire", "Ana")
    first, second = _rows(ctx)
    down = with_smtp(ctx, SmtpServer().url)  # nothing listens on its port
    assert Dispatcher(down).run_once().retrying == 2

    lines = _lines(json_logs)
    retried = {
        row.id: [line for line in lines if f"message {row.id} retried at" in line["event"]]
        for row in (first, second)
    }
    assert [line["level"] for line in retried[first.id]] == ["info"]
    assert _keys(retried[first.id][0]) == ("welcome", 1, first.enrollment_id, claire, "hello")
    assert _keys(retried[second.id][0]) == ("welcome", 1, second.enrollment_id, ana, "hello")
    # A line logged after the messages were handled is about no run.
    logging.getLogger("crmflow.delivery").info("after the batch")
    [after] = [line for line in _lines(json_logs) if line["event"] == "after the batch"]
    assert _keys(after) == (None,) * 5
