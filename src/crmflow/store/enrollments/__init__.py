"""The enrollments (`enrollments`): the one place that writes the table, a module per concern.

- `claims`: due work taken in batches (`FOR UPDATE SKIP LOCKED` on PostgreSQL), a batch's rows
  read and locked, when the next one is due;
- `reference`: what a batch is moved against, read once per transaction (its flows and records);
- `entering`: records entering flows, one, a batch or a whole saved query's at a time (one
  `INSERT INTO enrollments ... SELECT`), and the past entries the entry rules judge a start by;
- `moves`: a batch's new states written in bulk (with their step runs, `store.step_runs`), the
  enrollments a record's change may move, what a resume looks at again and moves;
- `views`: what people see of them (a run, a record's runs, a flow's runs page and counts).

Every read and write of a batch is one statement (or one executemany), never one per enrollment.
The names below are importable from here, wherever they live (`from crmflow.store import
enrollments as repo; repo.lock(...)`).
"""

from __future__ import annotations

from crmflow.store.enrollments.claims import (
    due_ids,
    inside_ids,
    lock,
    next_due,
    notify_due,
    read_enrollments,
)
from crmflow.store.enrollments.entering import (
    RecordIds,
    count_ids,
    enter_set,
    insert_enrollment,
    insert_enrollments,
    insert_starts,
    past_entries,
    record_ids,
    selected_ids,
    test_recipients_of,
)
from crmflow.store.enrollments.moves import (
    enrollments_hearing,
    move_unentered,
    save,
    steps_on_other_versions,
    thaw_candidates,
)
from crmflow.store.enrollments.reference import FlowInfo, load_flows, load_records
from crmflow.store.enrollments.rows import RUNNING, RUNNING_FLOWS, EnrollmentRow
from crmflow.store.enrollments.views import (
    count_by_status_and_step,
    enrollment_with_flow_key,
    enrollments_ever,
    enrollments_of_record,
    inside_counts,
    position,
    runs_page,
)
from crmflow.store.outbox import insert_ignoring_duplicates  # moved; still reached from here
from crmflow.store.wakeups import NOTIFY_CHANNEL

__all__ = [
    "NOTIFY_CHANNEL",
    "RUNNING",
    "RUNNING_FLOWS",
    "EnrollmentRow",
    "FlowInfo",
    "RecordIds",
    "count_by_status_and_step",
    "count_ids",
    "due_ids",
    "enrollment_with_flow_key",
    "enrollments_ever",
    "enrollments_hearing",
    "enrollments_of_record",
    "enter_set",
    "insert_enrollment",
    "insert_enrollments",
    "insert_ignoring_duplicates",
    "insert_starts",
    "inside_counts",
    "inside_ids",
    "load_flows",
    "load_records",
    "lock",
    "move_unentered",
    "next_due",
    "notify_due",
    "past_entries",
    "position",
    "read_enrollments",
    "record_ids",
    "runs_page",
    "save",
    "selected_ids",
    "steps_on_other_versions",
    "test_recipients_of",
    "thaw_candidates",
]
