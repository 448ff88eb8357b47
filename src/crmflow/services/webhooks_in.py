"""Inbound webhooks: a call to `POST /hooks/<key>` starts, for the record it names, every started
flow whose `webhook` trigger has that key.

Who may call: a flow whose trigger has a `secret` takes calls signed the Standard Webhooks way
(headers `webhook-id`, `webhook-timestamp`, `webhook-signature`: `v1,` and the base64 HMAC-SHA256
of `<id>.<timestamp>.<body>` under the secret; a `whsec_<base64>` secret is the bytes it encodes,
any other secret its UTF-8 bytes; the timestamp within 5 minutes of now, by the context's clock).
A flow whose trigger has no secret takes calls with an API token (`Authorization: Bearer`) of a
user who can see the flow, as a manual start does: an unsigned hook is never open to the world.
A call starts the flows it is authenticated for; the others it is not told about.

What a start does: the same rules as every path into a flow (`services.entry`), in the same order
as a manual start (`enrollments.start_one`, which both call): the flow must
admit records (paused, draining: refused, with the reason), the record's type must be the
flow's, the loop guard, the re-entry policy, the entry condition. A record that enters has its
first steps run at once; one that does not leaves the reason on the record's history and in the
flow's not-entered list (trigger 'webhook'). The answer gives, per flow, entered or why not.

The body names the record: `{"record_id": 123}`, or `{"record_type": "contact", "match":
{"email": "a@b.org"}}` (every field equal; exactly one record must match). Other keys are
ignored, so a sender may post its own payload as long as it carries one of these.

A call's starts are one transaction: all of them happen, or (an error) none.

Replays: a signed call is taken once per `webhook-id` (see `services.webhook_receipts`).

A call with an API token and no signature is not deduplicated, even if it carries a
`webhook-id` header: nothing binds that header to the call, the token is a user's, as for any
API call, and a start by API is governed, like a manual start, by the flow's re-entry policy. A
sender that needs each call taken once gives the trigger a secret and signs its calls.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from crmflow.engine.definition import FlowDefinition, WebhookTrigger
from crmflow.engine.querylang import check_filter, parse_filter
from crmflow.engine.recordtypes import MAX_ROW_ID
from crmflow.errors import (
    AuthenticationError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
    Problem,
)
from crmflow.services import users
from crmflow.services.context import Actor, Context
from crmflow.services.definitions import definitions_cache
from crmflow.services.enrollments import keep_refusal, start_one
from crmflow.services.entry import admission_refusal
from crmflow.services.flow_access import can_see_flow
from crmflow.services.record_types import record_type_in
from crmflow.services.webhook_receipts import (
    RECEIPT_RETENTION,
    HookReplay,
    Receipt,
    answer_taken,
    check_webhook_id,
    keep_answer,
    prune,
    take,
)
from crmflow.services.webhook_signatures import (
    HOW_TO_SIGN,
    SIGNATURE_TOLERANCE,
    Signature,
    read_signature,
    sign,
    signed_with,
)
from crmflow.store import enrollments as repo
from crmflow.store import flows as flow_store
from crmflow.store import queries as query_store
from crmflow.store import records as record_store
from crmflow.store.database import Connection, Row, read_connection

__all__ = [
    "RECEIPT_RETENTION",
    "SIGNATURE_TOLERANCE",
    "HookReplay",
    "HookResult",
    "HookStart",
    "Signature",
    "receive_hook",
    "sign",
]

TRIGGER = "webhook"  # the trigger named in the not-entered list
# Started flows: an active one admits records, a paused or draining one refuses with its reason.
_STARTED = ("active", "paused", "draining")


@dataclass(frozen=True)
class HookStart:
    """What the call did in one flow: the record entered (its run) or the reason it did not."""

    flow: str
    entered: bool
    reason: str | None = None
    enrollment_id: int | None = None
    status: str | None = None  # of the run: active, waiting, finished, ...
    step: str | None = None

    def as_dict(self) -> dict[str, Any]:
        if self.entered:
            return {
                "flow": self.flow,
                "entered": True,
                "run": {"id": self.enrollment_id, "status": self.status, "step": self.step},
            }
        return {"flow": self.flow, "entered": False, "reason": self.reason}


@dataclass(frozen=True)
class HookResult:
    key: str
    record_id: int
    record_type: str
    flows: list[HookStart]

    @property
    def entered(self) -> int:
        return sum(1 for f in self.flows if f.entered)

    def as_dict(self) -> dict[str, Any]:
        return {
            "hook": self.key,
            "record_id": self.record_id,
            "record_type": self.record_type,
            "entered": self.entered,
            "flows": [f.as_dict() for f in self.flows],
            "runs": f"/api/records/{self.record_type}/{self.record_id}/runs",
        }


@dataclass(frozen=True)
class _HookFlow:
    row: Row  # of `flows`
    definition: FlowDefinition
    secret: str | None


# -- the call ------------------------------------------------------------------------------------


def _hook_flows(ctx: Context, key: str) -> list[_HookFlow]:
    """The started flows with a webhook trigger `key`, by flow key (their current version)."""
    with read_connection(ctx.engine) as conn:
        rows = flow_store.flows_with_status(conn, _STARTED)
        infos = repo.load_flows(
            conn, [(r.id, r.current_version) for r in rows], definitions_cache(ctx)
        )
    found: list[_HookFlow] = []
    for r in rows:
        info = infos.get((r.id, r.current_version))
        if info is None:
            continue
        trigger = _trigger(info.definition, key)
        if trigger is not None:
            found.append(_HookFlow(r, info.definition, trigger.secret or None))
    return found


def _trigger(definition: FlowDefinition, key: str) -> WebhookTrigger | None:
    return next(
        (t for t in definition.triggers if isinstance(t, WebhookTrigger) and t.key == key), None
    )


def receive_hook(
    ctx: Context,
    key: str,
    body: bytes,
    *,
    signature: Signature,
    token: str | None,
) -> HookResult | HookReplay:
    """Start the flows of hook `key` for the record `body` names (see the module's text); for a
    signed call whose webhook-id was already taken, the answer that call got (HookReplay).

    Raises AuthenticationError (401) when the call is authenticated for none of them, saying what
    is wrong and how to sign; NotFoundError (404) when no started flow that the caller may call
    has the key, or no record matches; ConflictError (409) when several records match, or the
    webhook-id was taken with another body; InvalidInputError (422) for a body that names no
    record, or a webhook-id too long to keep."""
    now = ctx.now()
    hooked = _hook_flows(ctx, key)
    if not hooked:
        raise _no_flow(key)
    targets, receipt = _callers(ctx, key, hooked, body, signature=signature, token=token, now=now)
    if receipt is not None:
        check_webhook_id(receipt.webhook_id)
        with read_connection(ctx.engine) as conn:
            replay = answer_taken(conn, receipt)
        if replay is not None:
            return replay

    record_id, record_type = _record_named(ctx, body, [f for f, _ in targets], now=now)
    # One transaction locks the flows in the order of their keys: two calls lock them alike.
    targets.sort(key=lambda t: str(t[0].row.key))
    with ctx.engine.begin() as conn:
        if receipt is not None and not take(conn, receipt, now=now):
            # Another call with this id was taken while this one was read (its transaction
            # held the id, and this one waited for it to end).
            replay = answer_taken(conn, receipt)
            if replay is not None:
                return replay
        started = [_start(conn, ctx, actor_, f, key, record_id, now=now) for f, actor_ in targets]
        result = HookResult(key, record_id, record_type, started)
        if receipt is not None:
            keep_answer(conn, receipt, result.as_dict())
    if receipt is not None:
        prune(ctx, now=now)
    return result


def _no_flow(key: str) -> NotFoundError:
    return NotFoundError(
        f"no started flow has a webhook trigger with key {key!r} "
        "(a draft or archived flow takes no calls; see `crmflow flows list`)"
    )


def _callers(
    ctx: Context,
    key: str,
    hooked: Sequence[_HookFlow],
    body: bytes,
    *,
    signature: Signature,
    token: str | None,
    now: datetime,
) -> tuple[list[tuple[_HookFlow, Actor]], Receipt | None]:
    """The flows of `hooked` the call is authenticated for, each with who starts it (the
    system user for a signed call, the token's user otherwise), and the call's receipt when it
    is signed. Raises when there is none, saying why (see `receive_hook`)."""
    signed_flows = [f for f in hooked if f.secret]
    open_flows = [f for f in hooked if not f.secret]
    targets: list[tuple[_HookFlow, Actor]] = []
    refused_signature: AuthenticationError | None = None
    receipt: Receipt | None = None
    if signed_flows and signature.present:
        targets, receipt, refused_signature = _signed_callers(
            ctx, key, signed_flows, body, signature, now=now
        )
    actor: Actor | None = None
    if open_flows and token:
        actor = users.authenticate_token(ctx, token)
        with read_connection(ctx.engine) as conn:
            targets += [(f, actor) for f in open_flows if can_see_flow(conn, actor, f.row)]
    if not targets:
        if refused_signature is not None:
            raise refused_signature
        if signed_flows:
            read_signature(signature, now=now)  # unsigned: raises, naming the missing headers
        if actor is not None:
            raise _no_flow(key)  # a private flow is not there for those who cannot see it
        raise AuthenticationError(
            "this hook needs `Authorization: Bearer <token>`: an API token of a user who can see "
            "the flow (POST /api/auth/token or `crmflow users token USERNAME`); to call it "
            "without a token, give its trigger a `secret` and sign the calls"
        )
    return targets, receipt


def _signed_callers(
    ctx: Context,
    key: str,
    signed_flows: Sequence[_HookFlow],
    body: bytes,
    signature: Signature,
    *,
    now: datetime,
) -> tuple[list[tuple[_HookFlow, Actor]], Receipt | None, AuthenticationError | None]:
    """The flows of `signed_flows` whose secret signed the call (started by the system user)
    and the call's receipt; or none, and why the signature was refused."""
    try:
        signed = read_signature(signature, now=now)
        text = _utf8(body)
        system = users.ensure_system_user(ctx)
        targets = [(f, system) for f in signed_flows if signed_with(f.secret or "", signed, text)]
    except AuthenticationError as exc:
        return [], None, exc
    if not targets:
        return (
            [],
            None,
            AuthenticationError(
                "webhook-signature matches no secret of this hook: sign the body exactly as "
                f"it is sent, with the flow's secret; {HOW_TO_SIGN}"
            ),
        )
    receipt = Receipt.of(key, [f.secret or "" for f, _ in targets], signed.id, body)
    return targets, receipt, None


def _utf8(body: bytes) -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInputError(
            "the call", [Problem("body", "is not UTF-8 text", 'send JSON: {"record_id": 123}')]
        ) from None


_BODY_HINT = '{"record_id": 123} or {"record_type": "contact", "match": {"email": "a@b.org"}}'


def _record_named(
    ctx: Context, body: bytes, targets: Sequence[_HookFlow], *, now: datetime
) -> tuple[int, str]:
    """The record the body names, with its type: by id, or the one record matching fields."""
    try:
        data = json.loads(_utf8(body)) if body.strip() else None
    except json.JSONDecodeError as exc:
        raise InvalidInputError(
            "the call", [Problem("body", f"is not JSON: {exc.msg} at {exc.pos}", _BODY_HINT)]
        ) from None
    if not isinstance(data, Mapping):
        raise InvalidInputError(
            "the call", [Problem("body", "must be a JSON object naming the record", _BODY_HINT)]
        )
    record_id = data.get("record_id")
    match = data.get("match")
    if record_id is not None and match is not None:
        raise InvalidInputError(
            "the call", [Problem("match", "give record_id or match, not both", _BODY_HINT)]
        )
    if record_id is not None:
        if isinstance(record_id, bool) or not isinstance(record_id, int):
            raise InvalidInputError(
                "the call", [Problem("record_id", f"must be a whole number, not {record_id!r}")]
            )
        if not 1 <= record_id <= MAX_ROW_ID:  # names no record, and SQLite cannot bind it
            raise InvalidInputError(
                "the call",
                [
                    Problem(
                        "record_id",
                        f"{record_id} is out of range: record ids are whole numbers from 1 to "
                        f"{MAX_ROW_ID} (2^63-1)",
                        "give the id a list or a create answered",
                    )
                ],
            )
        with read_connection(ctx.engine) as conn:
            rtype = record_store.record_type_of(conn, record_id)
        if rtype is None:
            raise NotFoundError(f"no record with id {record_id}")
        return record_id, str(rtype)
    if match is None:
        raise InvalidInputError(
            "the call", [Problem("record_id", "the body names no record", _BODY_HINT)]
        )
    if not isinstance(match, Mapping) or not match:
        raise InvalidInputError(
            "the call",
            [Problem("match", "must be an object of field: value, at least one", _BODY_HINT)],
        )
    return _matching_record(ctx, data.get("record_type"), match, targets, now=now)


def _matching_record(
    ctx: Context,
    record_type: object,
    match: Mapping[str, Any],
    targets: Sequence[_HookFlow],
    *,
    now: datetime,
) -> tuple[int, str]:
    if record_type is None:
        types = sorted({f.definition.record_type for f in targets})
        if len(types) != 1:
            raise InvalidInputError(
                "the call",
                [Problem("record_type", "say which record type to match", ", ".join(types))],
            )
        record_type = types[0]
    if not isinstance(record_type, str):
        raise InvalidInputError(
            "the call", [Problem("record_type", f"must be a text, not {record_type!r}")]
        )
    conditions = [{"field": k, "op": "=", "value": v} for k, v in match.items()]
    with read_connection(ctx.engine) as conn:
        rtype = record_type_in(conn, record_type)
        try:
            checked = check_filter(parse_filter({"all": conditions}, path="match"), rtype)
        except InvalidInputError as exc:
            raise InvalidInputError("the call's match", exc.problems) from None
        rows = query_store.matching_records(
            conn, checked, now=now, zone=ctx.zone, after=None, limit=2
        )
        found = [int(r.id) for r in rows]
    said = " and ".join(f"{k} = {v!r}" for k, v in match.items())
    if not found:
        raise NotFoundError(f"no {record_type} record has {said}")
    if len(found) > 1:
        raise ConflictError(
            f"more than one {record_type} record has {said} (records {found[0]}, {found[1]}, "
            "...): name the record by record_id, or match on a field that is unique"
        )
    return found[0], record_type


def _start(
    conn: Connection,
    ctx: Context,
    actor: Actor,
    hook: _HookFlow,
    key: str,
    record_id: int,
    *,
    now: datetime,
) -> HookStart:
    """Start one flow for the record, by the rules and in the order of a manual start, in the
    call's transaction."""
    # Locking the flow row serialises starts of one flow, so a record cannot enter twice.
    flow = flow_store.lock_flow(conn, hook.row.id)
    if flow is None:
        return HookStart(str(hook.row.key), False, "the flow was deleted")
    [info] = repo.load_flows(
        conn, [(flow.id, flow.current_version)], definitions_cache(ctx)
    ).values()
    definition = info.definition
    refusal = admission_refusal(flow.status)
    if refusal is None and _trigger(definition, key) is None:
        refusal = f"the flow's current version has no webhook trigger with key {key!r}"
    rtype = record_store.record_type_of(conn, record_id)
    if rtype is None:
        return HookStart(flow.key, False, refusal or "the record was deleted")
    signed = actor.username == users.SYSTEM_USERNAME
    started = start_one(
        conn,
        ctx,
        actor,
        flow,
        definition,
        record_id,
        rtype,
        refusal=refusal,
        told=None if signed else actor.username,
        now=now,
    )
    if isinstance(started, int):
        status, step = repo.position(conn, started)
        return HookStart(flow.key, True, None, started, status, step)
    source = f"webhook {key!r}, {'signed call' if signed else actor.username}"
    keep_refusal(conn, flow, record_id, TRIGGER, started, source, now=now)
    return HookStart(flow.key, False, started)
