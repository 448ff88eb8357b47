"""Action kinds are found through one registry: the flow document's union and the registry list
the same kinds, and a new kind (its model, checks and runner in one module) works once it is
registered: the validator checks it and a step runs it, with nothing else to change."""

from __future__ import annotations

import re
import typing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

import pytest

from crmflow.engine.actions import registry
from crmflow.engine.actions.base import ActionContext, ActionResult
from crmflow.engine.actions.kind import ActionChecker, Kind
from crmflow.engine.commands import OutboxMessage, WriteHistory
from crmflow.engine.definition import Action, ActionStep, FlowDefinition
from crmflow.engine.definition.action_base import ActionBase
from crmflow.engine.definition.checks import CheckScope, FlowChecker
from crmflow.engine.recordtypes import type_catalog
from crmflow.engine.runtime import ActionStatus, RecordSnapshot
from crmflow.engine.transition import enter
from crmflow.engine.validation import ValidationContext, flow_from_data

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
CONTACT = type_catalog()["contact"]


def union_models() -> list[type[ActionBase]]:
    """The members of the flow document's `Action` union, in its order."""
    (union, *_) = typing.get_args(Action)
    return list(typing.get_args(union))


def test_the_union_and_the_registry_list_the_same_kinds_in_the_same_order() -> None:
    assert [kind.model for kind in registry.KINDS] == union_models()


@pytest.mark.parametrize("kind", registry.KINDS, ids=lambda kind: kind.type)
def test_each_kind_keeps_its_model_checks_and_runner_in_one_module(kind: Any) -> None:
    home = f"crmflow.engine.actions.{kind.type}"
    assert kind.model.__module__ == home
    assert kind.checks.__module__ == home or kind.checks.__module__.startswith(
        "crmflow.engine.actions."
    )  # remove_from_group shares add_to_group's name check
    assert kind.runner.__module__ == home


def test_each_kind_is_written_with_its_own_type() -> None:
    types = [kind.type for kind in registry.KINDS]
    written = [typing.get_args(m.model_fields["type"].annotation) for m in union_models()]
    assert [(t,) for t in types] == written
    assert len(set(types)) == len(types)
    assert "send_email" in types and "run_sql" in types


def test_the_flow_reference_has_a_section_for_every_kind() -> None:
    reference = (Path(__file__).resolve().parents[2] / "docs" / "flows.md").read_text()
    actions = reference.split("\n## Actions\n", 1)[1].split("\n## ", 1)[0]
    headed = {t for h in re.findall(r"^### (.+)$", actions, re.M) for t in h.split(" / ")}
    assert headed == {kind.type for kind in registry.KINDS}


def test_a_kind_registered_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="'history' is registered twice"):
        registry.ActionRegistry((*registry.KINDS, registry.KINDS[12]))


# -- a new kind: one module (model, checks, runner) and one registry line ----------------------


class PingAction(ActionBase):
    type: Literal["ping"]
    message: str


def check_ping(checker: ActionChecker, path: str, action: PingAction, step: ActionStep) -> None:
    if not action.message.strip():
        checker.add(f"{path}.message", "a ping needs a message")
    checker.check_text(f"{path}.message", action.message)


def run_ping(action: PingAction, index: int, ctx: ActionContext) -> ActionResult:
    command = WriteHistory(
        **ctx.ids(index, action.key), message="ping: " + ctx.render(action.message)
    )
    return ActionResult((command,), command.describe())


PING = Kind(PingAction, check_ping, run_ping)


@pytest.fixture
def with_ping(monkeypatch: pytest.MonkeyPatch) -> None:
    """The registry with one more line: PING."""
    monkeypatch.setattr(registry, "ACTION_KINDS", registry.ActionRegistry((*registry.KINDS, PING)))


def flow_with(*actions: ActionBase) -> FlowDefinition:
    """A valid flow whose one step's actions are `actions` (the document's union does not know
    the new kind, so the step is given it directly)."""
    data: dict[str, Any] = {
        "schema_version": 1,
        "key": "pinged",
        "name": "Pinged",
        "record_type": "contact",
        "triggers": [{"type": "manual"}],
        "steps": [{"key": "hello", "actions": [{"type": "history", "message": "x"}]}],
    }
    flow = flow_from_data(data, context=ValidationContext(record_types=type_catalog()))
    step = ActionStep.model_construct(**{**dict(flow.steps[0]), "actions": list(actions)})
    return FlowDefinition.model_construct(**{**dict(flow), "steps": [step]})


def test_the_validator_checks_a_new_kind_through_the_registry(with_ping: None) -> None:
    flow = flow_with(PingAction(type="ping", message=" "), PingAction(type="ping", message="{{"))
    problems = FlowChecker(flow, CheckScope(record_types=type_catalog())).run()
    assert [p.path for p in problems] == [
        "steps[0].actions[0].message",
        "steps[0].actions[1].message",
    ]
    assert problems[0].message == "a ping needs a message"
    assert "template" in problems[1].message


def test_a_step_runs_a_new_kind_through_the_registry(with_ping: None) -> None:
    flow = flow_with(PingAction(type="ping", key="hi", message="hello {{ record.first_name }}"))
    record = RecordSnapshot(id=7, type="contact", values={"first_name": "Ana"}, owner=None)
    outcome = enter(
        flow,
        enrollment_id=3,
        flow_version=1,
        record=record,
        now=NOW,
        zone=ZoneInfo("Europe/Paris"),
        record_type=CONTACT,
    )
    assert [(c.kind, c.action_key, getattr(c, "message", None)) for c in outcome.commands] == [
        ("history", "hi", "ping: hello Ana")
    ]
    actions = [(a.type, a.status) for log in outcome.log for a in log.actions]
    assert actions == [("ping", ActionStatus.DONE)]


def test_an_unregistered_kind_is_named_when_it_runs() -> None:
    flow = flow_with(PingAction(type="ping", message="hello"))
    with pytest.raises(LookupError, match="no action kind is registered for PingAction"):
        FlowChecker(flow, CheckScope(record_types=type_catalog())).run()


# -- quiet hours in the recipient's time zone -----------------------------------------------


def quiet_flow() -> FlowDefinition:
    data: dict[str, Any] = {
        "schema_version": 1,
        "key": "quiet",
        "name": "Quiet",
        "record_type": "contact",
        "timezone": "Europe/Paris",
        "calendar": {"quiet_hours": {"start": "20:00", "end": "08:00"}},
        "triggers": [{"type": "manual"}],
        "steps": [
            {"key": "hello", "actions": [{"type": "send_email", "subject": "Hi", "body": "x"}]}
        ],
    }
    return flow_from_data(data, context=ValidationContext(record_types=type_catalog()))


@pytest.mark.parametrize(
    ("zone", "held_until", "note"),
    [
        # 12:00 UTC is 13:00 in Paris (not quiet) but 07:00 in New York: held until 08:00 there.
        ("America/New_York", datetime(2026, 3, 2, 13, 0, tzinfo=UTC), "the recipient's time zone"),
        # Without a zone of their own the flow's applies: 13:00 in Paris, not held.
        (None, NOW.replace(hour=12), None),
        # A value that is not a zone name is ignored, not an error.
        ("../../etc/passwd", NOW.replace(hour=12), None),
    ],
)
def test_quiet_hours_hold_a_message_in_the_recipients_time_zone(
    zone: str | None, held_until: datetime, note: str | None
) -> None:
    values: dict[str, Any] = {"email": "ana@example.org", "last_name": "Pop"}
    if zone is not None:
        values["timezone"] = zone
    record = RecordSnapshot(id=7, type="contact", values=values, owner=None)
    outcome = enter(
        quiet_flow(),
        enrollment_id=3,
        flow_version=1,
        record=record,
        now=NOW.replace(hour=12),
        zone=ZoneInfo("Europe/Paris"),
        record_type=CONTACT,
    )
    (message,) = outcome.commands
    assert isinstance(message, OutboxMessage)
    assert message.not_before == held_until
    described = [a.detail for log in outcome.log for a in log.actions]
    if note is None:
        assert "held" not in described[0]
    else:
        assert "held by quiet hours (20:00-08:00 America/New_York" in described[0]
        assert note in described[0] and "until 2026-03-02 08:00" in described[0]
