"""A webhook's answer written back to the record (issue 10): the dispatcher calls a real HTTP
server on 127.0.0.1, and the values of its 2xx JSON answer land in the record's fields through
the write every change takes (a change event: flows on the field are triggered), on the
transaction that marks the row delivered. A bad answer (not JSON, a path it lacks, a value the
field does not take) never fails the delivery: it is said on the row's reply and in the
record's history."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from crmflow.delivery.dispatcher import Dispatcher
from crmflow.engine.lifecycle import LifecycleAction
from crmflow.errors import InvalidInputError
from crmflow.services import enrollments as runs
from crmflow.services import flows, records
from crmflow.services.context import Actor, Context
from crmflow.store.schema import outbox
from crmflow.worker import run_once
from tests.integration.helpers import history
from tests.integration.test_delivery_webhooks import (
    LOOPBACK,
    HttpServer,
    Reply,
    with_settings,
)

FLOW = """\
schema_version: 1
key: enrich
name: Enrich
record_type: contact
reentry: {{mode: always}}
triggers: [{{type: manual}}]
steps:
  - key: ask
    actions:
      - type: webhook
        url: "{url}/donors/{{{{record.id}}}}"
        method: GET
        write_back:
{write_back}"""

WRITE_BACK = {"total_donations": "$.donor.total", "newsletter": "$.flags[0]"}

ON_CHANGE = """\
schema_version: 1
key: big-donor
name: Big donor
record_type: contact
triggers: [{type: field_changed, field: total_donations}]
entry_condition: record.total_donations > 1000
steps:
  - key: note
    actions:
      - {type: history, message: "Big donor: {{ record.total_donations }}"}
"""


@pytest.fixture
def http_server() -> Iterator[HttpServer]:
    server = HttpServer()
    server.start()
    yield server
    server.stop()


def _start(ctx: Context, admin: Actor, url: str, write_back: dict[str, str]) -> int:
    lines = "".join(f'          {k}: "{v}"\n' for k, v in write_back.items())
    flows.create_flow(ctx, admin, FLOW.format(url=url, write_back=lines))
    flows.change_status(ctx, admin, "enrich", LifecycleAction.START)
    data = {"first_name": "Claire", "last_name": "Martin", "email": "claire@example.org"}
    rid = records.create_record(ctx, admin, "contact", data).id
    runs.start_record(ctx, admin, "enrich", rid)
    return rid


def _deliver(ctx: Context) -> Any:
    result = Dispatcher(with_settings(ctx, webhook_allow=LOOPBACK)).run_once()
    assert (result.delivered, result.failed) == (1, 0)
    with ctx.engine.connect() as conn:
        [row] = conn.execute(sa.select(outbox).where(outbox.c.kind == "webhook"))
    assert row.status == "delivered"
    return row


def test_the_answer_is_written_to_the_record_and_triggers_flows_on_its_fields(
    ctx: Context, admin: Actor, http_server: HttpServer
) -> None:
    flows.create_flow(ctx, admin, ON_CHANGE)
    flows.change_status(ctx, admin, "big-donor", LifecycleAction.START)
    rid = _start(ctx, admin, http_server.url, WRITE_BACK)
    http_server.replies.append(Reply(body='{"donor": {"total": 1250.5}, "flags": [true, false]}'))
    row = _deliver(ctx)
    assert http_server.requests[0].path == f"/donors/{rid}"
    assert http_server.requests[0].headers["accept-encoding"] == "identity"

    record = records.get_record(ctx, rid)
    assert (record.data["total_donations"], record.data["newsletter"]) == (1250.5, True)
    assert "not written back" not in row.server_reply
    [change] = records.record_changes(ctx, rid).items[-1:]
    assert change.changed_fields == ["newsletter", "total_donations"]
    assert any("wrote newsletter, total_donations" in line for line in history(ctx, rid))
    run_once(ctx)  # the change made by the answer enters the flow on the field, as any change
    assert "Big donor: 1250.5" in history(ctx, rid)


@pytest.mark.parametrize(
    ("body", "said"),
    [
        ("ok", "the answer is not JSON"),
        ('{"donor": {}, "flags": [true]}', "total_donations: the answer has no $.donor.total"),
        ('{"donor": {"total": "lots"}, "flags": [true]}', "total_donations"),
        ("[" * 40 + "]" * 40, "nests deeper than 32 levels"),
        ('{"donor": {"total": 5}, "flags": [true], "pad": "' + "x" * 70_000 + '"}', "64 KiB"),
    ],
    ids=["not-json", "missing-path", "wrong-type", "too-deep", "too-big"],
)
def test_a_bad_answer_is_delivered_and_said_on_the_reply_and_the_history(
    ctx: Context, admin: Actor, http_server: HttpServer, body: str, said: str
) -> None:
    rid = _start(ctx, admin, http_server.url, WRITE_BACK)
    http_server.replies.append(Reply(body=body))
    row = _deliver(ctx)
    assert "[not written back: " in row.server_reply and said in row.server_reply
    [line] = [h for h in history(ctx, rid) if h.startswith("Webhook ")]
    assert "not written back" in line and said in line
    data = records.get_record(ctx, rid).data
    assert "total_donations" not in data
    if said == "total_donations":  # the field that fits is still written
        assert data["newsletter"] is True


def test_write_back_names_fields_of_the_record_type_and_json_paths(
    ctx: Context, admin: Actor
) -> None:
    with pytest.raises(InvalidInputError) as refused:
        _start(ctx, admin, "http://example.org", {"nope": "$.a"})
    [problem] = refused.value.problems
    assert problem.path == "steps[0].actions[0].write_back.nope"
    with pytest.raises(InvalidInputError) as refused:
        _start(ctx, admin, "http://example.org", {"phone": "donor.phone"})
    [problem] = refused.value.problems
    assert problem.path == "steps[0].actions[0].write_back.phone"
