"""Records entering flows through their triggers, and why they did not.

- **Record changes** (`change_feed.ingest_changes`, `record_changes`): the feed of
  `record_changes` is read after the cursor `feed_cursors['record_changes']`, a batch at a time.
  Each change is matched against the triggers of the flows of its record type (created /
  updated / deleted / field_changed / status_changed); the records that may enter do (their
  first steps run in the same transaction, through `move_batch`, as a manual start does), and
  every record that matched a trigger but did not enter leaves an `entry_decisions` row with the
  reason. The same batch wakes the enrollments of the changed records (`RecordChanged`: wait
  steps, date timings). The cursor moves in the transaction that did the work, so a crash redoes
  the batch or none of it. A batch stops once settings.batch_time_limit_ms has passed; a flow
  whose handling raises is marked failing alone while the other flows go on (`change_feed`).
- **Start lists** (`start_lists.enter_start_lists`): when a flow starts, its saved queries'
  records enter with one `INSERT INTO enrollments ... SELECT`; the worker runs their first steps.
- **Schedules and dates** (`schedules.fire_due_triggers`): `trigger_schedules` holds the next
  run of each `schedule` and `date_reached` trigger of every active flow; each run enters the
  records the trigger selects then, set-based, and sets the next run.
- **Why not** (`not_entered.entry_decisions_for`): the reasons, per flow or per record.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from datetime import datetime

from crmflow.services.context import Context
from crmflow.services.triggers.change_feed import FEED, ingest_changes
from crmflow.services.triggers.not_entered import MAX_DECISIONS, NotEntered, entry_decisions_for
from crmflow.services.triggers.schedules import fire_due_triggers
from crmflow.services.triggers.start_lists import enter_start_lists
from crmflow.store.database import connection_lost

__all__ = [
    "FEED",
    "MAX_DECISIONS",
    "TRIGGER_PARTS",
    "NotEntered",
    "enter_start_lists",
    "entry_decisions_for",
    "fire_due_triggers",
    "ingest_changes",
    "process_triggers",
]

log = logging.getLogger("crmflow.triggers")


TRIGGER_PARTS = ("change feed", "schedules")


def process_triggers(
    ctx: Context,
    *,
    now: datetime | None = None,
    skip: Collection[str] = (),
    on_error: Callable[[str, Exception], None] | None = None,
) -> int:
    """Everything triggers have to do at `now`: the change feed, then schedules and dates.
    How many changes and timed triggers were handled (0: nothing to do). The worker's hook.

    Each part runs on its own: one that raises does not keep the other from running. A timed
    trigger that fails is marked failing by `fire_due_triggers` itself, a flow whose handling of
    changes fails by `ingest_changes` (the others go on); what reaches here is a part that failed
    whole (the feed's cursor, the database, the schedules' bookkeeping). It
    is passed to `on_error` (the worker backs the part off and reports it), or logged. `skip`:
    parts (of TRIGGER_PARTS) that wait for their retry."""
    at = now or ctx.now()
    parts: tuple[tuple[str, Callable[..., int]], ...] = (
        ("change feed", ingest_changes),
        ("schedules", fire_due_triggers),
    )
    handled = 0
    for name, part in parts:
        if name in skip:
            continue
        try:
            handled += part(ctx, now=at)
        except Exception as exc:
            if connection_lost(exc):
                raise  # the database went away: nothing else will work either
            if on_error is None:
                log.exception("triggers: the %s failed: %s", name, exc)
            else:
                on_error(name, exc)
    return handled
