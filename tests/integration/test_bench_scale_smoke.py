"""bench_scale and bench_soak still run (tiny sizes; nothing about speed is asserted), and the
checks they print are real: a step run twice is counted as a double claim, a timer that is run
is matched to its batch and to its due time."""

from __future__ import annotations

import time
from typing import Any

import pytest
import sqlalchemy as sa

from bench import bench_scale, bench_soak
from bench.bench_steps import START
from bench.common import fresh_database
from crmflow.engine.lifecycle import LifecycleAction
from crmflow.services import flows as flow_service
from crmflow.services.context import Context
from crmflow.services.users import actor_by_username
from crmflow.store.schema import enrollments, step_runs
from crmflow.worker import run_once
from tests.conftest import skip_or_fail_without_postgres


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    if request.param == "postgres":
        skip_or_fail_without_postgres()
    return str(request.param)


def test_the_scale_benchmark_runs_worker_processes_and_finds_no_double_claim() -> None:
    skip_or_fail_without_postgres()
    result = bench_scale.run(40, 1, (1, 2))
    assert sorted(result.seconds) == [1, 2]
    assert all(len(times) == 1 and times[0] > 0 for times in result.seconds.values())
    # The workers' own counts were read (each said what it moved), and nothing ran twice.
    assert result.double_claims == {
        "steps run twice": 0,
        "history lines not 1": 0,
        "moved twice": 0,
    }
    lines = result.lines()
    assert "workers=2" in lines[1] and "ratio to 1 worker=" in lines[1]
    assert "double claims" in lines[-1] and "ok" in lines[-1]


def test_a_step_run_twice_is_counted_as_a_double_claim(backend: str) -> None:
    with fresh_database(backend) as ctx:
        ctx.clock = lambda: START
        key = bench_scale._prepare(ctx, 3)
        flow_service.change_status(
            ctx, actor_by_username(ctx, "system"), key, LifecycleAction.START, confirm_count=3
        )
        assert run_once(ctx, now=START) == 3
        assert bench_scale.count_double_claims(ctx) == {
            "steps run twice": 0,
            "history lines not 1": 0,
        }
        with ctx.engine.begin() as conn:  # what a second worker running one record would add
            conn.execute(
                sa.text(
                    "insert into step_runs (enrollment_id, run, step_key, step_type, status,"
                    " reason, started_at, finished_at, actions) select enrollment_id, run + 100,"
                    " step_key, step_type, status, reason, started_at, finished_at, actions"
                    " from step_runs where step_key = 'note' and enrollment_id ="
                    " (select min(id) from enrollments)"
                )
            )
            conn.execute(
                sa.text(
                    "insert into record_history (record_id, enrollment_id, message, at)"
                    " select record_id, enrollment_id, message, at"
                    " from record_history where message like 'Followed up %' limit 1"
                )
            )
        assert bench_scale.count_double_claims(ctx) == {
            "steps run twice": 1,
            "history lines not 1": 1,
        }


def test_the_soak_runs_every_timer_on_time_and_samples_memory(backend: str) -> None:
    result = bench_soak.run(backend, 30, 3.0, child=False)
    figures = result.figures
    assert result.problems == []
    assert figures["timers"] == figures["ran"] == figures["moved"] == 30
    assert figures["early"] == 0 and figures["unmatched"] == 0
    # Every timer is late by a little at least (the commit comes after the due time).
    assert 0 < figures["p50"] <= figures["p99"] <= figures["max"]
    assert figures["virtual"] >= 2.5  # the clock went through the window
    assert len(figures["rss"]) >= 2 and figures["peak"] > 0
    lines = result.lines()
    assert "p99=" in lines[0] and "RSS first=" in lines[1] and "virtual" in lines[2]


def test_the_soak_runs_in_a_child_process() -> None:
    result = bench_soak.run("sqlite", 10, 2.0, trace=False)
    assert result.problems == [] and result.figures["ran"] == 10
    assert result.figures["traced"] == []


def _rows(ctx: Context) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    with ctx.engine.connect() as conn:
        rows = conn.execute(sa.select(enrollments).order_by(enrollments.c.id))
        runs = conn.execute(
            sa.select(step_runs).order_by(step_runs.c.enrollment_id, step_runs.c.run)
        )
        return [tuple(r) for r in rows], [tuple(r) for r in runs]


def test_the_soak_set_up_copies_what_the_worker_writes(backend: str) -> None:
    # The bulk set-up (one enrollment by the worker, the others its copies) leaves the same
    # enrollments and step runs as the worker taking every one through `wait`.
    with fresh_database(backend) as ctx:
        bench_soak.prepare(ctx, 25, 60.0)
        bulk = _rows(ctx)
    with fresh_database(backend) as ctx:
        bench_soak.by_worker(ctx, 25, 60.0)
        worker = _rows(ctx)
    assert len(bulk[0]) == 25 and len(bulk[1]) == 25
    assert {row[5] for row in bulk[0]} == {"ring"}  # step_key
    assert len({row[8] for row in bulk[0]}) == 25  # each its own due time
    assert bulk == worker


def test_the_cpu_clock_on_postgres_counts_the_servers_work() -> None:
    skip_or_fail_without_postgres()
    with fresh_database("postgres") as ctx:
        server = bench_soak.ServerCPU(ctx.engine)
        before, mine = server(), time.process_time()
        with ctx.engine.connect() as conn:
            conn.execute(sa.text("select count(*) from generate_series(1, 3000000)")).scalar()
        spent = server() - before
        assert spent >= 0.05  # the server's counting, which the worker's own CPU time misses
        assert time.process_time() - mine < spent
