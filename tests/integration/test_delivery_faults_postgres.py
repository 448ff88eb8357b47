"""The delivery fault test on PostgreSQL: three `crmflow dispatch` processes, one of them
SIGKILLed four times, and the SMTP server killed for a few seconds, while 5,000 emails of a flow
go out; every email arrives, none twice outside the at-least-once window. The machinery and the
window rule are in test_delivery_faults.py; this file is apart so that the two long runs go to
different test workers."""

from __future__ import annotations

from pathlib import Path

import pytest

from crmflow.services.context import Context
from tests.integration.test_delivery_faults import _check, _prepare, _run_with_faults


@pytest.mark.slow
def test_postgres_three_dispatchers_killed_and_the_server_down_deliver_every_email_once(
    postgres_ctx: Context, tmp_path: Path
) -> None:
    expected = _prepare(postgres_ctx)
    report = _run_with_faults(postgres_ctx, tmp_path, dispatchers=3, kills=4)
    assert report.dispatcher_kills == 4
    _check(postgres_ctx, expected, report, dispatchers=3)
