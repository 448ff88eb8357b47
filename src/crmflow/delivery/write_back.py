"""A webhook's write-back: values of its 2xx JSON answer written to the record's fields.

The webhook action's `write_back: {field: "$.json.path"}` (engine/actions/webhook.py) is
carried on the outbox payload with the record's id. When the call is delivered, the answer
(read up to `MAX_ANSWER_BYTES`) is parsed as JSON (nested at most `MAX_DEPTH` deep), each path
taken from it, and the values normalised to the fields' types; then, on the transaction that
marks the row delivered, they are written through `services.records.update_records_in`, the
write every change made in crmflow takes (a change event, so flows are triggered, and the
record's change history). A line of the record's history says what was written.

A bad answer (not JSON, too big or too deep, a path it lacks, a value the field does not take)
never fails the delivery: the call was made. What could not be written is said on the row's
reply (`server_reply`) and in the record's history; the fields that could be are written.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import orjson

from crmflow.delivery.email import Sent
from crmflow.engine.actions.webhook import json_path
from crmflow.engine.commands import WebhookPayload
from crmflow.errors import InvalidInputError
from crmflow.services.context import Context
from crmflow.services.record_types import record_type_in
from crmflow.services.records import FieldChange, update_records_in
from crmflow.services.users import system_actor
from crmflow.store.database import Connection
from crmflow.store.history import HistoryEntry, insert_history
from crmflow.store.outbox import ClaimedMessage
from crmflow.store.records import record_type_of

__all__ = ["MAX_ANSWER_BYTES", "MAX_DEPTH", "WebhookSent", "apply_write_backs", "values_of"]

MAX_ANSWER_BYTES = 64 * 1024  # how much of an answer is read when it is written back
MAX_DEPTH = 32  # how deeply nested an answer may be


@dataclass(frozen=True)
class WebhookSent(Sent):
    """A delivered webhook whose answer is written back: the payload and the answer's text
    (None when it was longer than MAX_ANSWER_BYTES)."""

    payload: WebhookPayload | None = None
    answer: str | None = None


@dataclass
class _Plan:
    message: ClaimedMessage
    sent: WebhookSent
    record_id: int
    values: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


class _Missing:
    pass


_MISSING = _Missing()


def _depth(value: Any, limit: int) -> bool:
    """Whether `value` nests at most `limit` deep (iteratively: no recursion on hostile input)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if level > limit:
            return False
        if isinstance(item, dict):
            stack.extend((v, level + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, level + 1) for v in item)
    return True


def _take(document: Any, path: str) -> Any:
    for step in json_path(path):
        named = isinstance(step, str) and isinstance(document, dict) and step in document
        listed = isinstance(step, int) and isinstance(document, list) and step < len(document)
        if not (named or listed):
            return _MISSING
        document = document[step]
    return document


def values_of(payload: WebhookPayload, answer: str | None) -> tuple[dict[str, Any], list[str]]:
    """The values the answer gives each write-back field, and what it could not give (why)."""
    if answer is None:
        return {}, [f"the answer is longer than {MAX_ANSWER_BYTES // 1024} KiB"]
    try:
        document = orjson.loads(answer)
    except orjson.JSONDecodeError:
        return {}, ["the answer is not JSON"]
    if not _depth(document, MAX_DEPTH):
        return {}, [f"the answer nests deeper than {MAX_DEPTH} levels"]
    values: dict[str, Any] = {}
    problems: list[str] = []
    for name, path in payload.write_back.items():
        value = _take(document, path)
        if value is _MISSING:
            problems.append(f"{name}: the answer has no {path}")
        elif isinstance(value, dict | list):
            problems.append(f"{name}: {path} is a JSON {type(value).__name__}, not a value")
        else:
            values[name] = value
    return values, problems


def _normalised(conn: Connection, ctx: Context, plan: _Plan) -> None:
    """Keep the values the record's fields take; the others become problems."""
    type_key = record_type_of(conn, plan.record_id)
    if type_key is None:
        plan.problems.append(f"record {plan.record_id} no longer exists")
        plan.values = {}
        return
    rtype = record_type_in(conn, type_key)
    kept: dict[str, Any] = {}
    for name, value in plan.values.items():
        try:
            rtype.normalise(
                {name: value},
                zone=ctx.zone,
                partial=True,
                max_field_chars=ctx.settings.max_field_chars,
            )
        except InvalidInputError as exc:
            plan.problems.extend(str(p) for p in exc.problems)
        else:
            kept[name] = value
    plan.values = kept


def _plans(
    conn: Connection, ctx: Context, sent: Iterable[tuple[ClaimedMessage, Sent]]
) -> list[_Plan]:
    plans = []
    for message, outcome in sent:
        if not isinstance(outcome, WebhookSent) or outcome.payload is None:
            continue
        payload = outcome.payload
        if not payload.write_back or payload.record_id is None:
            continue
        values, problems = values_of(payload, outcome.answer)
        plan = _Plan(message, outcome, payload.record_id, values, problems)
        _normalised(conn, ctx, plan)
        plans.append(plan)
    return plans


def prepare_write_backs(
    conn: Connection, ctx: Context, unsaved: Sequence[tuple[ClaimedMessage, Sent, datetime]]
) -> tuple[list[tuple[ClaimedMessage, Sent, datetime]], list[_Plan]]:
    """On the transaction that saves these outcomes, before they are saved: what each webhook's
    answer writes back, and each reply with what could not be written."""
    plans = {p.message.id: p for p in _plans(conn, ctx, ((m, s) for m, s, _ in unsaved))}
    out = []
    for message, sent, at in unsaved:
        plan = plans.get(message.id)
        note = "; ".join(plan.problems) if plan is not None else ""
        reply = f"{sent.reply} [not written back: {note}]" if note else sent.reply
        out.append((message, replace(sent, reply=reply) if note else sent, at))
    return out, list(plans.values())


def apply_write_backs(
    conn: Connection, ctx: Context, plans: Sequence[_Plan], kept: Iterable[int]
) -> None:
    """Write what the answers of the `kept` messages (those still this dispatcher's) give to
    their records, through the write of every record change, and a line of each record's
    history saying what was written and what was not."""
    kept = set(kept)
    plans = [p for p in plans if p.message.id in kept]
    if not plans:
        return
    now = ctx.now()
    actor = system_actor(conn, now=now)
    refused = update_records_in(
        conn, ctx, actor, [FieldChange(p.record_id, p.values) for p in plans]
    )
    entries = []
    for plan, reason in zip(plans, refused, strict=True):
        said = f"Webhook {plan.sent.payload.url if plan.sent.payload else ''} answered"
        if plan.values and reason is None:
            said += f": wrote {', '.join(sorted(plan.values))}"
        problems = [*plan.problems, *([reason] if reason else [])]
        if problems:
            said += f"; not written back: {'; '.join(problems)}"
        entries.append(HistoryEntry(plan.record_id, plan.message.enrollment_id, said, now))
    insert_history(conn, entries)
