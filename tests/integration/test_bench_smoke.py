"""The benchmarks still run (tiny sizes): `make bench` is not part of `make test`, so without this
a change could break them unnoticed. No timing is asserted here; `make bench` measures."""

from __future__ import annotations

import pytest

from bench import bench_import, bench_query_count
from tests.conftest import skip_or_fail_without_postgres


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_benchmarks_run_and_compare_against_their_baseline(backend: str) -> None:
    if backend == "postgres":
        skip_or_fail_without_postgres()
    for bench in (bench_import, bench_query_count):
        result = bench.run(backend, 2_000, 1)
        assert result.rows == 2_000
        assert len(result.ours) == len(result.baseline) == 1
        assert result.ratio > 0
