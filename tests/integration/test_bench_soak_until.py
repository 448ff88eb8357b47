"""bench_soak --until: the soak stops after that much virtual time, with the figures of the
timers run by then, and a soak stopped early is not reported as one that lost timers."""

from __future__ import annotations

from bench import bench_soak


def test_a_soak_stopped_early_counts_the_timers_run_by_then() -> None:
    # 40 timers due over 40 s of virtual time, stopped after 10 s: about a quarter run.
    result = bench_soak.run("sqlite", 40, 40.0, trace=False, until=10.0)
    figures = result.figures
    assert result.problems == []
    assert 0 < figures["moved"] == figures["ran"] < 40
    assert figures["early"] == 0 and figures["unmatched"] == 0
    assert "(stopped there)" in result.lines()[2]
