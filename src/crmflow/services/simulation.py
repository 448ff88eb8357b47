"""A stored flow simulated for one record (the web's /simulate), as `crmflow simulate` does for
a flow file: in virtual time, nothing stored or sent. The record is a stored one or pasted
(YAML or JSON, `{record_type, owner, values}` or just its values); the buttons pressed at
approvals are chosen (the first one otherwise)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from crmflow.context import definitions_cache, flow_zone
from crmflow.engine.definition import ApprovalStep, FlowDefinition
from crmflow.engine.simulation import Simulation, sample_record, simulate
from crmflow.engine.source import parse_source
from crmflow.errors import InvalidInputError, Problem
from crmflow.services.context import Actor, Context
from crmflow.services.flow_access import visible_flow
from crmflow.services.record_types import catalog
from crmflow.services.records import get_record
from crmflow.store.database import read_connection
from crmflow.store.enrollments import load_flows

__all__ = ["MAX_DAYS", "MAX_RECORD_CHARS", "approvals", "flow_definition", "simulate_flow"]

MAX_RECORD_CHARS = 20_000  # a pasted record
MAX_DAYS = 366


def flow_definition(ctx: Context, actor: Actor, key: str) -> FlowDefinition:
    """The current definition of flow `key` (NotFoundError when `actor` may not see it)."""
    with read_connection(ctx.engine) as conn:
        flow = visible_flow(conn, actor, key)
        [info] = load_flows(
            conn, [(flow.id, flow.current_version)], definitions_cache(ctx)
        ).values()
    return info.definition


def approvals(definition: FlowDefinition) -> dict[str, list[tuple[str, str]]]:
    """The flow's approval steps with their buttons (key, label), in step order."""
    return {
        s.key: [(b.key, b.label or b.key) for b in s.buttons]
        for s in definition.ordered_steps()
        if isinstance(s, ApprovalStep)
    }


def _pasted(text: str) -> Mapping[str, Any]:
    data = parse_source(text, source="the pasted record", max_chars=MAX_RECORD_CHARS).data
    if not isinstance(data, Mapping):
        raise InvalidInputError(
            "the pasted record",
            [Problem("", "is not a mapping", 'write {"values": {"first_name": "Ana", ...}}')],
        )
    return data if "values" in data else {"values": dict(data)}


def simulate_flow(
    ctx: Context,
    actor: Actor,
    key: str,
    *,
    record_id: int | None = None,
    record_text: str | None = None,
    decisions: Mapping[str, str] | None = None,
    days: int = 30,
) -> Simulation:
    """Flow `key` run for `days` days from now for the stored record `record_id` or the pasted
    `record_text`; InvalidInputError when neither (or a bad one) is given."""
    if not 1 <= days <= MAX_DAYS:
        raise InvalidInputError(
            "the simulation", [Problem("days", f"must be between 1 and {MAX_DAYS}, got {days}")]
        )
    definition = flow_definition(ctx, actor, key)
    types = catalog(ctx)
    record_type = types.get(definition.record_type)
    if record_type is None:
        raise InvalidInputError(
            "the simulation",
            [Problem("flow", f"its record type {definition.record_type!r} is not defined")],
        )
    zone = flow_zone(ctx, definition)
    start = ctx.clock()
    if record_id is not None:
        stored = get_record(ctx, record_id)
        if stored.type != record_type.key:
            raise InvalidInputError(
                "the simulation",
                [
                    Problem(
                        "record",
                        f"record {record_id} is a {stored.type}, the flow runs on "
                        f"{record_type.key} records",
                        hint="pick a record of that type",
                    )
                ],
            )
        data: Mapping[str, Any] = {"owner": stored.owner, "values": stored.data}
        rid = stored.id
    elif record_text is not None and record_text.strip():
        data, rid = _pasted(record_text), 1
    else:
        raise InvalidInputError(
            "the simulation",
            [Problem("record", "no record given", hint="give a record's id or paste one")],
        )
    record = sample_record(data, record_type, now=start, zone=zone, record_id=rid)
    return simulate(
        definition,
        record,
        start=start,
        until=start + timedelta(days=days),
        zone=zone,
        decisions=dict(decisions or {}),
        record_type=record_type,
        limits=ctx.evaluation_limits,
        flow_status="active",
    )
