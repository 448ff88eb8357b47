"""Test mode, where outbox rows are written: the rows of runs in test mode are rewritten for
the flow's test recipients and marked `test` (`engine.test_mode` says how), whoever writes them
(a step's messages, an appointment's invitation and its later versions)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from crmflow.engine.test_mode import rewritten_for_test
from crmflow.store.database import Connection
from crmflow.store.enrollments import test_recipients_of

__all__ = ["as_tests"]


def as_tests(conn: Connection, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The outbox rows, those of runs in test mode rewritten for their test recipients and
    marked `test`; one that has no test recipient of its kind is written failed, saying why,
    and never sent. One lookup of the rows' runs (most runs are not tests)."""
    tests = test_recipients_of(conn, {r["enrollment_id"] for r in rows}) if rows else {}
    if not tests:
        return list(rows)
    out: list[dict[str, Any]] = []
    for row in rows:
        recipients = tests.get(row["enrollment_id"])
        if recipients is None:  # one executemany needs the same columns in every row
            out.append({**row, "test": False, "last_error": None})
            continue
        for suffix, payload, why in rewritten_for_test(row["kind"], row["payload"], recipients):
            key = row["idempotency_key"] + suffix
            written: dict[str, Any] = {"payload": payload, "last_error": None}
            if payload is None:
                written = {"status": "failed", "last_error": why}
            out.append({**row, "idempotency_key": key, "test": True, **written})
    return out
