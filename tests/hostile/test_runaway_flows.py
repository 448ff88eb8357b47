"""Runaway flows (issue 8): a template or condition that would eat the machine fails its own
record's action with the limit and the place, within the time budget, while the other records
and flows of the same batch go on (SQLite and PostgreSQL, frozen clock)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from crmflow.engine.lifecycle import LifecycleAction
from crmflow.errors import InvalidInputError
from crmflow.services import enrollments as runs
from crmflow.services import flows, records, run_views
from crmflow.services.context import Actor, Context
from crmflow.worker import run_once
from tests.conftest import FrozenClock

# Claire's message is a billion-character string; her second action runs for ever (each call
# of the macro doubles the work). Ana's are ordinary.
RUNAWAY = """\
schema_version: 1
key: runaway
name: Runaway
record_type: contact
triggers: [{type: manual}]
steps:
  - key: welcome
    timing: {type: after, amount: 1, unit: hours}
    actions:
      - type: history
        message: >-
          {% if record.first_name == 'Claire' %}{{ record.first_name * 1000000000 }}{% else %}Hello
          {{ record.first_name }}{% endif %}
      - type: send_email
        subject: Welcome
        body: >-
          {% macro grow(n) %}{% if n %}{{ grow(n - 1) }}{{ grow(n - 1) }}{% endif %}{% endmacro %}
          {% if record.first_name == 'Claire' %}{{ grow(60) }}{% endif %}Welcome!
"""

CALM = """\
schema_version: 1
key: calm
name: Calm
record_type: contact
triggers: [{type: manual}]
steps:
  - key: note
    timing: {type: after, amount: 1, unit: hours}
    actions:
      - type: history
        message: "Noted {{ record.first_name }}"
"""


def _flow(ctx: Context, admin: Actor, text: str) -> str:
    key = text.split("key: ", 1)[1].split("\n", 1)[0]
    flows.create_flow(ctx, admin, text)
    flows.change_status(ctx, admin, key, LifecycleAction.START)
    return key


def _contact(ctx: Context, admin: Actor, name: str) -> int:
    values = {"first_name": name, "last_name": "Martin", "email": f"{name.lower()}@example.org"}
    return records.create_record(ctx, admin, "contact", values).id


def _actions(ctx: Context, admin: Actor, rid: int, flow: str) -> list[dict[str, Any]]:
    [view] = [e for e in run_views.record_status(ctx, admin, rid).enrollments if e.flow == flow]
    actions: list[dict[str, Any]] = view.step_runs[-1].actions
    return actions


def test_a_runaway_template_fails_its_record_with_the_reason_and_the_batch_goes_on(
    ctx: Context, admin: Actor, clock: FrozenClock
) -> None:
    _flow(ctx, admin, RUNAWAY)
    _flow(ctx, admin, CALM)
    claire, ana = _contact(ctx, admin, "Claire"), _contact(ctx, admin, "Ana")
    for rid in (claire, ana):
        runs.start_record(ctx, admin, "runaway", rid)
    runs.start_record(ctx, admin, "calm", claire)

    clock.advance(hours=1)
    started = time.monotonic()
    assert run_once(ctx) == 3  # one batch: Claire twice, Ana once
    # The size refusal is immediate; the runaway body stops at its loop or 1 s time budget.
    assert time.monotonic() - started < 3.0

    huge, endless = _actions(ctx, admin, claire, "runaway")
    assert huge["status"] == "failed"
    assert huge["detail"].startswith(
        "steps.welcome.actions[0].message: 'Claire' * 1000000000 would make a value of "
        "6,000,000,000 characters or items, over the size budget of 500,000"
    )
    assert endless["status"] == "failed"
    # Whichever budget it meets first (on a fast machine, 100,000 calls come before 1 s).
    assert endless["detail"].startswith(
        (
            "steps.welcome.actions[1].body: the template went over its time budget of 1,000 ms",
            "steps.welcome.actions[1].body: the template went over its loop budget of 100,000",
        )
    )
    assert [a["status"] for a in _actions(ctx, admin, ana, "runaway")] == ["done", "done"]
    assert [a["status"] for a in _actions(ctx, admin, claire, "calm")] == ["done"]


def test_a_flow_whose_template_is_known_to_run_away_is_refused_when_saved(
    ctx: Context, admin: Actor
) -> None:
    text = CALM.replace("Noted {{ record.first_name }}", "{{ 'a' * 10**9 }}")
    with pytest.raises(InvalidInputError) as caught:
        flows.create_flow(ctx, admin, text)
    [problem] = caught.value.problems
    assert problem.path == "steps[0].actions[0].message"
    assert problem.line == 11
    assert "'a' * 1000000000 would make a value of 1,000,000,000 characters" in problem.message


def test_the_action_time_limit_setting_is_the_budget_the_worker_gives_each_action(
    ctx: Context, admin: Actor, clock: FrozenClock
) -> None:
    # 9 x 9,999 loop turns: within the loop budget, and some tens of milliseconds of work.
    slow = CALM.replace(
        "Noted {{ record.first_name }}",
        "{% for i in range(9) %}{% for j in range(9999) %}{% endfor %}{% endfor %}Noted",
    )
    _flow(ctx, admin, slow)
    ana = _contact(ctx, admin, "Ana")
    runs.start_record(ctx, admin, "calm", ana)
    ctx.settings.action_time_limit_ms = 1
    clock.advance(hours=1)
    assert run_once(ctx) == 1
    [note] = _actions(ctx, admin, ana, "calm")
    assert note["status"] == "failed"
    assert "over its time budget of 1 ms" in note["detail"]

    claire = _contact(ctx, admin, "Claire")
    runs.start_record(ctx, admin, "calm", claire)
    ctx.settings.action_time_limit_ms = 5_000
    clock.advance(hours=1)
    assert run_once(ctx) == 1
    assert [a["status"] for a in _actions(ctx, admin, claire, "calm")] == ["done"]


# Three steps due one after the other, each some milliseconds of template work.
WORK = "{% for i in range(9) %}{% for j in range(9999) %}{% endfor %}{% endfor %}"
CHAIN = """\
schema_version: 1
key: chain
name: Chain
record_type: contact
triggers: [{type: manual}]
steps:
""" + "".join(
    f"  - key: {key}\n    actions: [{{type: history, message: '{WORK}{key}'}}]\n"
    for key in ("one", "two", "three")
)


def test_the_batch_time_limit_cuts_a_records_run_of_steps_and_the_next_batch_goes_on(
    ctx: Context, admin: Actor
) -> None:
    # With a limit of 1 ms, each call of the engine (each write transaction: the manual start,
    # then each worker batch) runs one step; the next batch takes the record up where the last
    # one stopped and runs each step once.
    ctx.settings.batch_time_limit_ms = 1
    assert ctx.evaluation_limits.call_time_limit_ms == 1
    _flow(ctx, admin, CHAIN)
    ana = _contact(ctx, admin, "Ana")
    runs.start_record(ctx, admin, "chain", ana)
    [view] = [e for e in run_views.record_status(ctx, admin, ana).enrollments if e.flow == "chain"]
    assert (view.status, view.step) == ("active", "two")
    assert view.waiting_for == (
        "continues in the next batch: this run of steps went over its time budget of 1 ms"
    )
    assert run_once(ctx) == 2
    [view] = [e for e in run_views.record_status(ctx, admin, ana).enrollments if e.flow == "chain"]
    assert view.status == "finished"
    assert [(r.run, r.step) for r in view.step_runs] == [(1, "one"), (2, "two"), (3, "three")]
    assert [r.reason.split(":")[0] for r in view.step_runs[1:]] == ["ran in the next batch"] * 2
