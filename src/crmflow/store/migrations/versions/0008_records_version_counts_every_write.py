"""records.version counts every write: a trigger bumps it when an UPDATE did not

crmflow's own writes of a record (the API, the CLI, imports, the worker's actions) add one to
`records.version` themselves. The `run_sql` action runs an administrator's SQL, which may update
records without touching `version` (`update records set data = ... where id = :id`): the ETag of
the record did not change, and a client holding it could overwrite the SQL's change with
If-Match. Whatever writes the row, an UPDATE of its type, owner or data that leaves `version` as
it was now adds one (the WHEN clause leaves crmflow's own writes, which already do, alone).

On SQLite an AFTER trigger sets the version (recursive triggers are off, and the trigger only
watches the type, owner and data columns, so its own UPDATE does not fire it again); on
PostgreSQL a BEFORE trigger sets NEW.version. SQLite drops a table's triggers when a batch
migration copies the table: a later migration that rebuilds `records` must create it again.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-10 10:00:00
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

TRIGGER = "records_version_counts_every_write"
FUNCTION = "records_count_version"


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            f"""
            CREATE FUNCTION {FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                NEW.version := OLD.version + 1;
                RETURN NEW;
            END
            $$
            """
        )
        op.execute(
            f"""
            CREATE TRIGGER {TRIGGER}
            BEFORE UPDATE OF type, owner_id, data ON records
            FOR EACH ROW WHEN (NEW.version = OLD.version)
            EXECUTE FUNCTION {FUNCTION}()
            """
        )
    else:
        op.execute(
            f"""
            CREATE TRIGGER {TRIGGER}
            AFTER UPDATE OF type, owner_id, data ON records
            FOR EACH ROW WHEN NEW.version = OLD.version
            BEGIN
                UPDATE records SET version = OLD.version + 1 WHERE id = NEW.id;
            END
            """
        )


def downgrade() -> None:
    op.execute(f"DROP TRIGGER IF EXISTS {TRIGGER}" + _on_records())
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP FUNCTION IF EXISTS {FUNCTION}()")


def _on_records() -> str:
    return " ON records" if op.get_bind().dialect.name == "postgresql" else ""
