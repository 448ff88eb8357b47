"""`crmflow simulate FLOW --record FILE --until "30 days"`: a flow in virtual time, for one record.

Nothing is stored or sent, and no database is needed: the flow is checked against the built-in
record types plus the YAML types in a `types/` folder beside the flow (or `examples/types`). The
record first meets the entry rules (the flow's status, `--flow-status`; its re-entry policy and
loop guard over the record's past entries, `--entered`; its entry condition): one they keep out
"would not enter", and the output says why.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated
from zoneinfo import ZoneInfo

import typer

from crmflow.cli.common import (
    console,
    print_json,
    print_table,
    read_record_type_files,
    read_text_file,
    reports_errors,
)
from crmflow.engine.numbers import whole_number
from crmflow.errors import InvalidInputError, Problem

if TYPE_CHECKING:
    from crmflow.engine.definition import FlowDefinition
    from crmflow.engine.entry import PastEntry
    from crmflow.engine.recordtypes import RecordType
    from crmflow.engine.runtime import RecordSnapshot
    from crmflow.engine.simulation import Simulation

__all__ = ["parse_until", "simulate"]

_SPAN = re.compile(r"^\s*(\d+)\s*(minute|hour|day|week)s?\s*$", re.IGNORECASE)
# How far a simulation reaches, forwards (--until) or back (--entered): ten years, far enough for
# any flow's timings, and well inside the dates a computer can count (year 9999).
MAX_SPAN = timedelta(days=3660)
_SPAN_HINT = "simulate at most ten years (3660 days) from the start"


def _instant(text: str, zone: ZoneInfo, what: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
        return (value if value.tzinfo else value.replace(tzinfo=zone)).astimezone(UTC)
    except ValueError:
        raise InvalidInputError(
            what, [Problem("", f"{text!r} is not a date-time", "write 2026-06-01T09:00")]
        ) from None
    except OverflowError:  # the year 9999 in a zone east of UTC
        raise InvalidInputError(what, [Problem("", f"{text!r} is too far", _SPAN_HINT)]) from None


def _span(text: str, zone: ZoneInfo, what: str) -> timedelta | datetime:
    """`30 days`, `2 weeks`, `12 hours`, `90 minutes` as a timedelta, or an ISO date-time."""
    match = _SPAN.match(text)
    if match is None:
        if text[:1].isdigit() and "-" in text:
            return _instant(text, zone, what)
        raise InvalidInputError(
            what,
            [Problem("", f"{text!r} is not a span", 'write "30 days", "2 weeks" or a date-time')],
        )
    # 12 digits at most: more is past any date (and int() refuses past 4,300 digits).
    amount, unit = whole_number(match.group(1), max_digits=12), match.group(2).lower()
    try:
        span = MAX_SPAN + timedelta(days=1) if amount is None else timedelta(**{f"{unit}s": amount})
    except OverflowError:
        span = MAX_SPAN + timedelta(days=1)
    if span > MAX_SPAN:
        raise InvalidInputError(
            what, [Problem("", f"{text.strip()[:40]!r} is more than ten years", _SPAN_HINT)]
        )
    return span


def parse_until(text: str, start: datetime, zone: ZoneInfo) -> datetime:
    """`30 days`, `2 weeks`, `12 hours`, `90 minutes` after `start`, or an ISO date-time: at
    most MAX_SPAN after it, and after it."""
    span = _span(text, zone, "--until")
    try:
        latest = start + MAX_SPAN
    except OverflowError:
        raise InvalidInputError(
            "--start", [Problem("", "is too close to the year 9999", "start from an earlier date")]
        ) from None
    end = start + span if isinstance(span, timedelta) else span  # a span is at most MAX_SPAN
    if end > latest:
        raise InvalidInputError(
            "--until", [Problem("", f"{text.strip()!r} is more than ten years ahead", _SPAN_HINT)]
        )
    if end <= start:
        raise InvalidInputError(
            "--until",
            [Problem("", f"{text.strip()!r} is not after the start", "give a later date-time")],
        )
    return end


def _past(items: list[str], start: datetime, zone: ZoneInfo) -> list[PastEntry]:
    """The record's past entries in the flow from `STATUS=WHEN` items (`finished=40 days`:
    entered 40 days before the start and finished; or `finished=2024-03-01T09:00`), newest
    first."""
    from crmflow.engine.entry import PastEntry
    from crmflow.engine.runtime import EnrollmentStatus

    statuses = [s.value for s in EnrollmentStatus]
    past: list[PastEntry] = []
    problems: list[Problem] = []
    for item in items:
        status, sep, when = (part.strip() for part in item.partition("="))
        if not sep or status not in statuses or not when:
            hint = f"e.g. finished=40 days; a status is one of {', '.join(statuses)}"
            problems.append(Problem("--entered", f"{item!r} is not STATUS=WHEN", hint))
            continue
        span = _span(when, zone, "--entered")
        try:
            past.append(
                PastEntry(status, None, start - span if isinstance(span, timedelta) else span)
            )
        except OverflowError:
            problems.append(Problem("--entered", f"{item!r} is too far back", _SPAN_HINT))
    if problems:
        raise InvalidInputError("the past entries", problems)
    return sorted(past, key=lambda p: p.entered_at, reverse=True)


def _record_types(flow_file: Path) -> dict[str, RecordType]:
    """The built-in types and those of the type folders next to the flow (the later wins)."""
    from crmflow.engine.recordtypes import type_catalog

    folders = [Path("examples") / "types", flow_file.parent / "types"]
    return type_catalog(read_record_type_files([f for f in folders if f.is_dir()]))


def _decisions(items: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    problems = []
    for item in items:
        step, sep, button = item.partition("=")
        if not sep or not step.strip() or not button.strip():
            problems.append(
                Problem("--decide", f"{item!r} is not step=button", "e.g. manager=refuse")
            )
            continue
        out[step.strip()] = button.strip()
    if problems:
        raise InvalidInputError("the decisions", problems)
    return out


def _zone(name: str | None) -> ZoneInfo:
    if name:
        return ZoneInfo(name)
    try:
        from crmflow.settings import get_settings

        return get_settings().zone
    except Exception:  # settings that do not load should not stop a dry run
        return ZoneInfo("UTC")


FlowFile = Annotated[
    Path, typer.Argument(metavar="FLOW", exists=True, dir_okay=False, help="A flow file.")
]
RecordFile = Annotated[
    Path,
    typer.Option(
        metavar="FILE",
        exists=True,
        dir_okay=False,
        help='A record (JSON): {"record_type", "owner", "values"}.',
    ),
]
Until = Annotated[
    str,
    typer.Option(
        metavar="SPAN", help='How long: "30 days", "2 weeks", or a date-time; at most ten years.'
    ),
]
Start = Annotated[
    str | None,
    typer.Option(metavar="TIME", help="Virtual start (ISO date-time; default: now)."),
]
Decide = Annotated[
    list[str] | None,
    typer.Option(
        metavar="STEP=BUTTON",
        help="The button pressed at an approval (default: the first); repeat for each.",
    ),
]
FlowStatus = Annotated[
    str,
    typer.Option(
        metavar="STATUS",
        help="The flow's status: active (the default), paused, draining, archived or draft.",
    ),
]
Entered = Annotated[
    list[str] | None,
    typer.Option(
        metavar="STATUS=WHEN",
        help="A past entry of the record in the flow, for its re-entry policy and loop guard: "
        'how it is or ended, and when it entered ("finished=40 days" before the start, or a '
        "date-time); repeat for each.",
    ),
]
AsJson = Annotated[bool, typer.Option("--json", metavar="", help="Machine-readable output.")]


@reports_errors
def simulate(
    flow_file: FlowFile,
    record: RecordFile,
    until: Until = "30 days",
    start: Start = None,
    decide: Decide = None,
    flow_status: FlowStatus = "active",
    entered: Entered = None,
    as_json: AsJson = False,
) -> None:
    """Run a flow for one record in virtual time and print what would happen, and when.

    Nothing is stored or sent. A record that the flow's entry rules keep out would not enter:
    the output says why.
    """
    from crmflow.celsandbox import SANDBOX
    from crmflow.engine.budget import EvaluationLimits
    from crmflow.engine.simulation import simulate as run_simulation

    types = _record_types(flow_file)
    definition = _flow(flow_file, types)
    zone = _zone(definition.timezone)
    begin = _instant(start, zone, "--start") if start else datetime.now(UTC)
    end = parse_until(until, begin, zone)
    record_type = types[definition.record_type]
    result = run_simulation(
        definition,
        _sample(record, record_type, begin, zone),
        start=begin,
        until=end,
        zone=zone,
        decisions=_decisions(decide or []),
        record_type=record_type,
        # Heavy conditions run in the sandbox's child process, as in the worker.
        limits=EvaluationLimits(cel_runner=SANDBOX),
        flow_status=flow_status,
        past=_past(entered or [], begin, zone),
    )
    if as_json:
        print_json(result.as_dict())
        return
    _print_timeline(result, begin, end, zone)


def _flow(flow_file: Path, types: dict[str, RecordType]) -> FlowDefinition:
    """The flow of `flow_file`, checked against `types` (no database: no users, no queries)."""
    from crmflow.engine.validation import ValidationContext, parse_flow

    return parse_flow(
        read_text_file(flow_file),
        context=ValidationContext(record_types=types),
        source=str(flow_file),
        fmt="json" if flow_file.suffix.lower() == ".json" else None,
    )


def _sample(
    record_file: Path, record_type: RecordType, begin: datetime, zone: ZoneInfo
) -> RecordSnapshot:
    """The record of `record_file` (JSON), checked against its type; its relative dates count
    from the simulation's start."""
    from crmflow.engine.simulation import sample_record
    from crmflow.engine.source import parse_source

    try:
        data = parse_source(read_text_file(record_file), source=str(record_file), fmt="json").data
    except InvalidInputError as exc:
        raise InvalidInputError(f"the record file {record_file}", exc.problems) from None
    return sample_record(data, record_type, now=begin, zone=zone)


def _print_timeline(result: Simulation, begin: datetime, end: datetime, zone: ZoneInfo) -> None:
    rows = [
        (
            entry.at.astimezone(zone).strftime("%Y-%m-%d %H:%M"),
            entry.step or "",
            entry.action or "",
            entry.status,
            entry.text,
        )
        for entry in result.timeline
    ]
    print_table(
        f"{result.flow_key}: simulated from {begin.astimezone(zone):%Y-%m-%d %H:%M} to "
        f"{end.astimezone(zone):%Y-%m-%d %H:%M} {zone.key} (nothing is stored or sent)",
        ["when", "step", "action", "status", "what"],
        rows,
    )
    console.print(f"stopped: {result.stopped}", highlight=False)
