"""`crmflow db upgrade` on a copy of a database with a million records, against a bare copy of
the records table in the same run.

A database is migrated to FROM_REVISION (the last one before the oldest migration that
changes `records`: 0007 adds `records.version`, 0008 its trigger, 0010 `external_id` and its
unique index) and filled with ROWS contacts by one bulk `INSERT ... SELECT` (a recursive CTE on
SQLite, generate_series on PostgreSQL), each with the change event of its creation (as crmflow
writes one per record written: 0030 converts `record_changes` to monthly partitions on
PostgreSQL, a copy of it): the template. Each run copies the template (a file
copy on SQLite, CREATE DATABASE ... TEMPLATE on PostgreSQL; not timed) and times
`upgrade_database`, what `crmflow db upgrade` runs: every migration from FROM_REVISION to the
head in one transaction, then the built-in record types. The time of each migration is read
from the statements themselves (alembic writes `alembic_version` at the end of each one), so
the slowest are printed too: on PostgreSQL they say how long an upgrade holds its locks.

The baseline, on another copy of the same template in the same run: `CREATE TABLE ... AS
SELECT * FROM records`, the cheapest full copy of the table there is (what SQLite's batch
migrations do to a table at least once, and a bound on what any rewrite of it costs).

    python -m bench.bench_migrate --rows 1000000 --runs 3 --backend both
"""

from __future__ import annotations

import re
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bench.common import PG_ADMIN_URL, Comparison, ratio_main, timed
from crmflow.services.context import Context
from crmflow.services.setup import upgrade_database
from crmflow.settings import Settings
from crmflow.store import migrate
from crmflow.store.database import create_db_engine

__all__ = ["AIM", "FROM_REVISION", "MigrateResult", "main", "run"]

AIM = 5.0  # the whole upgrade within a few bare copies of the table
FROM_REVISION = "0006"
NOW = "2026-01-01 10:00:00"
FILL = {
    "sqlite": f"""
        WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < :rows)
        INSERT INTO records (type, owner_id, data, created_at, updated_at)
        SELECT 'contact', NULL, json_object(
            'first_name', 'First' || i, 'last_name', 'Last' || i,
            'email', 'contact' || i || '@example.org',
            'status', CASE i % 4 WHEN 0 THEN 'lead' WHEN 1 THEN 'client'
                                 WHEN 2 THEN 'donor' ELSE 'inactive' END,
            'city', 'City ' || (i % 500), 'phone', '+4070' || (1000000 + i)),
            '{NOW}.000000', '{NOW}.000000'
        FROM n
    """,
    "postgresql": f"""
        INSERT INTO records (type, owner_id, data, created_at, updated_at)
        SELECT 'contact', NULL, jsonb_build_object(
            'first_name', 'First' || i, 'last_name', 'Last' || i,
            'email', 'contact' || i || '@example.org',
            'status', (ARRAY['lead', 'client', 'donor', 'inactive'])[i % 4 + 1],
            'city', 'City ' || (i % 500), 'phone', '+4070' || (1000000 + i)),
            '{NOW}+00', '{NOW}+00'
        FROM generate_series(1, :rows) AS i
    """,
}
# Each record's creation in the change feed (every write of a record adds one).
CHANGES = (
    "INSERT INTO record_changes (record_id, record_type, kind, after, at)"
    " SELECT id, type, 'created', data, created_at FROM records"
)
BARE_COPY = "CREATE TABLE records_bare_copy AS SELECT * FROM records"
_VERSION_WRITE = re.compile(r"alembic_version\s+SET\s+version_num\s*=\s*'([^']+)'", re.I)


@dataclass
class MigrateResult(Comparison):
    """The comparison, and the seconds of each migration (median over the runs)."""

    steps: dict[str, list[float]] = field(default_factory=dict)

    def line(self, aim: float = AIM) -> str:
        slowest = sorted(
            ((statistics.median(times), rev) for rev, times in self.steps.items()), reverse=True
        )[:3]
        text = ", ".join(f"{rev} {seconds:.2f}s" for seconds, rev in slowest)
        return super().line(aim) + f"  slowest migrations: {text}"


def run(backend: str, rows: int, runs: int) -> MigrateResult:
    result = MigrateResult(
        name=f"db upgrade {FROM_REVISION}->head", backend=backend, rows=rows, ours=[], baseline=[]
    )
    with _template(backend, rows) as copy_of:
        for _ in range(runs):
            with copy_of() as url:
                steps: dict[str, float] = {}
                result.ours.append(_upgrade(url, steps))
                for revision, seconds in steps.items():
                    result.steps.setdefault(revision, []).append(seconds)
            with copy_of() as url:
                engine = create_db_engine(url)
                with engine.begin() as conn:
                    result.baseline.append(timed(lambda: conn.exec_driver_sql(BARE_COPY)))
                engine.dispose()
    return result


def _upgrade(url: str, steps: dict[str, float]) -> float:
    """Seconds of `upgrade_database` on `url`; `steps` gets each migration's seconds."""
    ctx = Context.from_settings(Settings(database_url=url))
    mark = [0.0]

    def after(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        found = _VERSION_WRITE.search(statement)
        if found:
            now = time.perf_counter()
            steps[found.group(1)] = now - mark[0]
            mark[0] = now

    sa.event.listen(ctx.engine, "after_cursor_execute", after)
    try:
        started = mark[0] = time.perf_counter()
        upgrade_database(ctx)
        seconds = time.perf_counter() - started
        assert migrate.current_revision(ctx.engine) == migrate.head_revision()
    finally:
        ctx.engine.dispose()
    steps["built-in types"] = started + seconds - mark[0]
    return seconds


@contextmanager
def _template(backend: str, rows: int) -> Iterator[Any]:
    """A database at FROM_REVISION holding `rows` contacts; yields `copy_of()`, a context
    manager giving the URL of a fresh copy of it (dropped afterwards)."""
    if backend == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            template = Path(tmp) / "template.db"
            _fill(f"sqlite:///{template}", rows)

            @contextmanager
            def sqlite_copy() -> Iterator[str]:
                path = Path(tmp) / f"copy-{uuid.uuid4().hex[:8]}.db"
                shutil.copyfile(template, path)
                try:
                    yield f"sqlite:///{path}"
                finally:
                    for leftover in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
                        leftover.unlink(missing_ok=True)

            yield sqlite_copy
        return
    name = f"crmflow_bench_migrate_{uuid.uuid4().hex[:8]}"
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    admin = create_db_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        _fill(f"{base}/{name}", rows)

        @contextmanager
        def postgres_copy() -> Iterator[str]:
            copy = f"{name}_{uuid.uuid4().hex[:6]}"
            with admin.connect() as conn:
                conn.exec_driver_sql(f'CREATE DATABASE "{copy}" TEMPLATE "{name}"')
            try:
                yield f"{base}/{copy}"
            finally:
                with admin.connect() as conn:
                    conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{copy}" WITH (FORCE)')

        yield postgres_copy
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def _fill(url: str, rows: int) -> None:
    engine = create_db_engine(url)
    migrate.upgrade(engine, FROM_REVISION)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO record_types (key, name, builtin, fields, created_at, updated_at) "
                "VALUES ('contact', 'Contact', true, '[]', :now, :now)"
            ),
            {"now": NOW},
        )
        conn.execute(sa.text(FILL[engine.dialect.name]), {"rows": rows})
        conn.execute(sa.text(CHANGES))
    # SQLite: the last connection closed (dispose) writes the WAL back into the file.
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE records, record_changes")
    engine.dispose()


def main(argv: list[str] | None = None) -> None:
    ratio_main(__doc__, run, AIM, argv)


if __name__ == "__main__":
    main()
