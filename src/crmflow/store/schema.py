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
    "enrollments",
    "flow_members",
    "flow_status_changes",
    "flow_versions",
    "flows",
    "group_members",
    "groups",
    "metadata",
    "record_changes",
    "record_types",
    "records",
    "saved_queries",
    "users",
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
    sa.Index("ix_records_type_id", "type", "id"),
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
    sa.Column("created_by", ID, sa.ForeignKey("users.id"), nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
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

# Which record is (or was) inside which flow. The engine (next issue) extends this table; the
# lifecycle already needs it to refuse deleting a flow that ever had records inside.
enrollments = sa.Table(
    "enrollments",
    metadata,
    sa.Column("id", ID, primary_key=True, autoincrement=True),
    sa.Column("flow_id", ID, sa.ForeignKey("flows.id"), nullable=False),
    sa.Column("flow_version", sa.Integer, nullable=False),
    sa.Column("record_id", ID, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # active | finished | left | cancelled
    sa.Column("step_key", sa.String(100)),
    sa.Column("entered_at", UTCDateTime, nullable=False),
    sa.Column("finished_at", UTCDateTime),
    sa.Index("ix_enrollments_flow_status", "flow_id", "status"),
    sa.Index("ix_enrollments_record", "record_id"),
)
