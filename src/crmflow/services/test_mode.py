"""Test mode, where outbox rows are written: the rows of runs in test mode are rewritten for
the flow's test recipients and marked `test` (`engine.test_mode` says how), whoever writes them
(a step's messages, an appointment's invitation and its later versions).

A run is in test mode when it was started so (`crmflow runs start --test`, the API's
`test: true`: its own list of recipients, kept on the run), or while its flow is: an admin
switches a whole flow to test mode (`services.flow_test_mode`: the flow's page, `PUT
/api/flows/{key}/test-mode`) and from then on every message any of its runs writes goes to the
flow's `test_recipients` as its current version lists them, until the switch is turned off.
Messages already written are not changed. Who switched it and when is kept, and written in the
flow's history.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from crmflow.engine.test_mode import rewritten_for_test
from crmflow.store.database import Connection
from crmflow.store.enrollments import test_recipients_of
from crmflow.store.flow_test_modes import test_flows_of

__all__ = ["as_tests"]


def as_tests(conn: Connection, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The outbox rows, those of runs in test mode (their own, or their flow's) rewritten for
    their test recipients and marked `test`; one that has no test recipient of its kind is
    written failed, saying why, and never sent. Two indexed lookups of the rows' runs (most
    runs are not tests, and most flows are not in test mode)."""
    if not rows:
        return []
    ids = {r["enrollment_id"] for r in rows}
    tests = test_recipients_of(conn, ids)
    in_test_flows, flow_recipients = test_flows_of(conn, ids)
    for enrollment_id, flow_id in in_test_flows.items():
        tests.setdefault(enrollment_id, flow_recipients.get(flow_id, []))
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
