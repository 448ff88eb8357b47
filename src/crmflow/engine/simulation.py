"""Run a flow for one record in virtual time and list what would happen and when.

First the entry rules every trigger follows (`engine.entry`: the flow's status, the loop guard
and the re-entry policy over the record's past entries, the entry condition): a record they keep
out "would not enter", and the simulation says why. Then the same `enter` / `advance` as the
worker, jumping from one due instant to the next: nothing is stored or sent. Changes to the
record (update_record, set_status) apply to an in-memory copy, so later conditions see them;
every other command is listed. Approvals are answered at once with a chosen button (default:
the first). A simulation cannot invent record changes, so a step that waits for one waits until
its timeout, or the simulation stops there and says so.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from crmflow.engine.budget import DEFAULT_LIMITS, EvaluationLimits
from crmflow.engine.commands import COMMANDS, Command
from crmflow.engine.definition import ApprovalStep, FlowDefinition
from crmflow.engine.entry import PastEntry, entry_refusal
from crmflow.engine.localtime import format_local
from crmflow.engine.querylang import day_start, parse_time_value
from crmflow.engine.recordtypes import FieldType, RecordType
from crmflow.engine.runtime import (
    DecisionMade,
    EnrollmentState,
    RecordSnapshot,
    WaitKind,
)
from crmflow.engine.transition import Outcome, advance, enter
from crmflow.errors import InvalidInputError, Problem

__all__ = [
    "NOT_ENTERED",
    "SIMULATED_BY",
    "Simulation",
    "TimelineEntry",
    "sample_record",
    "simulate",
]

SIMULATED_BY = "simulation"
_MAX_CALLS = 10_000  # a flow waking more often than this in one simulation is not worth listing


@dataclass(frozen=True)
class TimelineEntry:
    """One line of the timeline: at `at`, step `step` did `text` (`status`: done, skipped,
    failed, waiting, ended, `due` for the next step's due time, or `not entered`)."""

    at: datetime
    step: str | None
    status: str
    text: str
    action: str | None = None  # the action's type, for lines about one action

    def as_dict(self) -> dict[str, Any]:
        return {
            "at": self.at.isoformat(),
            "step": self.step,
            "action": self.action,
            "status": self.status,
            "text": self.text,
        }


NOT_ENTERED = "not entered"


@dataclass(frozen=True)
class Simulation:
    flow_key: str
    start: datetime
    until: datetime
    state: EnrollmentState | None  # None: the record would not enter (`stopped` says why)
    record: RecordSnapshot
    timeline: tuple[TimelineEntry, ...]
    commands: tuple[Command, ...]
    stopped: str  # why the simulation stopped
    decisions: tuple[tuple[str, str], ...] = field(default=())  # (step, button) pressed

    def as_dict(self) -> dict[str, Any]:
        return {
            "flow": self.flow_key,
            "start": self.start.isoformat(),
            "until": self.until.isoformat(),
            "status": self.state.status.value if self.state else NOT_ENTERED,
            "end_reason": self.state.end_reason if self.state else self.stopped,
            "stopped": self.stopped,
            "timeline": [entry.as_dict() for entry in self.timeline],
            "commands": COMMANDS.dump_python(list(self.commands), mode="json"),
            "record": {"id": self.record.id, "owner": self.record.owner, **self.record.values},
        }


def sample_record(
    data: Mapping[str, Any],
    record_type: RecordType,
    *,
    now: datetime,
    zone: ZoneInfo,
    record_id: int = 1,
) -> RecordSnapshot:
    """A record from a sample file `{record_type, owner, values}`, checked against its type.

    Every field of the type is present (None when the sample leaves it out), as in the store.
    """
    if not isinstance(data, Mapping) or not isinstance(data.get("values"), Mapping):
        raise InvalidInputError(
            "the sample record",
            [Problem("values", "is missing", 'write {"record_type": ..., "values": {...}}')],
        )
    given = data.get("record_type")
    if given is not None and given != record_type.key:
        raise InvalidInputError(
            "the sample record",
            [Problem("record_type", f"is {given!r} but the flow runs on {record_type.key!r}")],
        )
    values = record_type.normalise(
        _resolve_relative_dates(data["values"], record_type, now, zone), zone=zone
    )
    owner = data.get("owner")
    return RecordSnapshot(
        id=record_id,
        type=record_type.key,
        values={key: values.get(key) for key in record_type.field_keys},
        owner=owner if isinstance(owner, str | int) else None,
        created_at=now,
        updated_at=now,
    )


def _resolve_relative_dates(
    values: Mapping[str, Any], record_type: RecordType, now: datetime, zone: ZoneInfo
) -> dict[str, Any]:
    """Sample records may give dates relative to the simulation's start (`today + 20 days`,
    `today + 20 days + 18 hours`), so that a sample stays meaningful whenever it is run."""
    out = dict(values)
    for key, raw in values.items():
        fdef = record_type.field(key)
        if fdef is None or fdef.type not in (FieldType.DATE, FieldType.DATETIME):
            continue
        if not isinstance(raw, str) or raw[:4].isdigit():
            continue  # absolute values go through the type's own checks
        try:
            resolved = parse_time_value(raw).resolve(now, zone)
        except ValueError:
            continue  # left as it is: normalise() reports it with the field's name
        if isinstance(resolved, datetime) or fdef.type is FieldType.DATE:
            out[key] = resolved.isoformat()
        else:
            out[key] = day_start(resolved, zone).isoformat()
    return out


def _check_decisions(flow: FlowDefinition, decisions: Mapping[str, str]) -> None:
    problems: list[Problem] = []
    for step_key, button in decisions.items():
        step = flow.step(step_key)
        if not isinstance(step, ApprovalStep):
            approvals = [s.key for s in flow.steps if isinstance(s, ApprovalStep)]
            problems.append(
                Problem(
                    step_key,
                    "is not an approval step of the flow",
                    f"approval steps: {', '.join(approvals) or 'none'}",
                )
            )
        elif button not in {b.key for b in step.buttons}:
            known = ", ".join(b.key for b in step.buttons)
            problems.append(Problem(step_key, f"has no button {button!r}", f"buttons: {known}"))
    if problems:
        raise InvalidInputError("the decisions", problems)


def _entries(outcome: Outcome, zone: ZoneInfo) -> list[TimelineEntry]:
    out: list[TimelineEntry] = []
    for run in outcome.log:
        out.append(TimelineEntry(run.at, run.step_key, run.status.value, run.reason))
        out += [
            TimelineEntry(run.at, run.step_key, a.status.value, a.detail, action=a.type)
            for a in run.actions
        ]
    state = outcome.state
    waiting = state.waiting
    if state.is_over or waiting is None or waiting.kind not in (WaitKind.TIMER, WaitKind.EVENT):
        return out
    at = outcome.log[-1].at if outcome.log else state.step_since
    if at is None:  # pragma: no cover - a current step always has its start
        return out
    if waiting.kind is WaitKind.TIMER:
        when = f"at {format_local(state.due_at, zone)}" if state.due_at else "not scheduled"
        text = f"next: {state.step_key!r} {when} ({waiting.description})"
        out.append(TimelineEntry(at, state.step_key, "due", text))
    else:
        text = f"{state.step_key!r} starts on an event ({waiting.description})"
        out.append(TimelineEntry(at, state.step_key, "waiting", text))
    return out


def simulate(
    flow: FlowDefinition,
    record: RecordSnapshot,
    *,
    start: datetime,
    until: datetime,
    zone: ZoneInfo,
    decisions: Mapping[str, str] | None = None,
    record_type: RecordType | None = None,
    limits: EvaluationLimits = DEFAULT_LIMITS,
    flow_status: str = "active",
    past: Sequence[PastEntry] = (),
) -> Simulation:
    """The timeline of `record` going through `flow` from `start` to `until` (virtual time).

    The record first meets the entry rules, as the flow in `flow_status` with its `past`
    entries in the flow (newest first); one they keep out would not enter: the simulation stops
    there, `stopped` saying "would not enter: <reason>".
    `decisions` maps an approval step's key to the button pressed there (default: the first).
    `limits` are the budgets of each template and condition, and where heavy conditions run
    (`cel_runner`; without one they are refused, as they would be in a worker without one).
    A simulation has no write transaction to keep short: its runs of steps are never cut by
    a call's time budget, so the timeline does not depend on how fast the machine is.
    Raises InvalidInputError when a decision names an unknown step or button.
    """
    limits = replace(limits, call_time_limit_ms=None)
    decisions = dict(decisions or {})
    _check_decisions(flow, decisions)
    refusal = entry_refusal(
        flow_status, flow, record, past=past, now=start, zone=zone, limits=limits
    )
    if refusal is not None:
        return _not_entered(flow, record, start=start, until=until, refusal=refusal)
    outcome = enter(
        flow,
        enrollment_id=1,
        flow_version=1,
        record=record,
        now=start,
        zone=zone,
        record_type=record_type,
        limits=limits,
    )
    timeline = _entries(outcome, zone)
    commands = list(outcome.commands)
    pressed: list[tuple[str, str]] = []
    for _ in range(_MAX_CALLS):
        stopped = _stop_reason(outcome.state, until)
        if stopped is not None:
            break
        outcome = _wake(
            flow,
            outcome,
            start=start,
            zone=zone,
            decisions=decisions,
            pressed=pressed,
            record_type=record_type,
            limits=limits,
        )
        if outcome.refused:  # pragma: no cover - decisions are checked up front
            stopped = f"a decision was refused: {outcome.refused}"
            break
        timeline += _entries(outcome, zone)
        commands += outcome.commands
    else:
        stopped = f"stopped after {_MAX_CALLS} wake-ups"
    return Simulation(
        flow_key=flow.key,
        start=start,
        until=until,
        state=outcome.state,
        record=outcome.record,
        timeline=tuple(timeline),
        commands=tuple(commands),
        stopped=stopped,
        decisions=tuple(pressed),
    )


def _not_entered(
    flow: FlowDefinition, record: RecordSnapshot, *, start: datetime, until: datetime, refusal: str
) -> Simulation:
    """The simulation of a record the entry rules keep out: one line saying why, no state."""
    return Simulation(
        flow.key,
        start,
        until,
        state=None,
        record=record,
        timeline=(TimelineEntry(start, None, NOT_ENTERED, refusal),),
        commands=(),
        stopped=f"would not enter: {refusal}",
    )


def _stop_reason(state: EnrollmentState, until: datetime) -> str | None:
    """Why the simulation stops at `state`, or None when it goes on: a decision to take (the
    simulation presses a button), or a step due by `until`."""
    if state.is_over:
        return f"the record {state.status.value} the flow: {state.end_reason}"
    if _awaits_decision(state):
        return None
    if state.due_at is None:
        what = state.waiting.description if state.waiting else "an event"
        return f"the record waits at {state.step_key!r} ({what}); a simulation cannot change it"
    if state.due_at > until:
        return f"the next step, {state.step_key!r}, is due after the end of the simulation"
    return None


def _awaits_decision(state: EnrollmentState) -> bool:
    """Whether the record waits for a button at its step (which the simulation presses)."""
    return (
        state.waiting is not None
        and state.waiting.kind is WaitKind.APPROVAL
        and bool(state.step_key)
    )


def _wake(
    flow: FlowDefinition,
    outcome: Outcome,
    *,
    start: datetime,
    zone: ZoneInfo,
    decisions: Mapping[str, str],
    pressed: list[tuple[str, str]],
    record_type: RecordType | None,
    limits: EvaluationLimits,
) -> Outcome:
    """The next call, as a worker would make it: the button of an approval pressed at once
    (the one `decisions` names, else the first; added to `pressed`), or the timer of the step
    due next fired at its due time. `_stop_reason` said the simulation goes on."""
    state = outcome.state
    if _awaits_decision(state):
        assert state.waiting is not None and state.step_key is not None
        button = decisions.get(state.step_key) or state.waiting.buttons[0].key
        pressed.append((state.step_key, button))
        event = DecisionMade(
            step_key=state.step_key, button=button, by=SIMULATED_BY, comment="simulated"
        )
        now = max(outcome.log[-1].at if outcome.log else start, start)
        return advance(
            flow,
            state,
            outcome.record,
            now=now,
            zone=zone,
            event=event,
            record_type=record_type,
            limits=limits,
        )
    assert state.due_at is not None  # _stop_reason stops a record with no due time
    return advance(
        flow,
        state,
        outcome.record,
        now=state.due_at,
        zone=zone,
        record_type=record_type,
        limits=limits,
    )
