"""A webhook's Retry-After header as the delivery reads it: seconds or an HTTP date, bounded;
anything else (digits of another kind included) is no header, never an error in the sender."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from crmflow.delivery.http import retry_after
from crmflow.settings import Settings

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("header", "wait"),
    [
        ("120", timedelta(seconds=120)),
        ("Mon, 02 Mar 2026 09:05:00 GMT", timedelta(minutes=5)),
        ("²", None),
        ("①", None),
        ("soon", None),
        ("", None),
    ],
)
def test_retry_after_reads_seconds_or_a_date(header: str, wait: timedelta | None) -> None:
    assert retry_after(header, NOW, Settings()) == wait
