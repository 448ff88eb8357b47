"""Bounded history: the big history tables partitioned by month on PostgreSQL

On PostgreSQL, `step_runs` (by `started_at`), `record_changes` and `entry_decisions` (by `at`)
and `notifications` (by `created_at`) become tables partitioned by RANGE on that time, one
partition a month (`<table>_pYYYYMM`, UTC months) and a default partition (`<table>_pdefault`)
so that no insert ever fails; retention then drops a whole month's partition instead of deleting
its rows (store.partitions, services.retention, docs/retention.md). A unique constraint of a
partitioned table must hold its partition key: each primary key gets its time column
(`step_runs`: enrollment_id, run, started_at; the others: id and their time). Nothing points at
these tables by a foreign key.

Each table is converted in the upgrade's transaction: renamed aside, a partitioned table made
like it, a partition made for every month from its oldest row to two months after the current
one, its rows copied, then its primary key, indexes and foreign keys made (built once on the
loaded partitions), the id sequence handed over and the old table dropped. SQLite is unchanged.

Revision ID: 0030
Revises: 0028
Create Date: 2026-12-02 17:00:00
"""

from __future__ import annotations

from datetime import UTC, datetime

from alembic import op

revision = "0030"
down_revision = "0028"
branch_labels = None
depends_on = None

# table -> (partition key, primary key, id sequence or None, indexes, foreign keys)
_TABLES: dict[str, tuple[str, str, str | None, tuple[str, ...], tuple[str, ...]]] = {
    "step_runs": (
        "started_at",
        "enrollment_id, run",
        None,
        ("ix_step_runs_failed ON {t} (started_at) WHERE ((status)::text = 'failed'::text)",),
        (),
    ),
    "record_changes": (
        "at",
        "id",
        "record_changes_id_seq",
        ("ix_record_changes_record ON {t} (record_id, id)",),
        ("fk_record_changes_actor_id_users FOREIGN KEY (actor_id) REFERENCES users(id)",),
    ),
    "entry_decisions": (
        "at",
        "id",
        "entry_decisions_id_seq",
        (
            "ix_entry_decisions_flow ON {t} (flow_id, id)",
            "ix_entry_decisions_record ON {t} (record_id, id)",
        ),
        (
            "fk_entry_decisions_flow_id_flows FOREIGN KEY (flow_id) REFERENCES flows(id)"
            " ON DELETE CASCADE",
        ),
    ),
    "notifications": (
        "created_at",
        "id",
        "notifications_id_seq",
        ("ix_notifications_target ON {t} (target_kind, target_ref, read_at)",),
        (),
    ),
}
_AHEAD = 2  # months made after the current one


def _month(year: int, month: int, plus: int = 0) -> tuple[int, int]:
    index = year * 12 + month - 1 + plus
    return index // 12, index % 12 + 1


def _bound(year: int, month: int) -> str:
    return f"'{year:04d}-{month:02d}-01 00:00:00+00'"


def _rebuild(table: str, *, partitioned: bool) -> None:
    key, primary, sequence, indexes, foreign = _TABLES[table]
    old = f"{table}_unconverted"
    op.execute(f"ALTER TABLE {table} RENAME TO {old}")
    op.execute(f"ALTER TABLE {old} RENAME CONSTRAINT pk_{table} TO pk_{old}")
    for index in indexes:
        name = index.split(" ", 1)[0]
        op.execute(f"ALTER INDEX {name} RENAME TO {name}_unconverted")
    for fk in foreign:
        name = fk.split(" ", 1)[0]
        op.execute(f"ALTER TABLE {old} RENAME CONSTRAINT {name} TO {name}_unconverted")
    how = f" PARTITION BY RANGE ({key})" if partitioned else ""
    op.execute(f"CREATE TABLE {table} (LIKE {old} INCLUDING DEFAULTS){how}")
    if partitioned:
        bind = op.get_bind()
        oldest = bind.exec_driver_sql(f"SELECT min({key}) AT TIME ZONE 'UTC' FROM {old}").scalar()
        now = datetime.now(UTC)
        first = (oldest.year, oldest.month) if oldest is not None else (now.year, now.month)
        first = min(first, (now.year, now.month))
        last = _month(now.year, now.month, _AHEAD)
        at = first
        while at <= last:
            upper = _month(at[0], at[1], 1)
            op.execute(
                f"CREATE TABLE {table}_p{at[0]:04d}{at[1]:02d} PARTITION OF {table}"
                f" FOR VALUES FROM ({_bound(*at)}) TO ({_bound(*upper)})"
            )
            at = upper
        op.execute(f"CREATE TABLE {table}_pdefault PARTITION OF {table} DEFAULT")
    op.execute(f"INSERT INTO {table} SELECT * FROM {old}")
    columns = f"{primary}, {key}" if partitioned else primary
    op.execute(f"ALTER TABLE {table} ADD CONSTRAINT pk_{table} PRIMARY KEY ({columns})")
    for index in indexes:
        op.execute("CREATE INDEX " + index.format(t=table))
    for fk in foreign:
        op.execute(f"ALTER TABLE {table} ADD CONSTRAINT {fk}")
    if sequence is not None:
        op.execute(f"ALTER SEQUENCE {sequence} OWNED BY {table}.id")
    op.execute(f"DROP TABLE {old}")


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in _TABLES:
        _rebuild(table, partitioned=True)
        op.execute(f"ANALYZE {table}")  # the planner's figures, for the new partitions


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in _TABLES:
        _rebuild(table, partitioned=False)
