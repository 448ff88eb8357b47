"""Every template render and CEL evaluation has a budget (issue 8): sizes, ranges, loops, numbers,
output and time. Over it, the evaluation stops quickly with a message naming the limit; what is
known to go over before it runs is refused when the flow is saved, with its line."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from crmflow.celsandbox import SANDBOX
from crmflow.engine.budget import EvaluationLimits
from crmflow.engine.conditions import check_condition
from crmflow.engine.recordtypes import type_catalog
from crmflow.engine.runtime import ActionStatus, RecordSnapshot, StepStatus
from crmflow.engine.steps.scope import BudgetExceededError, EvaluationError, Scope
from crmflow.engine.templates import check_template, render_template
from crmflow.engine.transition import enter
from crmflow.engine.validation import ValidationContext, flow_from_data, parse_flow
from crmflow.errors import InvalidInputError, LimitExceededError

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
ZONE = ZoneInfo("Europe/Paris")
FAST = 2.0  # seconds: every refusal must come well before anything runs away


@pytest.fixture(scope="module", autouse=True)
def _sandbox_started() -> None:
    """The CEL sandbox's child takes a moment to start (outside any budget): once, up front."""
    SANDBOX.warm(EvaluationLimits().cel_memory_mb)
    check_condition("1 == 1", record_fields=None)  # the CEL library's import, once


@contextmanager
def quickly() -> Iterator[None]:
    started = time.monotonic()
    yield
    assert time.monotonic() - started < FAST


def refused(text: str, limits: EvaluationLimits | None = None, **variables: Any) -> str:
    """Render `text`; it must be refused over a budget, quickly. Returns `limit: message`."""
    with quickly(), pytest.raises(LimitExceededError) as caught:
        if limits is None:
            render_template(text, variables)
        else:
            render_template(text, variables, limits=limits)
    return f"{caught.value.limit}: {caught.value}"


# -- templates at run time -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "variables"),
    [
        ("{{ 'a' * n }}", {"n": 10**9}),
        ("{{ n * 'a' }}", {"n": 10**9}),
        ("{{ [0] * n }}", {"n": 10**9}),
        ("{{ s + s }}", {"s": "x" * 400_000}),
        ("{{ 'a'.ljust(n) }}", {"n": 10**9}),
        ("{{ 'a'.center(n) }}", {"n": 10**9}),
        ("{{ 'a'.zfill(n) }}", {"n": 10**9}),
        ("{{ 'a'|center(n) }}", {"n": 10**9}),
        ("{{ 'a\nb'|indent(n) }}", {"n": 10**9}),
        ("{{ [1]|batch(n, 'x')|list }}", {"n": 10**9}),
        ("{{ s|replace('a', 'bbbbbbbbbb') }}", {"s": "a" * 100_000}),
        ("{{ s.replace('a', 'bbbbbbbbbb') }}", {"s": "a" * 100_000}),
        ("{{ ','.join(items) }}", {"items": ["x" * 1000] * 1000}),
        ("{{ items|join(',') }}", {"items": ["x" * 1000] * 1000}),
        ("{{ '%0*d' % (n, 1) }}", {"n": 10**9}),
        ("{{ '%09999999999d' % 1 }}", {}),
        ("{{ '{:>{}}'.format('a', n) }}", {"n": 10**9}),
        ("{{ '%s'|format('x') ~ ('%0' ~ n ~ 'd')|format(1) }}", {"n": 10**9}),
        (
            "{% set ns = namespace(s='ab') %}{% for i in range(40) %}"
            "{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}",
            {},
        ),
        (
            "{% set l = [1] %}{% for i in range(40) %}{% set _ = l.extend(l) %}{% endfor %}",
            {},
        ),
        (
            "{% set block %}{% for i in range(2000) %}{{ s }}{% endfor %}{% endset %}{{ 1 }}",
            {"s": "x" * 1000},
        ),
    ],
)
def test_an_operator_filter_or_method_that_would_make_a_huge_value_is_refused_before_it_does(
    text: str, variables: dict[str, Any]
) -> None:
    message = refused(text, **variables)
    assert message.startswith("size: ")
    assert "over the size budget of 500,000" in message


def test_a_huge_power_is_refused_before_it_is_computed() -> None:
    message = refused("{{ 2 ** n }}", n=10**9)
    assert message.startswith("number: 2 ** 1000000000 would make a number of about")
    assert "over the number budget of 65,536 bits" in message


def test_a_range_over_its_budget_is_refused() -> None:
    message = refused("{% for i in range(n) %}{% endfor %}", n=10**9)
    assert message == (
        "range: range() of 1,000,000,000 items is over the range budget of 10,000 "
        "(use a smaller range)"
    )


def test_nested_loops_stop_at_the_loop_budget() -> None:
    text = "{% for i in range(n) %}{% for j in range(n) %}{% endfor %}{% endfor %}"
    message = refused(text, n=9_999)
    assert message.startswith("iterations: the template went over its loop budget of 100,000")


def test_loops_over_data_count_too() -> None:
    text = (
        "{% for a in items %}{% for b in items %}{% for c in items %}"
        "{% endfor %}{% endfor %}{% endfor %}"
    )
    assert refused(text, items=list(range(100))).startswith("iterations: ")


def test_a_recursive_loop_counts_its_inner_turns() -> None:
    text = "{% for x in items recursive %}{{ loop(items) }}{% endfor %}"
    message = refused(text, items=list(range(50)))
    assert message.startswith(("iterations: ", "nesting: "))


def test_the_output_stops_at_its_budget() -> None:
    text = "{% for i in range(10000) %}{{ s }}{% endfor %}"
    message = refused(text, s="x" * 100)
    assert message == (
        "output: the template went over its output budget of 500,000 characters "
        "(make the text shorter)"
    )


def test_a_template_that_runs_too_long_stops_at_its_time_budget() -> None:
    # Each call doubles the work: 2**40 calls, little output, no large value.
    text = (
        "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(40) }}"
    )
    started = time.monotonic()
    message = refused(text, EvaluationLimits(time_limit_ms=200, max_iterations=10**9))
    assert message.startswith("time: the template went over its time budget of 200 ms")
    assert time.monotonic() - started < 1.0


def test_a_macro_that_calls_itself_forever_is_refused() -> None:
    message = refused("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}")
    assert message.startswith("nesting: the template calls itself too deeply")


def test_budgets_come_from_the_limits_given() -> None:
    small = EvaluationLimits(max_value_size=10, max_output_chars=20)
    assert refused("{{ 'a' * 11 }}", small).startswith("size: ")
    assert render_template("{{ 'a' * 10 }}", {}, limits=small) == "a" * 10
    assert refused("{{ 'a' * 10 }}{{ 'b' * 10 }}{{ 'c' }}", small).startswith("output: ")


def test_ordinary_templates_render_as_before() -> None:
    text = (
        "Dear {{ record.first_name|title }}, {{ '%05.1f' % record.amount }} "
        "{% for tag in record.tags %}{{ loop.index }}:{{ tag|upper }}{% if not loop.last %},"
        "{% endif %}{% endfor %} {{ record.tags|join('/') }} {{ '{:>6}'.format('x') }} "
        "{{ 'ab' * 2 }} {{ 2 ** 10 }} {{ range(3)|list }} {{ 'x'|center(5) }}|"
        "{% set greeting %}Hi {{ record.first_name }}{% endset %}{{ greeting ~ '!' }}"
    )
    record = {"first_name": "claire", "amount": 3.14159, "tags": ["vip", "new"]}
    assert render_template(text, {"record": record}) == (
        "Dear Claire, 003.1 1:VIP,2:NEW vip/new      x abab 1024 [0, 1, 2]   x  |Hi claire!"
    )


# -- templates at save time --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{{ 'a' * 10**9 }}", "'a' * 1000000000 would make a value of 1,000,000,000"),
        ("{{ [0] * 10**9 }}", "over the size budget of 500,000"),
        ("{{ 2 ** 1000000000 }}", "over the number budget"),
        ("{% for i in range(10**9) %}{% endfor %}", "range() of 1,000,000,000 items"),
        (
            "{% for i in range(5000) %}{% for j in range(5000) %}{% endfor %}{% endfor %}",
            "these loops inside each other would turn 25,000,000 times",
        ),
        ("{{ 'a'|center(10**9) }}", "|center(1000000000)"),
        ("{{ record.first_name|center(10**9) }}", "|center(1000000000)"),
        ("{{ 'a'.ljust(10**9) }}", ".ljust(1000000000)"),
        ("{{ '%0999999999d' % 1 }}", "a format width"),
    ],
)
def test_what_is_known_to_go_over_is_refused_when_the_template_is_checked(
    text: str, expected: str
) -> None:
    with quickly():
        issues = check_template(text, record_fields=None)
    assert len(issues) >= 1
    assert any(expected in issue.message for issue in issues), issues


def test_templates_that_only_may_go_over_are_accepted_when_checked() -> None:
    for text in (
        "{{ record.first_name * 3 }}",
        "{% for i in range(100) %}{{ i }}{% endfor %}",
        "{{ 'ab' * 1000 }}",
        "{{ record.total_donations * 1000000 }}",
    ):
        assert check_template(text, record_fields=None) == [], text


CONTEXT = ValidationContext(record_types=type_catalog())

FLOW = """\
schema_version: 1
key: runaway
name: Runaway
record_type: contact
triggers: [{type: manual}]
steps:
  - key: welcome
    actions:
      - type: history
        message: "{{ 'a' * 10**9 }}"
  - key: route
    type: decision
    branches:
      - if: "[1, 2, 3].map(x, [4, 5].map(y, x * y)).size() > 0"
        goto: done
      - if: "frobnicate(record.first_name)"
        goto: done
  - key: done
    type: end
"""


def test_a_flow_with_runaway_templates_and_conditions_is_refused_with_their_lines() -> None:
    with quickly(), pytest.raises(InvalidInputError) as caught:
        parse_flow(FLOW, context=CONTEXT, source="runaway.yaml")
    problems = {p.path: p for p in caught.value.problems}
    message = problems["steps[0].actions[0].message"]
    assert message.line == 10
    assert "'a' * 1000000000 would make a value of 1,000,000,000 characters" in message.message
    nested = problems["steps[1].branches[0].if"]
    assert nested.line == 14
    assert "inside another one" in nested.message and "not allowed" in nested.message
    unknown = problems["steps[1].branches[1].if"]
    assert unknown.line == 16
    assert "unknown CEL function 'frobnicate'" in unknown.message
    assert "runaway.yaml:10: steps[0].actions[0].message:" in str(caught.value)


# -- CEL ---------------------------------------------------------------------------------------


def sandboxed(**limits: Any) -> EvaluationLimits:
    """Limits whose heavy conditions run in the sandbox's child process, as the services'."""
    return EvaluationLimits(cel_runner=SANDBOX, **limits)


def make_scope(limits: EvaluationLimits | None = None, **values: Any) -> Scope:
    flow = flow_from_data(
        {
            "schema_version": 1,
            "key": "f",
            "name": "F",
            "record_type": "contact",
            "triggers": [{"type": "manual"}],
            "steps": [{"key": "s", "actions": [{"type": "history", "message": "x"}]}],
        },
        context=CONTEXT,
    )
    record = RecordSnapshot(id=1, type="contact", values=values, owner="andrei")
    return Scope(flow=flow, record=record, now=NOW, zone=ZONE, limits=limits or sandboxed())


def literal_list(size: int) -> str:
    return "[" + ",".join(str(i) for i in range(size)) + "]"


def test_nested_comprehensions_are_refused_at_save_and_never_run() -> None:
    big = literal_list(300)
    expression = f"{big}.map(x, {big}.map(y, x * y)).size() > 0"
    issues = check_condition(expression, record_fields=None)
    assert [i.message for i in issues] == [
        "the condition has a map/filter/all/exists/exists_one inside another one, whose cost "
        "grows with the product of the lists' sizes; nested comprehensions are not allowed"
    ]
    with quickly(), pytest.raises(BudgetExceededError) as caught:
        make_scope().holds(expression)  # a flow saved before the check: refused, not run
    assert caught.value.limit == "nesting"


def test_a_comprehension_over_a_long_list_stops_at_the_time_budget() -> None:
    scope = make_scope(sandboxed(time_limit_ms=300), items=list(range(20_000)))
    with quickly(), pytest.raises(BudgetExceededError) as caught:
        scope.holds("record.items.map(x, x * 2).size() > 0")
    assert caught.value.limit == "time"
    assert str(caught.value).startswith("the condition went over its time budget of 300 ms")


def test_a_condition_that_grows_strings_stops_at_its_memory_or_time_budget() -> None:
    scope = make_scope(
        sandboxed(time_limit_ms=1500),
        items=list(range(200)),
        text="a" * 2_000_000,
    )
    with quickly(), pytest.raises(BudgetExceededError) as caught:
        scope.holds("record.items.map(x, record.text + record.text + record.text).size() > 0")
    assert caught.value.limit in ("memory", "time")
    assert "budget" in str(caught.value)


class FakeRunner:
    """A CelRunner that runs nothing: it notes what it was given and answers `answer`."""

    def __init__(self, answer: Any = True) -> None:
        self.answer = answer
        self.calls: list[tuple[str, dict[str, Any], int, int]] = []

    def evaluate(
        self, expression: str, variables: dict[str, Any], *, time_limit_ms: int, memory_mb: int
    ) -> Any:
        self.calls.append((expression, variables, time_limit_ms, memory_mb))
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def test_a_long_chain_of_pluses_over_large_strings_goes_to_the_injected_runner() -> None:
    runner = FakeRunner(answer=True)
    expression = " + ".join(["record.text"] * 50) + " != ''"
    limits = EvaluationLimits(cel_runner=runner, time_limit_ms=700, cel_memory_mb=64)
    assert make_scope(limits, text="a" * 100_000).holds(expression) is True
    [(given, variables, time_limit_ms, memory_mb)] = runner.calls
    assert given == expression
    assert variables == {"record": {"text": "a" * 100_000}}
    assert 0 < time_limit_ms <= 700
    assert memory_mb == 64


def test_the_runner_going_over_is_worded_with_the_actions_budget() -> None:
    runner = FakeRunner(answer=LimitExceededError("time", "the CEL process went over 12 ms"))
    limits = EvaluationLimits(cel_runner=runner, time_limit_ms=700)
    with pytest.raises(BudgetExceededError) as caught:
        make_scope(limits, items=list(range(20_000))).holds("record.items.map(x, x).size() > 0")
    assert caught.value.limit == "time"
    assert str(caught.value).startswith("the condition went over its time budget of 700 ms")


def test_without_a_runner_a_heavy_condition_is_refused_not_run_in_process() -> None:
    scope = make_scope(EvaluationLimits(), items=list(range(20_000)))
    with quickly(), pytest.raises(BudgetExceededError) as caught:
        scope.holds("record.items.map(x, x * 2).size() > 0")
    assert caught.value.limit == "work"
    assert str(caught.value).startswith("this condition may do too much work to run here; ")
    # The same condition over a short list is cheap and runs in process, runner or not.
    assert make_scope(EvaluationLimits(), items=[1, 2]).holds("record.items.map(x, x * 2)[1] == 4")


def test_ordinary_conditions_stay_in_process_and_give_the_same_answers() -> None:
    runner = FakeRunner(answer=AssertionError("an ordinary condition went to the runner"))
    scope = make_scope(
        EvaluationLimits(cel_runner=runner), tags=["vip", "new"], first_name="Claire", amount=120
    )
    assert scope.holds("record.tags.exists(t, t == 'vip')") is True
    assert scope.holds("record.tags.all(t, size(t) == 3)") is True
    assert scope.holds("record.first_name + ' ' + 'Martin' == 'Claire Martin'") is True
    assert scope.holds("record.amount > 100 && record.first_name.startsWith('Cl')") is True
    assert runner.calls == []


def test_a_sandboxed_condition_gives_the_same_answer_as_in_process() -> None:
    scope = make_scope(items=list(range(5_000)))
    assert scope.holds("record.items.exists(x, x == 4999)") is True
    assert scope.holds("record.items.all(x, x < 100)") is False
    with pytest.raises(EvaluationError) as caught:
        scope.holds("record.items.exists(x, x == 'a' + 1)")
    assert "could not be evaluated" in str(caught.value)


def test_the_sandbox_survives_a_killed_evaluation() -> None:
    scope = make_scope(
        sandboxed(time_limit_ms=200, max_iterations=10**9), items=list(range(20_000))
    )
    with pytest.raises(BudgetExceededError):
        scope.holds("record.items.map(x, x).size() > 0")
    value = SANDBOX.evaluate("[1, 2].exists(x, x == 2)", {}, time_limit_ms=5000, memory_mb=256)
    assert value is True


# -- where: the action or the branch, through the engine ----------------------------------------


def run_flow(steps: list[dict[str, Any]], limits: EvaluationLimits | None = None) -> Any:
    flow = flow_from_data(
        {
            "schema_version": 1,
            "key": "f",
            "name": "F",
            "record_type": "contact",
            "triggers": [{"type": "manual"}],
            "steps": steps,
        },
        context=CONTEXT,
    )
    record = RecordSnapshot(
        id=7,
        type="contact",
        values={"first_name": "Claire", "last_name": "M", "email": "claire@example.org"},
        owner="andrei",
    )
    extra: dict[str, Any] = {} if limits is None else {"limits": limits}
    with quickly():
        return enter(
            flow,
            enrollment_id=1,
            flow_version=1,
            record=record,
            now=NOW,
            zone=ZONE,
            record_type=type_catalog()["contact"],
            **extra,
        )


def test_an_action_over_its_budget_fails_with_the_limit_and_where_and_the_others_run() -> None:
    outcome = run_flow(
        [
            {
                "key": "welcome",
                "actions": [
                    {"type": "history", "message": "{{ record.first_name * 1000000 }}"},
                    {"type": "history", "message": "still here"},
                ],
            }
        ]
    )
    [log] = [entry for entry in outcome.log if entry.status is StepStatus.FAILED]
    assert log.status is StepStatus.FAILED
    failed, done = log.actions
    assert failed.status is ActionStatus.FAILED
    assert failed.detail.startswith(
        "steps.welcome.actions[0].message: 'Claire' * 1000000 would make a value of 6,000,000 "
        "characters or items, over the size budget of 500,000"
    )
    assert done.status is ActionStatus.DONE


def test_an_action_over_its_time_budget_fails_and_says_so() -> None:
    slow = (
        "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}"
        "{{ f(record.first_name|length * 10) }}"
    )
    outcome = run_flow(
        [{"key": "mail", "actions": [{"type": "send_email", "subject": "Hi", "body": slow}]}],
        EvaluationLimits(time_limit_ms=200, max_iterations=10**9),
    )
    [log] = [entry for entry in outcome.log if entry.status is StepStatus.FAILED]
    [action] = log.actions
    assert action.status is ActionStatus.FAILED
    assert action.detail.startswith(
        "steps.mail.actions[0].body: the template went over its time budget of 200 ms"
    )


def test_a_decision_branch_over_its_budget_counts_as_false_and_says_where() -> None:
    # A literal list of 1,900 items (as many as the 4,000 characters of a condition hold): too
    # much work for the process, sent to the sandbox, which the library's `map` (quadratic)
    # keeps busy for about 170 ms, well past 50 ms (1,000 items took about 60 ms: too close).
    expression = "[" + ",".join(["1"] * 1900) + "].map(x, x).size() > 0"
    outcome = run_flow(
        [
            {
                "key": "route",
                "type": "decision",
                "branches": [{"if": expression, "goto": "a"}],
                "else": "b",
            },
            {"key": "a", "type": "end"},
            {"key": "b", "type": "end"},
        ],
        sandboxed(time_limit_ms=50),
    )
    [log] = [entry for entry in outcome.log if entry.step_key == "route"]
    assert log.reason.startswith("no branch holds: else, going to 'b'; branch 1 counted as false: ")
    assert (
        "steps.route.branches[0].if: the condition went over its time budget of 50 ms" in log.reason
    )
