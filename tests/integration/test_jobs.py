"""Background jobs (services.jobs) survive their runner: a runner stopped in the middle of a
job (as a killed process leaves it: claimed, its lease running) is taken over by the next one
once the lease has expired, which finishes it with exact counts; on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from crmflow.cli.common import state
from crmflow.cli.main import app as cli
from crmflow.engine.definition import FlowStatus
from crmflow.errors import JobLeaseLostError
from crmflow.services import flows, jobs, queries, records
from crmflow.services.context import Actor, Context
from crmflow.store import jobs as job_store
from crmflow.store.schema import records as records_table
from crmflow.testing import FrozenClock
from tests.integration.test_web_flows import _text


class Killed(BaseException):
    """What a SIGKILL does to a runner, in-process: it stops where it is, cleaning nothing."""


def _contacts(ctx: Context) -> list[str]:
    with ctx.engine.connect() as conn:
        rows = conn.execute(
            sa.select(records_table.c.data)
            .where(records_table.c.type == "contact")
            .order_by(records_table.c.id)
        )
        return [r.data["last_name"] for r in rows]


def _csv(rows: int, bad: set[int]) -> bytes:
    lines = ["first_name,last_name,email"]
    for i in range(rows):
        email = "not-an-email" if i in bad else f"c{i}@example.org"
        lines.append(f"C,N{i:03},{email}")
    return ("\n".join(lines) + "\n").encode()


def test_an_import_killed_mid_way_is_finished_by_the_next_runner_with_exact_counts(
    ctx: Context, manager: Actor, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(jobs, "IMPORT_BATCH_ROWS", 4)
    # 20 rows in batches of 4; rows 2 and 13 are bad (lines 4 and 15: the header is line 1).
    body = _csv(20, bad={2, 13})
    job = jobs.submit_import(
        ctx, manager, type_key="contact", filename="people.csv", content=body, fmt="csv"
    )
    assert (job.state, job.total, job.percent) == ("waiting", len(body), 0)

    batches = 0

    def die_after_two_batches(_job_id: int) -> None:
        nonlocal batches
        batches += 1
        if batches == 2:
            raise Killed

    first = jobs.JobRunner(ctx, name="first", after_step=die_after_two_batches)
    with pytest.raises(Killed):
        first.run_one()
    seen = jobs.get_job(ctx, manager, job.id)
    assert seen.state == "running" and seen.attempts == 1
    report = seen.report
    assert report is not None
    assert (report.read, report.imported, report.rejected) == (9, 8, 1)  # 2 batches committed
    assert len(_contacts(ctx)) == 8
    assert 0 < seen.percent < 100

    # Another runner sees nothing to take while the dead runner's lease runs...
    second = jobs.JobRunner(ctx, name="second")
    assert second.run_once() == 0
    # ...and goes on from the last committed batch once it has expired.
    clock.advance(jobs.LEASE + timedelta(seconds=1))
    assert second.run_once() == 1
    done = jobs.get_job(ctx, manager, job.id)
    assert (done.state, done.attempts, done.percent, done.error) == ("done", 2, 100, None)
    final = done.report
    assert final is not None
    assert (final.read, final.imported, final.rejected) == (20, 18, 2)
    assert [e.line for e in final.errors] == [4, 15]
    assert final.source == "people.csv"
    names = _contacts(ctx)
    assert names == [f"N{i:03}" for i in range(20) if i not in {2, 13}]  # each once, in order
    with ctx.engine.connect() as conn:
        assert job_store.content_of(conn, job.id) is None  # the upload is not kept after


def test_a_runner_whose_lease_was_taken_over_cannot_commit(ctx: Context, manager: Actor,
                                                           clock: FrozenClock) -> None:  # fmt: skip
    job = jobs.submit_import(
        ctx, manager, type_key="contact", filename="a.csv", content=_csv(1, set()), fmt="csv"
    )
    lease = timedelta(seconds=60)
    taken = job_store.claim(ctx.engine, owner="slow", now=ctx.now(), lease=lease, kinds=jobs.KINDS)
    assert taken is not None and taken.id == job.id
    clock.advance(seconds=61)
    again = job_store.claim(ctx.engine, owner="new", now=ctx.now(), lease=lease, kinds=jobs.KINDS)
    assert again is not None and again.attempts == 2
    with pytest.raises(JobLeaseLostError), ctx.engine.begin() as conn:
        job_store.advance(conn, job.id, owner="slow", now=ctx.now(), lease=lease, done=1)


def _start_list_flow(ctx: Context, admin: Actor, count: int) -> None:
    for i in range(count):
        records.create_record(ctx, admin, "contact", {"last_name": f"L{i}", "status": "lead"})
    queries.save_query(
        ctx,
        admin,
        name="leads",
        record_type="contact",
        filter={"field": "status", "op": "=", "value": "lead"},
    )
    extra = "triggers:\n  - type: start_list\n    query: leads\n"
    flows.create_flow(
        ctx, admin, _text("big", "Big").replace("triggers:\n  - type: manual\n", extra)
    )


def test_a_start_whose_runner_died_is_started_once_by_the_next_runner(
    ctx: Context, admin: Actor, clock: FrozenClock
) -> None:
    _start_list_flow(ctx, admin, 5)
    job, new = jobs.submit_flow_start(ctx, admin, "big", 5, None)
    assert new
    same, new = jobs.submit_flow_start(ctx, admin, "big", 5, None)
    assert (same.id, new) == (job.id, False)  # one start of a flow at a time
    # A runner takes it and dies before its start commits: the job is claimed, nothing started.
    dead = job_store.claim(
        ctx.engine, owner="dead", now=ctx.now(), lease=jobs.LEASE, kinds=jobs.KINDS
    )
    assert dead is not None
    assert flows.get_flow(ctx, admin, "big").status is FlowStatus.DRAFT
    runner = jobs.JobRunner(ctx, name="next")
    assert runner.run_once() == 0
    clock.advance(jobs.LEASE + timedelta(seconds=1))
    assert runner.run_once() == 1
    view = flows.get_flow(ctx, admin, "big")
    assert (view.status, view.inside) == (FlowStatus.ACTIVE, 5)
    done = jobs.get_job(ctx, admin, job.id)
    assert (done.state, done.done, done.total, done.attempts) == ("done", 5, 5, 2)
    # Done in the start's own transaction: nothing is left for a runner to start again.
    clock.advance(jobs.LEASE * 2)
    assert runner.run_once() == 0
    assert flows.get_flow(ctx, admin, "big").inside == 5


def test_a_start_refused_when_it_runs_fails_saying_why_and_starts_nothing(
    ctx: Context, admin: Actor, member: Actor
) -> None:
    _start_list_flow(ctx, admin, 3)
    job, _ = jobs.submit_flow_start(ctx, admin, "big", 3, None)
    records.create_record(ctx, admin, "contact", {"last_name": "Late", "status": "lead"})
    assert jobs.JobRunner(ctx, name="r").run_once() == 1
    failed = jobs.get_job(ctx, admin, job.id)
    assert failed.state == "failed"
    assert failed.error is not None
    assert "4" in failed.error and "nothing was started" in failed.error
    assert flows.get_flow(ctx, admin, "big").status is FlowStatus.DRAFT
    # Only who asked, or an admin, sees a job; the others are told it is not theirs.
    with pytest.raises(Exception, match="belongs to someone else"):
        jobs.get_job(ctx, member, job.id)
    assert [j.id for j in jobs.list_jobs(ctx, member)] == []


def test_a_runner_told_to_stop_hands_its_import_back_for_the_next_at_once(
    ctx: Context, manager: Actor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(jobs, "IMPORT_BATCH_ROWS", 4)
    body = _csv(10, bad={7})
    job = jobs.submit_import(
        ctx, manager, type_key="contact", filename="ten.csv", content=body, fmt="csv"
    )
    stopping = jobs.JobRunner(ctx, name="stopping")
    stopping.after_step = lambda _job_id: stopping.stop()  # a SIGTERM during the first batch
    assert stopping.run_one()
    handed = jobs.get_job(ctx, manager, job.id)
    assert (handed.state, handed.attempts) == ("waiting", 1)
    assert handed.report is not None and handed.report.read == 4
    assert jobs.JobRunner(ctx, name="next").run_once() == 1  # no lease to wait for
    done = jobs.get_job(ctx, manager, job.id)
    assert done.report is not None
    assert (done.state, done.report.read, done.report.imported, done.report.rejected) == (
        "done",
        10,
        9,
        1,
    )
    assert len(_contacts(ctx)) == 9


def test_jobs_list_on_the_command_line(
    ctx: Context, admin: Actor, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = jobs.submit_import(
        ctx, admin, type_key="contact", filename="x.csv", content=_csv(1, set()), fmt="csv"
    )
    monkeypatch.setattr(state, "_context", ctx)
    listed = CliRunner().invoke(cli, ["jobs", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    [shown] = json.loads(listed.output)
    assert (shown["id"], shown["kind"], shown["subject"], shown["state"], shown["by"]) == (
        job.id,
        "import",
        "type:contact",
        "waiting",
        admin.username,
    )
    done = CliRunner().invoke(cli, ["jobs", "list", "--state", "done", "--json"])
    assert json.loads(done.output) == []
    bad = CliRunner().invoke(cli, ["jobs", "list", "--state", "finished"])
    assert bad.exit_code != 0
    assert "'finished' is not a state (one of waiting, running, done, failed)" in bad.output
