"""bench_migrate still runs (tiny size; `make bench` measures): it upgrades a filled copy from
FROM_REVISION to the head, times each migration, and copies the table for its baseline."""

from __future__ import annotations

import pytest

from bench import bench_migrate
from crmflow.store.migrate import head_revision
from tests.conftest import skip_or_fail_without_postgres


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_the_migrate_benchmark_times_every_migration_after_its_start(backend: str) -> None:
    if backend == "postgres":
        skip_or_fail_without_postgres()
    result = bench_migrate.run(backend, 300, 1)
    assert len(result.ours) == len(result.baseline) == 1 and result.ratio > 0
    # Every migration after FROM_REVISION ran, the records ones among them, up to the head.
    assert {"0007", "0008", "0010", str(head_revision()), "built-in types"} <= set(result.steps)
    assert bench_migrate.FROM_REVISION not in result.steps
    assert "slowest migrations: " in result.line()
