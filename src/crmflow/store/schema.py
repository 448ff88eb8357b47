"""The tables. Every change here needs an Alembic migration in `store/migrations/versions/`.

Hot tables that the engine will write at scale (records' change events, enrollments and, later,
due work, outbox and history) carry the record or enrollment id as their distribution key so that
PostgreSQL can later be sharded by it (DESIGN principle 5).
"""

from __future__ import annotations

import sqlalchemy as sa

from crmflow.store.types import ID, JSONDoc, UTCDateTime

__all__ = [
    "api_tokens",
    "approval_link_uses",
    "deadline_notices",
    "email_templates",
    "enrollments",
    "entry_decisions",
    "feed_cursors",
    "flow_history_counts",
    "flow_members",
    "flow_status_changes",
    "flow_test_modes",
    "flow_versions",
    "flows",
    "group_members",
    "groups",
    "invitations",
    "jobs",
    "metadata",
    "notification_reads",
    "notifications",
    "outbox",
    "record_changes",
    "record_files",
    "record_group_members",
    "record_groups",
    "record_history",
    "record_types",
    "records",
    "run_summaries",
    "saved_queries",
    "signing_keys",
    "step_runs",
    "suppressions",
    "task_events",
    "tasks",
    "trigger_failures",
    "trigger_schedules",
    "users",
    "web_sessions",
    "webhook_receipts",
    "worker_heartbeats",
]

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

users = sa.Table(
    "users",
    metadata,
    sa.Column("id", ID, primary_key=True, autoincrement=True),
    sa.Column("username", sa.String(64), nullable=False, unique=True),
    sa.Column("display_name", sa.String(200), nullable=False),
    sa.Column("email", sa.String(320)),
    sa.Column("role", sa.String(16), nullable=False),  # admin | manager | member
    sa.Column("password_hash", sa.String(255)),
    sa.Column("active", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("created_at", UTCDateTime, nullable=False),
    # The user's manager (a responsibility `manager_of` asks them); never the user themselves
    # and never a cycle (services.users checks both).
    sa.Column("manager_id", ID, sa.ForeignKey("users.id"), nullable=True),
)

groups = sa.Table(
    "groups",
    metadata,
    sa.Column("id", ID, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(100), nullable=False, unique=True),
    sa.Column("description", sa.Text, nullable=False, server_default=""),
    sa.Column("created_at", UTCDateTime, nullable=False),
)

group_members = sa.Table(
    "group_members",
    metadata,
    sa.Column("group_id", ID, sa.ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("user_id", ID, sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
)

api_tokens = sa.Table(
    "api_tokens",
    metadata,
    sa.Column("id", ID, primary_key=True, autoincrement=True),
    sa.Column("user_id", ID, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    sa.Column("name", sa.String(100), nullable=False),
    # SHA-256 of the token: tokens are long random strings, so a fast hash is enough and the
    # clear token is never stored.
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("last_used_at", UTCDateTime),
    sa.Column("revoked_at", UTCDateTime),
)

# The web application's sessions (crmflow.web): SHA-256 of the cookie's random token, as for
# API tokens; `created_at` bounds a session's whole life, `last_seen_at` its idle time.
web_sessions = sa.Table(
    "web_sessions",
    metadata,
    sa.Column("id", ID, primary_key=True, autoincrement=True),
    sa.Column("user_id", ID, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("last_seen_at", UTCDateTime, nullable=False),
    sa.Index("ix_web_sessions_user_id", "user_id"),
)

record_types = sa.Table(
    "record_types",
    metadata,
    sa.Column("key", sa.String(63), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("builtin", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("fields", JSONDoc, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)

records = sa.Table(
    "records",
    metadata,
    sa.Column("id", ID, primary_key=True, autoincrement=True),
    sa.Column("type", sa.String(63), sa.ForeignKey("record_types.key"), nullable=False),
    sa.Column("owner_id", ID, sa.ForeignKey("users.id"), nullable=True),
    sa.Column("data", JSONDoc, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    # Counts the changes to the row: If-Match / --if-version compare it (optimistic concurrency).
    sa.Column("version", sa.Integer, nullable=False, server_default="1"),
    # The id an existing CRM knows the record by (sync, upserting imports): unique per type.
    sa.Column("external_id", sa.String(255), nullable=True),
    sa.Index("ix_records_type_id", "type", "id"),
    sa.Index(
        "ux_records_type_external_id",
        "type",
        "external_id",
        unique=True,
        sqlite_where=sa.text("external_id IS NOT NULL"),
        postgresql_where=sa.text("external_id IS NOT NULL"),
    ),
)

record_changes = sa.Table(
    "record_changes",
    metadata,
    sa.Column("id", ID, primary_key=True, autoincrement=True),
    sa.Column("record_id", ID, nullable=False),  # no FK: the event outlives a deleted record
    sa.Column("record_type", sa.String(63), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),  # created | updated | deleted
    sa.Column("before", JSONDoc),
    sa.Column("after", JSONDoc),
    sa.Column("actor_id", ID, sa.ForeignKey("users.id"), nullable=True),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Index("ix_record_changes_record", "record_id", "id"),
)

saved_queries = sa.Table(
    "saved_queries",
    metadata,
    sa.Column("id", ID, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(100), nullable=False, unique=True),
    sa.Column("record_type", sa.String(63), sa.ForeignKey("record_types.key"), nullable=False),
    sa.Column("description", sa.Text, nullable=False, server_default=""),
    sa.Column("filter", JSONDoc, nullable=False),
    sa.Column("created_by", ID, sa.ForeignKey("users.id"), nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    # Counts the changes to the row: If-Match / --if-version compare it (optimistic concurrency).
    sa.Column("version", sa.Integer, nullable=False, server_default="1"),
)

flows = sa.Table(
    "flows",
    metadata,
    sa.Column("id", ID, primary_key=True, autoincrement=True),
    sa.Column("key", sa.String(100), nullable=False, unique=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("record_type", sa.String(63), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # draft|active|paused|draining|archived
    sa.Column("current_version", sa.Integer, nullable=False),
    sa.Column("owner_id", ID, sa.ForeignKey("users.id"), nullable=True),
    sa.Column("visibility", sa.String(16), nullable=False),  # public | private
    sa.Column("start_at", UTCDateTime),
    sa.Column("archive_at", UTCDateTime),
    sa.Column("started_at", UTCDateTime),  # first time it became active; never cleared
    sa.Column("paused_at", UTCDateTime),  # when the current pause began (catch-up on resume)
    # The change feed's position when the flow froze: the changes after it, up to the feed's
    # position at the resume, are those the frozen flow did not hear (services.lifecycle).
    sa.Column("paused_feed_position", sa.BigInteger),
    sa.Column("created_by", ID, sa.ForeignKey("users.id"), nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    # Counts the changes to the flow row (current_version names the definition's version).
    sa.Column("revision", sa.Integer, nullable=False, server_default="1"),
)

flow_versions = sa.Table(
    "flow_versions",
    metadata,
    sa.Column("flow_id", ID, sa.ForeignKey("flows.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("document", JSONDoc, nullable=False),  # the validated definition, as JSON
    sa.Column("source", sa.Text, nullable=False),  # the text the user gave (YAML or JSON)
    sa.Column("source_format", sa.String(8), nullable=False),  # yaml | json
    sa.Column("created_by", ID, sa.ForeignKey("users.id"), nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
)

flow_members = sa.Table(
    "flow_members",
    metadata,
    sa.Column("flow_id", ID, sa.ForeignKey("flows.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("user_id", ID, sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
)

flow_status_changes = sa.Table(
    "flow_status_changes",
    metadata,
    sa.Column("id", ID, primary_key=True, autoincrement=True),
    sa.Column("flow_id", ID, sa.ForeignKey("flows.id", ondelete="CASCADE"), nullable=False),
    sa.Column("from_status", sa.String(16)),  # null when the flow was created
    sa.Column("to_status", sa.String(16), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("actor_id", ID, sa.ForeignKey("users.id"), nullable=True),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("note", sa.Text, nullable=False, server_default=""),
    sa.Index("ix_flow_status_changes_flow", "flow_id", "id"),
)

# Which record is (or was) inside which flow, and where it is. `status`, `step_key` and `due_at`
# are columns because the worker and the views filter on them; `state` is the engine's whole
# EnrollmentState as JSON. A row whose `state` is NULL has not entered yet: a follow-up flow
# started by another flow enters when its `due_at` comes, unless it is `held` (a start the loop
# guard tripped on, cancelled when it comes due). `lease_owner` / `lease_until` mark a
# batch claimed by a worker; an expired lease is free again, so a killed worker's batch is taken
# over. The id is the distribution key of every hot table below (DESIGN principle 5).
enrollments = sa.Table(
    "enrollments",
    metadata,
    sa.Column("id", ID, primary_key=True, autoincrement=True),
    # No foreign key: checking it for each row of a start list cost more than the insert, and
    # the flows service keeps the rule (a flow that ever had records is archived, not deleted).
    sa.Column("flow_id", ID, nullable=False),
    sa.Column("flow_version", sa.Integer, nullable=False),
    sa.Column("record_id", ID, nullable=False),
    # active | waiting | held | finished | left | cancelled
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("step_key", sa.String(100)),
    sa.Column("entered_at", UTCDateTime, nullable=False),
    sa.Column("finished_at", UTCDateTime),
    sa.Column("due_at", UTCDateTime),
    sa.Column("state", JSONDoc),
    sa.Column("lease_owner", sa.String(64)),
    sa.Column("lease_until", UTCDateTime),
    sa.Column("updated_at", UTCDateTime),
    # A run started in test mode: the flow's test recipients then (null: a real run).
    sa.Column("test_to", JSONDoc),
    # By flow and status (the counts of a flow's pages), then due time: the next due of each
    # running flow is one probe (store.enrollments.claims.next_due_select, migration 0031), and
    # so are the claim (claims.due_select) and the due backlog (/metrics): one probe per running
    # flow and status. Migration 0032 dropped the two indexes by status and due time that they
    # no longer read, each one more write at every move.
    sa.Index("ix_enrollments_flow_status_due", "flow_id", "status", "due_at"),
    sa.Index("ix_enrollments_record", "record_id"),
    # The leased rows only (a batch moved clears its leases): their free time, probed apart.
    sa.Index(
        "ix_enrollments_leased",
        "lease_until",
        sqlite_where=sa.text("lease_until IS NOT NULL"),
        postgresql_where=sa.text("lease_until IS NOT NULL"),
    ),
)

# What each step run did: one row per (enrollment, run number). A run that waits (an approval)
# is written when it starts and completed when it ends; `actions` holds the ActionLog of each
# action (what it did, or why it failed or was skipped).
step_runs = sa.Table(
    "step_runs",
    metadata,
    sa.Column("enrollment_id", ID, primary_key=True),
    sa.Column("run", sa.Integer, primary_key=True),
    sa.Column("step_key", sa.String(100), nullable=False),
    sa.Column("step_type", sa.String(16), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # done|skipped|waiting|failed|ended
    sa.Column("reason", sa.Text, nullable=False, server_default=""),
    sa.Column("started_at", UTCDateTime, nullable=False),
    sa.Column("finished_at", UTCDateTime),
    sa.Column("actions", JSONDoc, nullable=False),
    # Only the failed ones, by time: the failures of the last hour (/metrics, crmflow status).
    sa.Index(
        "ix_step_runs_failed",
        "started_at",
        sqlite_where=sa.text("status = 'failed'"),
        postgresql_where=sa.text("status = 'failed'"),
    ),
)

# External effects to deliver once (crmflow.delivery). The idempotency key is made of
# (enrollment, step run, action), so a step run retried after a crash writes no second row.
# status: pending -> sending (leased to a dispatcher until lease_until) -> delivered | caught
# (kept by the mail catcher, `rendered` holds the message) | retrying (at next_attempt_at) |
# failed | suppressed (to an address on the suppression list: not sent, `last_error` says
# why); cancelled when its run was cancelled before it went.
outbox = sa.Table(
    "outbox",
    metadata,
    sa.Column("id", ID, primary_key=True, autoincrement=True),
    sa.Column("enrollment_id", ID, nullable=False),
    sa.Column("step_key", sa.String(100), nullable=False),
    sa.Column("step_run", sa.Integer, nullable=False),
    sa.Column("idempotency_key", sa.String(200), nullable=False, unique=True),
    sa.Column("kind", sa.String(16), nullable=False),  # email | sms | webhook
    sa.Column("payload", JSONDoc, nullable=False),
    sa.Column("status", sa.String(16), nullable=False, server_default="pending"),
    sa.Column("not_before", UTCDateTime, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("next_attempt_at", UTCDateTime),
    sa.Column("lease_owner", sa.String(100)),
    sa.Column("lease_until", UTCDateTime),
    sa.Column("delivered_at", UTCDateTime),
    sa.Column("last_error", sa.Text),
    sa.Column("server_reply", sa.Text),
    sa.Column("rendered", sa.Text),
    # Written by a run in test mode, rewritten for its test recipients (engine.test_mode).
    sa.Column("test", sa.Boolean, nullable=False, server_default=sa.false()),
    # Claimed first when higher (then oldest first): 1 transactional, 0 bulk (docs/delivery.md).
    sa.Column("priority", sa.Integer, nullable=False, server_default="0"),
    sa.Index("ix_outbox_status_not_before", "status", "not_before"),
    sa.Index("ix_outbox_status_next_attempt_at", "status", "next_attempt_at"),
    sa.Index("ix_outbox_enrollment", "enrollment_id"),
    sa.Index("ix_outbox_priority", "priority", "id"),
)

# Addresses no flow emails any more (`store.suppressions`, the one writer): each normalised to
# lower case, with why (unsubscribed | hard_bounce | admin), when, and what caused it (the
# message or the admin). Checked by the dispatcher before each email (docs/delivery.md).
suppressions = sa.Table(
    "suppressions",
    metadata,
    sa.Column("address", sa.String(320), primary_key=True),
    sa.Column("reason", sa.String(16), nullable=False),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("source", sa.Text, nullable=False, server_default=""),
)

# Keys the server made for itself and keeps (`store.suppressions`): the unsubscribe links'
# signing key when CRMFLOW_SECRET_KEY is not set.
signing_keys = sa.Table(
    "signing_keys",
    metadata,
    sa.Column("name", sa.String(50), primary_key=True),
    sa.Column("secret", sa.String(200), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
)

# The approval email links that were used (`store.approval_links`, the one writer): a link
# decides once. `token_hash` is the SHA-256 of the link's token; the rest says what it decided.
approval_link_uses = sa.Table(
    "approval_link_uses",
    metadata,
    sa.Column("token_hash", sa.String(64), primary_key=True),
    sa.Column("enrollment_id", ID, nullable=False),
    sa.Column("step_run", sa.Integer, nullable=False),
    sa.Column("button", sa.String(100), nullable=False),
    sa.Column("username", sa.String(64), nullable=False),
    sa.Column("used_at", UTCDateTime, nullable=False),
)

tasks = sa.Table(
    "tasks",
    metadata,
    sa.Column("id", ID, primary_key=True, autoincrement=True),
    sa.Column("enrollment_id", ID, nullable=False),
    sa.Column("record_id", ID, nullable=False),
    sa.Column("step_key", sa.String(100), nullable=False),
    sa.Column("run", sa.Integer, nullable=False),
    sa.Column("title", sa.Text, nullable=False),
    sa.Column("description", sa.Text, nullable=False, server_default=""),
    sa.Column("assignee_kind", sa.String(8), nullable=False),  # user | group
    sa.Column("assignee_ref", sa.String(100), nullable=False),
    sa.Column("due_at", UTCDateTime),
    sa.Column("buttons", JSONDoc, nullable=False),  # approvals: [[key, label], ...]
    sa.Column("status", sa.String(16), nullable=False, server_default="open"),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("closed_at", UTCDateTime),
    # A due time set from a date of the record (`due: {field, offset_days}`): it moves with it.
    sa.Column("due_field", sa.String(100)),
    sa.Column("due_offset_days", sa.Integer),
    sa.Index("ix_tasks_assignee", "assignee_kind", "assignee_ref", "status"),
    sa.Index("ix_tasks_enrollment", "enrollment_id"),
)

notifications = sa.Table(
    "notifications",
    metadata,
    sa.Column("id", ID, primary_key=True, autoincrement=True),
    sa.Column("target_kind", sa.String(8), nullable=False),  # user | group
    sa.Column("target_ref", sa.String(100), nullable=False),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("enrollment_id", ID),
    sa.Column("record_id", ID),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("read_at", UTCDateTime),
    sa.Column("task_id", ID),  # the task it tells of, when written with its id (no FK)
    sa.Index("ix_notifications_target", "target_kind", "target_ref", "read_at"),
)

# A task's history after it was created (`store.tasks`, the one writer): who (`by`, a username;
# null: crmflow) did what (`action`: started | completed | commented | reassigned | cancelled |
# closed) and when, with the comment or the change in `detail`.
task_events = sa.Table(
    "task_events",
    metadata,
    sa.Column("id", ID, primary_key=True, autoincrement=True),
    sa.Column("task_id", ID, nullable=False),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("by", sa.String(64)),
    sa.Column("action", sa.String(16), nullable=False),
    sa.Column("detail", sa.Text, nullable=False, server_default=""),
    sa.Index("ix_task_events_task", "task_id", "id"),
)

# Who read which notification (`store.notifications`, the one writer): a notification is unread
# for a user until a row says they read it, so that each member of a group it went to reads it
# on their own (docs/people.md).
notification_reads = sa.Table(
    "notification_reads",
    metadata,
    sa.Column("notification_id", ID, primary_key=True),
    sa.Column("user_id", ID, primary_key=True),
    sa.Column("read_at", UTCDateTime, nullable=False),
    sa.Index("ix_notification_reads_user", "user_id"),
)

# The deadline notices sent about a task (`store.deadlines`, the one writer): a reminder, the
# late notice, the escalation, each once (`key`: `engine.deadlines.notice_key`).
deadline_notices = sa.Table(
    "deadline_notices",
    metadata,
    sa.Column("key", sa.String(120), primary_key=True),
    sa.Column("task_id", ID, nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),  # reminder | late | escalation
    sa.Column("sent_at", UTCDateTime, nullable=False),
    sa.Index("ix_deadline_notices_task", "task_id"),
)

# The record's own history, as the `history` action writes it (and crmflow's refusals).
record_history = sa.Table(
    "record_history",
    metadata,
    sa.Column("id", ID, primary_key=True, autoincrement=True),
    sa.Column("record_id", ID, nullable=False),
    sa.Column("enrollment_id", ID),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Index("ix_record_history_record", "record_id", "id"),
)

# Why a record that was considered for a flow did not enter it ("entry condition false",
# "already inside", "flow draining", ...): listed per flow and per record.
entry_decisions = sa.Table(
    "entry_decisions",
    metadata,
    sa.Column("id", ID, primary_key=True, autoincrement=True),
    sa.Column("flow_id", ID, sa.ForeignKey("flows.id", ondelete="CASCADE"), nullable=False),
    sa.Column("record_id", ID, nullable=False),
    sa.Column("trigger", sa.String(32), nullable=False),  # the trigger type that considered it
    sa.Column("change_id", ID, nullable=True),  # the record change that caused it, if any
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Index("ix_entry_decisions_flow", "flow_id", "id"),
    sa.Index("ix_entry_decisions_record", "record_id", "id"),
)

# Where each consumer of an ordered feed (e.g. the record changes that trigger flows) has got to.
feed_cursors = sa.Table(
    "feed_cursors",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("position", sa.BigInteger, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)

# The next run of each time-based trigger (daily schedules, date fields reached) of a flow.
trigger_schedules = sa.Table(
    "trigger_schedules",
    metadata,
    sa.Column("flow_id", ID, sa.ForeignKey("flows.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("trigger_index", sa.Integer, primary_key=True),
    sa.Column("next_at", UTCDateTime, nullable=True),
    sa.Column("last_at", UTCDateTime, nullable=True),
    sa.Index("ix_trigger_schedules_next", "next_at"),
)

# A trigger of a flow that raised: marked failing with its error and retried with backoff, while
# the flow's other triggers and every other flow go on (the worker never dies of one trigger).
trigger_failures = sa.Table(
    "trigger_failures",
    metadata,
    sa.Column("flow_id", ID, sa.ForeignKey("flows.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("trigger_index", sa.Integer, primary_key=True),
    sa.Column("trigger_type", sa.String(32), nullable=False),
    sa.Column("failures", sa.Integer, nullable=False),
    sa.Column("last_error", sa.Text, nullable=False),
    sa.Column("first_failed_at", UTCDateTime, nullable=False),
    sa.Column("last_failed_at", UTCDateTime, nullable=False),
    sa.Column("retry_at", UTCDateTime, nullable=False),
)

# Each worker / dispatcher loop's sign of life, read by /api/health across processes.
worker_heartbeats = sa.Table(
    "worker_heartbeats",
    metadata,
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("kind", sa.String(16), nullable=False),  # worker | dispatcher
    sa.Column("started_at", UTCDateTime, nullable=False),
    sa.Column("beat_at", UTCDateTime, nullable=False),
    sa.Column("last_success_at", UTCDateTime),
    sa.Column("last_error", sa.Text),
    sa.Column("stopped_at", UTCDateTime),
)

# Static groups of records (a mailing list, "Donors 2026"): the add_to_group action's target.
record_groups = sa.Table(
    "record_groups",
    metadata,
    sa.Column("id", ID, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(100), nullable=False, unique=True),
    sa.Column("description", sa.Text, nullable=False, server_default=""),
    sa.Column("created_at", UTCDateTime, nullable=False),
)

record_group_members = sa.Table(
    "record_group_members",
    metadata,
    sa.Column(
        "group_id", ID, sa.ForeignKey("record_groups.id", ondelete="CASCADE"), primary_key=True
    ),
    sa.Column("record_id", ID, primary_key=True),
    sa.Column("added_at", UTCDateTime, nullable=False),
    sa.Index("ix_record_group_members_record", "record_id"),
)

# The signed calls to /hooks/<key> that were taken, by (hook key, sender, webhook-id), with a hash
# of their body and the answer they got: a sender's retry, or a captured call replayed, is answered
# again instead of starting the records twice (services.webhook_receipts). The row is written in the
# transaction of the call's starts, so a call that failed leaves none and can be retried with its
# id; `answer` is NULL only inside that transaction. Rows older than RECEIPT_RETENTION are deleted
# by later calls.
webhook_receipts = sa.Table(
    "webhook_receipts",
    metadata,
    sa.Column("hook_key", sa.String(63), primary_key=True),
    # A hash of the secrets that signed the call: senders sharing a hook key may reuse ids.
    sa.Column("sender", sa.String(64), primary_key=True),
    sa.Column("webhook_id", sa.String(255), primary_key=True),
    sa.Column("body_sha256", sa.String(64), nullable=False),
    sa.Column("received_at", UTCDateTime, nullable=False),
    sa.Column("answer", JSONDoc),
    sa.Index("ix_webhook_receipts_received_at", "received_at"),
)

# Stored email templates by name (`crmflow templates load`, PUT /api/templates/{name}): a flow's
# send_email names one with `template:` and the dispatcher renders it when it sends
# (services.templates). `document` is the whole template as loaded (subject, text, html,
# from, reply_to, locale, defaults), so that new optional keys need no migration.
email_templates = sa.Table(
    "email_templates",
    metadata,
    sa.Column("name", sa.String(100), primary_key=True),
    sa.Column("document", JSONDoc, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Column("updated_by", sa.String(64)),
)


# The calendar invitation of an appointment (an event record created by a flow with
# `invitation: ics`): its UID, the SEQUENCE of the last version sent, who was invited and by
# whom, and the run whose outbox carries its messages. status: active | cancelled (a CANCEL
# was sent: later changes of the event send nothing). Written by store.invitations.
invitations = sa.Table(
    "invitations",
    metadata,
    sa.Column("record_id", ID, primary_key=True),  # the event record
    sa.Column("uid", sa.String(200), nullable=False),
    sa.Column("sequence", sa.Integer, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attendee_record_id", ID, nullable=False),
    sa.Column("attendee_email", sa.String(320), nullable=False),
    sa.Column("attendee_name", sa.Text, nullable=False, server_default=""),
    sa.Column("organizer_email", sa.String(320), nullable=False),
    sa.Column("organizer_name", sa.Text, nullable=False, server_default=""),
    sa.Column("enrollment_id", ID, nullable=False),
    sa.Column("step_key", sa.String(100), nullable=False),
    sa.Column("step_run", sa.Integer, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)


# The files of records' `file` fields (store.record_files, the one writer): one per record and
# field, its bytes kept in the database with what was sniffed of them (services.record_files
# bounds their size and types). Deleted with their record.
record_files = sa.Table(
    "record_files",
    metadata,
    sa.Column("record_id", ID, sa.ForeignKey("records.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("field", sa.String(63), primary_key=True),
    sa.Column("filename", sa.String(255), nullable=False),
    sa.Column("content_type", sa.String(100), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("content", sa.LargeBinary, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("created_by", ID, sa.ForeignKey("users.id", ondelete="SET NULL"), nullable=True),
)

# Long operations run in the background (services.jobs): claimed with a lease, resumable.
jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("id", ID, primary_key=True, autoincrement=True),
    sa.Column("kind", sa.String(32), nullable=False),  # flow_start | import
    sa.Column("subject", sa.String(200), nullable=False),  # what it works on: flow:KEY, type:KEY
    sa.Column("payload", JSONDoc, nullable=False),
    sa.Column("content", sa.LargeBinary, nullable=True),  # an import's uploaded file
    sa.Column("state", sa.String(16), nullable=False),  # waiting | running | done | failed
    sa.Column("done", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("total", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("result", JSONDoc, nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("created_by", ID, sa.ForeignKey("users.id", ondelete="SET NULL"), nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("started_at", UTCDateTime, nullable=True),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Column("finished_at", UTCDateTime, nullable=True),
    sa.Column("lease_owner", sa.String(200), nullable=True),
    sa.Column("lease_until", UTCDateTime, nullable=True),
    sa.Index("ix_jobs_state", "state", "id"),
    sa.Index("ix_jobs_subject", "subject", "state"),
)

# What pruning took away, counted (store.retention, the one writer; docs/retention.md). Per flow:
# kind `through` (key: a step; the runs that went through it, as store.step_runs counts them),
# `step` (key: a step, outcome: a step run's status), `action` (outcome: an action's status),
# `message` (key: email | sms | webhook, outcome: the message's status). The statistics add
# these to what is still stored, so they stay the same after pruning.
flow_history_counts = sa.Table(
    "flow_history_counts",
    metadata,
    sa.Column("flow_id", ID, primary_key=True),
    sa.Column("kind", sa.String(16), primary_key=True),
    sa.Column("key", sa.String(100), primary_key=True),
    sa.Column("outcome", sa.String(16), primary_key=True),
    sa.Column("count", sa.BigInteger, nullable=False),
)

# A run (enrollment) whose history was pruned (store.retention, the one writer): how many step
# runs and outbox messages went, and the statuses of its emails in run order (its sequence's
# "2/5" progress), kept from the first pruning of either.
run_summaries = sa.Table(
    "run_summaries",
    metadata,
    sa.Column("enrollment_id", ID, primary_key=True),
    sa.Column("flow_id", ID, nullable=False),
    sa.Column("step_runs", sa.Integer, nullable=False, server_default="0"),
    sa.Column("messages", sa.Integer, nullable=False, server_default="0"),
    sa.Column("email_statuses", JSONDoc, nullable=False),
    sa.Column("pruned_at", UTCDateTime, nullable=False),
)

# A flow in test mode (`enabled`): its runs' messages go to its test recipients
# (services.test_mode); who switched it last and when.
flow_test_modes = sa.Table(
    "flow_test_modes",
    metadata,
    sa.Column("flow_id", ID, sa.ForeignKey("flows.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("enabled", sa.Boolean, nullable=False),
    sa.Column("changed_by", ID, sa.ForeignKey("users.id", ondelete="SET NULL"), nullable=True),
    sa.Column("changed_at", UTCDateTime, nullable=False),
)
