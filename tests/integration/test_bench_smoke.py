"""The benchmarks still run (tiny sizes): `make bench` is not part of `make test`, so without this
a change could break them unnoticed. No timing is asserted here; `make bench` measures.
(`bench_crash` runs in tests/integration/test_crash.py, with its guarantees asserted.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import (
    bench_cli_start,
    bench_delivery,
    bench_enroll,
    bench_feed,
    bench_import,
    bench_memory,
    bench_query_count,
    bench_steps,
    bench_timers,
    bench_web_pages,
)
from tests.conftest import skip_or_fail_without_postgres


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    if request.param == "postgres":
        skip_or_fail_without_postgres()
    return str(request.param)


def test_benchmarks_run_and_compare_against_their_baseline(backend: str) -> None:
    for bench in (bench_import, bench_query_count, bench_enroll):
        result = bench.run(backend, 2_000, 1)
        assert result.rows == 2_000
        assert len(result.ours) == len(result.baseline) == 1
        assert result.ratio > 0


def test_the_steps_benchmark_runs_every_step_and_its_baseline(backend: str) -> None:
    parked = backend == "sqlite"  # the inline flow's run: one backend is enough here
    result = bench_steps.run(backend, 200, 1, parked=parked)
    assert result.step_runs == 5 * 200
    assert result.ratio > 0 and result.rate > 0
    assert "step runs/s" in result.line()
    if parked:
        assert result.parked_ratio > 0 and "parked / inline" in result.line()


def test_the_steps_benchmark_against_another_checkout_runs_both_in_turn(tmp_path: Path) -> None:
    """`--against DIR`: this checkout stands in for the issue day's code (the same code on both
    sides); each side's rate comes from a child process running the bench in its checkout."""
    result = bench_steps.against(Path(__file__).resolve().parents[2], 100, 2)
    assert len(result.ours) == len(result.theirs) == 2
    assert all(rate > 0 for rate in result.ours + result.theirs)
    line = result.line()
    assert "against issue day code" in line and f"{bench_steps.ISSUE_DAY_TIMES:.2f}x" in line
    with pytest.raises(SystemExit, match="not a checkout of crmflow"):
        bench_steps.against(tmp_path, 100, 1)


def test_the_feed_benchmark_passes_every_change_with_and_without_its_filter(backend: str) -> None:
    result = bench_feed.run(backend, 2_000, 1)
    assert len(result.ours) == len(result.unfiltered) == len(result.baseline) == 1
    assert "changes nobody hears" in result.line()


def test_the_timers_benchmark_measures_lateness_and_counts_early_runs(backend: str) -> None:
    result = bench_timers.run(backend, 50, 2.0)
    assert len(result.lateness) == 50
    assert result.early == 0
    assert "p99=" in result.line()


def test_the_memory_benchmark_reports_a_worker_rss(backend: str) -> None:
    result = bench_memory.run(backend, 1_000, 4.0, trickle=20)
    assert 0 < result.ours["start"] <= result.ours["peak"]
    assert "RSS" in result.line()


def test_the_delivery_benchmark_sends_every_email_and_times_it_against_bare_smtplib(
    backend: str,
) -> None:
    result = bench_delivery.run(backend, 30, 1, latency_emails=20, latency_seconds=1.0)
    assert list(result.threads) == ["1 thread", "4 threads", "1 thread, commit/1"]
    assert all(len(times) == 1 for times in result.threads.values())
    assert len(result.bare) == 1 and result.ratio() > 0
    assert len(result.latency) == 20 and min(result.latency) > 0
    lines = result.lines()
    assert len(lines) == 4 and "ratio=" in lines[0] and "p99=" in lines[3]


def test_the_cli_start_benchmark_times_both_commands_against_python() -> None:
    """No database: run once, whatever the backends (it raises if `flows validate` made one)."""
    result = bench_cli_start.run(1)
    lines = result.lines()
    assert [start.command for start in result.commands] == [
        "crmflow --help",
        "crmflow flows validate donor-thank-you.yaml",
    ]
    assert all(len(start.wall) == 1 and start.median_wall > 0 for start in result.commands)
    assert len(lines) == 2 and all("ratio=" in line and "aim < 0.5s" in line for line in lines)


def test_the_web_pages_benchmark_times_each_page_against_the_api(backend: str) -> None:
    results = bench_web_pages.run(backend, 120, 1)
    assert [r.name for r in results][-1] == "web /tasks first page"
    for result in results:
        assert len(result.page) == len(result.baseline) == len(result.page_cpu) == 1
        assert "median page=" in result.line()
