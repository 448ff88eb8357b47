"""Idle workers are told about new work when it commits, not by polling."""

from __future__ import annotations

import pytest

from crmflow.errors import InvalidInputError
from crmflow.services import records
from crmflow.services.context import Actor, Context
from crmflow.store.wakeups import on_work_committed


def test_a_committed_record_change_wakes_the_worker_and_a_refused_one_does_not(
    ctx: Context, admin: Actor
) -> None:
    woken: list[str] = []
    on_work_committed(ctx.engine, lambda: woken.append("wake"))
    records.create_record(ctx, admin, "contact", {"last_name": "Pop"})
    assert woken == ["wake"]
    with pytest.raises(InvalidInputError):
        records.create_record(ctx, admin, "contact", {"last_name": "Pop", "emial": "x"})
    records.list_records(ctx, "contact")  # reading is not work
    assert woken == ["wake"]
