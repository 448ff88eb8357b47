"""`crmflow archive export --before DATE FILE`: what pruning would remove of the history older
than DATE, written as JSON lines (one object per row: its `kind` and the `row`), streamed from
one read snapshot so that memory stays flat whatever the number of rows (docs/retention.md).

Kinds (those whose retention setting is 0, kept forever, are left out): `step_run` (of runs
that ended before DATE), `message` (outbox messages that are over, of those runs),
`record_change` (before DATE, and already read by the change feed and every paused flow),
`not_entered`, `webhook_receipt`, `notification`.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import IO, Any

from crmflow.errors import InvalidInputError, Problem
from crmflow.services.context import Context
from crmflow.services.retention import cutoffs
from crmflow.store import retention as store

__all__ = ["ExportResult", "export_history", "parse_before"]

_CHUNK = 1000  # rows fetched at a time from the database


@dataclass(frozen=True)
class ExportResult:
    before: datetime
    rows: dict[str, int]  # per kind written
    skipped: list[str]  # kinds kept forever by their setting, not written

    @property
    def total(self) -> int:
        return sum(self.rows.values())


def parse_before(text: str, ctx: Context) -> datetime:
    """DATE as given to --before: a date (midnight in the organisation's time zone) or an ISO
    date and time (without a zone: the organisation's)."""
    value = text.strip()
    try:
        if len(value) == 10:
            moment = datetime.combine(date.fromisoformat(value), time(), tzinfo=ctx.settings.zone)
        else:
            moment = datetime.fromisoformat(value)
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=ctx.settings.zone)
    except ValueError:
        raise InvalidInputError(
            "the archive export",
            [
                Problem(
                    "--before",
                    f"{text!r} is not a date",
                    hint="e.g. 2026-01-01 or 2026-01-01T12:00:00+00:00",
                )
            ],
        ) from None
    return moment.astimezone(UTC)


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    raise TypeError(f"{type(value).__name__} is not JSON")


def export_history(ctx: Context, before: datetime, out: IO[str]) -> ExportResult:
    """Write to `out` each row pruning would remove of the history older than `before`, one
    JSON object a line: {"kind": ..., "row": {column: value, ...}} (times in ISO 8601, bytes
    in base64)."""
    kept = cutoffs(ctx.settings, before)
    rows: dict[str, int] = {}
    skipped: list[str] = []
    with store.snapshot(ctx.engine) as conn:
        for retention_kind, kind in store.EXPORT_KINDS.items():
            if kept[retention_kind] is None:
                skipped.append(kind)
                continue
            count = 0
            for row in store.history_rows(conn, retention_kind, before, chunk=_CHUNK):
                out.write(
                    json.dumps({"kind": kind, "row": row}, default=_plain, ensure_ascii=False)
                )
                out.write("\n")
                count += 1
            rows[kind] = count
    return ExportResult(before, rows, skipped)
