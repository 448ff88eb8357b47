"""bench_observability runs (at a tiny size: nothing about speed) and puts back the calls it
replaces, so that it cannot leave a process without its metrics."""

from __future__ import annotations

from bench import bench_observability
from crmflow import worker
from crmflow.runner import batch

REPLACED = [
    (batch, "observe_moved"),
    (batch, "log_failed_steps"),
    (batch, "in_run"),
    (batch, "left_run"),
    (worker, "observe_batch"),
]


def test_the_observability_benchmark_times_both_paths_and_restores_the_calls() -> None:
    before = [getattr(module, name) for module, name in REPLACED]
    watched, bare = bench_observability.run("sqlite", 20, 1)
    assert len(watched) == len(bare) == 1
    assert all(t > 0 for t in watched + bare)
    assert [getattr(module, name) for module, name in REPLACED] == before
    assert all(f.__module__ in ("crmflow.metrics", "crmflow.logs") for f in before)
