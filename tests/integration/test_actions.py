"""Actions on crmflow's own data, run by the worker in the batch's transaction (SQLite and
PostgreSQL, frozen clock): lists of records, related records with an .ics invitation, owner
assignment (round robin, weighted, least loaded), and SQL."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from crmflow.api.app import create_app
from crmflow.engine.lifecycle import LifecycleAction
from crmflow.errors import ConflictError, NotFoundError
from crmflow.runner import move_batch
from crmflow.services import enrollments as runs
from crmflow.services import flows, record_groups, records, run_views, users
from crmflow.services.context import Actor, Context
from crmflow.services.invitations import event_uid
from crmflow.services.users import ensure_system_user
from crmflow.store import enrollments as repo
from crmflow.store.schema import outbox
from crmflow.store.schema import records as records_table
from crmflow.worker import run_once
from tests.conftest import FrozenClock, make_user
from tests.integration.helpers import history as _history


def _flow(ctx: Context, admin: Actor, text: str) -> str:

    key = text.split("key: ", 1)[1].split("\n", 1)[0]
    flows.create_flow(ctx, admin, text)
    flows.change_status(ctx, admin, key, LifecycleAction.START)
    return key


def _contact(ctx: Context, admin: Actor, name: str = "Claire", **extra: Any) -> int:
    owner = extra.pop("owner", None)
    values = {"first_name": name, "last_name": "Martin", "email": "claire@example.org", **extra}
    return records.create_record(ctx, admin, "contact", values, owner=owner).id


def _actions(ctx: Context, admin: Actor, rid: int, flow: str) -> list[dict[str, Any]]:
    """The action logs of the record's last step run in `flow`, as a user sees them."""
    [view] = [e for e in run_views.record_status(ctx, admin, rid).enrollments if e.flow == flow]
    return view.step_runs[-1].actions


def _owner(ctx: Context, rid: int) -> str | None:
    return records.get_record(ctx, rid).owner


# -- lists of records (add_to_group / remove_from_group) ------------------------------------------

LISTS = """\
schema_version: 1
key: newsletter
name: Newsletter
record_type: contact
triggers: [{type: manual}]
steps:
  - key: join
    timing: {type: after, amount: 1, unit: hours}
    actions:
      - type: add_to_group
        group: newsletter
      - type: add_to_group
        group: "{{ record.first_name }}-list"
  - key: leave
    timing: {type: after, amount: 1, unit: days}
    actions:
      - type: remove_from_group
        group: newsletter
"""


def _members(ctx: Context, name: str) -> list[int]:
    return [r.id for r in record_groups.record_group_members_page(ctx, name).items]


def test_a_record_joins_a_list_then_leaves_it_and_an_unknown_list_fails_the_action(
    ctx: Context, admin: Actor, clock: FrozenClock
) -> None:
    record_groups.create_record_group(ctx, admin, "newsletter", "Monthly news")
    _flow(ctx, admin, LISTS)
    claire, ana = _contact(ctx, admin), _contact(ctx, admin, "Ana")
    runs.start_record(ctx, admin, "newsletter", claire)
    runs.start_record(ctx, admin, "newsletter", ana)

    clock.advance(hours=1)
    assert run_once(ctx) == 2
    assert _members(ctx, "newsletter") == [claire, ana]
    [listed] = record_groups.list_record_groups(ctx)
    assert (listed["name"], listed["members"]) == ("newsletter", 2)
    joined, unknown = _actions(ctx, admin, claire, "newsletter")
    assert joined["status"] == "done"
    # Never created on the fly: a typo in a flow must not fill a list nobody reads.
    assert unknown["status"] == "failed"
    assert "no list (record group) named 'Claire-list'" in unknown["detail"]
    assert "crmflow lists create Claire-list" in unknown["detail"]

    clock.advance(days=1)
    assert run_once(ctx) == 2
    assert _members(ctx, "newsletter") == []
    [left] = _actions(ctx, admin, claire, "newsletter")
    assert left["status"] == "done"


def test_lists_are_managed_by_name_and_refuse_duplicates_and_unknown_names(
    ctx: Context, admin: Actor
) -> None:
    created = record_groups.create_record_group(ctx, admin, "donors-2026")
    assert created["members"] == 0
    with pytest.raises(ConflictError, match="already exists"):
        record_groups.create_record_group(ctx, admin, "donors-2026")
    with pytest.raises(NotFoundError, match="crmflow lists create"):
        record_groups.record_group_members_page(ctx, "donors-2027")


# -- create_record, with an .ics invitation -------------------------------------------------------

APPOINTMENT = """\
schema_version: 1
key: appointment
name: Appointment
record_type: contact
triggers: [{type: manual}]
steps:
  - key: book
    timing: {type: after, amount: 1, unit: hours}
    actions:
      - type: create_record
        record_type: event
        values:
          title: "Meeting with {{ record.first_name }}, Martin & co"
          start: {cel: "now + duration('72h')"}
          location: "Salle 2; 1er étage"
        link_field: contact
        invitation: ics
"""


def _events(ctx: Context) -> list[sa.Row[Any]]:
    with ctx.engine.connect() as conn:
        return list(
            conn.execute(sa.select(records_table).where(records_table.c.type == "event")).all()
        )


def _outbox_rows(ctx: Context) -> list[sa.Row[Any]]:
    with ctx.engine.connect() as conn:
        return list(conn.execute(sa.select(outbox).order_by(outbox.c.id)).all())


def test_create_record_makes_a_linked_event_with_its_change_event_and_an_ics_invitation(
    ctx: Context, admin: Actor, clock: FrozenClock
) -> None:
    maria = make_user(ctx, "maria", "manager")
    users.update_user(ctx, admin, "maria", email="maria@example.org", display_name="Maria Pop")
    _flow(ctx, admin, APPOINTMENT)
    rid = _contact(ctx, admin, owner="maria")
    enrollment = runs.start_record(ctx, admin, "appointment", rid).id
    clock.advance(hours=1)
    assert run_once(ctx) == 1

    [event] = _events(ctx)
    assert event.data["contact"] == rid
    assert event.data["start"] == "2026-11-26T11:00:00Z"
    assert event.data["title"] == "Meeting with Claire, Martin & co"
    assert event.owner_id == maria.id  # the contact's owner handles the appointment
    [created] = records.record_changes(ctx, event.id).items
    assert (created.kind, created.after) == (
        "created",
        {**event.data, "_owner_id": maria.id},
    )
    assert _actions(ctx, admin, rid, "appointment")[0]["status"] == "done"

    [row] = _outbox_rows(ctx)
    assert (row.kind, row.status, row.enrollment_id) == ("email", "pending", enrollment)
    assert row.payload["to"] == ["claire@example.org"]
    [attachment] = row.payload["attachments"]
    assert attachment["content_type"].startswith("text/calendar; method=REQUEST")
    ics = attachment["content"]
    unfolded = ics.replace("\r\n ", "")
    assert ics.startswith("BEGIN:VCALENDAR\r\n") and ics.endswith("END:VCALENDAR\r\n")
    assert f"UID:{event_uid(row.idempotency_key)}\r\n" in ics
    assert "DTSTART:20261126T110000Z\r\n" in ics
    assert "DTEND:20261126T120000Z\r\n" in ics  # no end: one hour
    assert "SUMMARY:Meeting with Claire\\, Martin & co\r\n" in unfolded
    assert "LOCATION:Salle 2\\; 1er étage\r\n" in unfolded
    assert 'ORGANIZER;CN="Maria Pop":mailto:maria@example.org' in unfolded
    assert 'ATTENDEE;CN="Claire Martin";' in unfolded
    assert "mailto:claire@example.org" in unfolded
    assert all(len(line.encode()) <= 75 for line in ics.split("\r\n"))


def test_the_invitation_of_a_retried_batch_has_the_same_uid_and_the_event_exists_once(
    ctx: Context, admin: Actor, clock: FrozenClock
) -> None:
    # A fixed start: `now` in CEL is the retry's own time, which would move the event itself.
    _flow(ctx, admin, APPOINTMENT.replace("{cel: \"now + duration('72h')\"}", "2026-12-01T09:30"))
    rid = _contact(ctx, admin)
    runs.start_record(ctx, admin, "appointment", rid)
    clock.advance(hours=1)

    # A worker takes the batch, runs it and dies before its commit (as run_batch does it, in one
    # transaction); what it wrote is rolled back.
    system = ensure_system_user(ctx)
    seen: list[dict[str, Any]] = []
    with pytest.raises(RuntimeError), ctx.engine.begin() as conn:
        taken = repo.due_ids(conn, now=clock.current, limit=10)
        move_batch(conn, ctx, system, repo.lock(conn, taken), now=clock.current)
        seen += [r.payload for r in conn.execute(sa.select(outbox))]
        raise RuntimeError("killed")
    assert _events(ctx) == [] and _outbox_rows(ctx) == []

    clock.advance(seconds=61)  # another worker retries it a minute later
    assert run_once(ctx, owner="other") == 1
    assert len(_events(ctx)) == 1
    [row] = _outbox_rows(ctx)
    [first] = seen

    def lines(payload: dict[str, Any]) -> list[str]:
        return str(payload["attachments"][0]["content"]).split("\r\n")

    # The same event (UID, sequence, times) and the same Message-ID; only DTSTAMP, the moment
    # the invitation was made, is the retry's.
    assert [x for x in lines(row.payload) if not x.startswith("DTSTAMP")] == [
        x for x in lines(first) if not x.startswith("DTSTAMP")
    ]
    assert row.payload["message_id"] == first["message_id"]
    assert f"UID:{event_uid(row.idempotency_key)}" in lines(row.payload)
    assert "DTSTART:20261201T083000Z" in lines(row.payload)  # 09:30 in Paris


def test_an_invitation_to_a_record_without_email_fails_the_action_but_keeps_the_event(
    ctx: Context, admin: Actor, clock: FrozenClock
) -> None:
    _flow(ctx, admin, APPOINTMENT)
    rid = records.create_record(ctx, admin, "contact", {"last_name": "Nomail"}).id
    runs.start_record(ctx, admin, "appointment", rid)
    clock.advance(hours=1)
    run_once(ctx)
    [event] = _events(ctx)
    [action] = _actions(ctx, admin, rid, "appointment")
    assert action["status"] == "failed"
    assert f"created (record {event.id}) but no invitation was sent" in action["detail"]
    assert "has no email address" in action["detail"]
    assert _outbox_rows(ctx) == []


# -- assign_owner -------------------------------------------------------------------------------


def _assign_flow(ctx: Context, admin: Actor, strategy: str, among: str) -> None:
    _flow(
        ctx,
        admin,
        f"""\
schema_version: 1
key: distribute
name: Distribute leads
record_type: contact
triggers: [{{type: manual}}]
steps:
  - key: assign
    timing: {{type: after, amount: 5, unit: minutes}}
    actions:
      - type: assign_owner
        strategy: {strategy}
{among}
""",
    )


def _leads(ctx: Context, admin: Actor, count: int) -> list[int]:
    ids = [_contact(ctx, admin, f"Lead{i}") for i in range(count)]
    for rid in ids:
        runs.start_record(ctx, admin, "distribute", rid)
    return ids


@pytest.fixture
def sales(ctx: Context, admin: Actor) -> list[Actor]:
    people = [make_user(ctx, name, "member") for name in ("alice", "bob", "carol")]
    users.create_group(ctx, admin, "sales")
    for person in people:
        users.add_group_member(ctx, admin, "sales", person.username)
    return people


def test_round_robin_over_a_group_assigns_in_turn_across_batches_with_change_events(
    ctx: Context, admin: Actor, clock: FrozenClock, sales: list[Actor]
) -> None:
    _assign_flow(ctx, admin, "round_robin", "        group: sales")
    first = _leads(ctx, admin, 4)
    clock.advance(minutes=5)
    assert run_once(ctx) == 4  # one batch: the turns advance inside it
    second = _leads(ctx, admin, 3)
    clock.advance(minutes=5)
    assert run_once(ctx) == 3  # the next batch carries on where the last one stopped
    owners = [_owner(ctx, rid) for rid in first + second]
    assert owners == ["alice", "bob", "carol", "alice", "bob", "carol", "alice"]

    [_, assigned] = records.record_changes(ctx, first[1]).items
    assert assigned.kind == "updated"
    assert assigned.changed_fields == ["_owner_id"]
    assert assigned.after is not None and assigned.after["_owner_id"] == sales[1].id
    assert _actions(ctx, admin, first[1], "distribute")[0]["status"] == "done"


def test_round_robin_skips_inactive_users_and_fails_when_nobody_is_left(
    ctx: Context, admin: Actor, clock: FrozenClock, sales: list[Actor]
) -> None:
    _assign_flow(ctx, admin, "round_robin", "        users: [alice, bob]")
    users.update_user(ctx, admin, "alice", active=False)
    [rid] = _leads(ctx, admin, 1)
    clock.advance(minutes=5)
    run_once(ctx)
    assert _owner(ctx, rid) == "bob"

    users.update_user(ctx, admin, "bob", active=False)
    [other] = _leads(ctx, admin, 1)
    clock.advance(minutes=5)
    run_once(ctx)
    assert _owner(ctx, other) == "system"
    [action] = _actions(ctx, admin, other, "distribute")
    assert action["status"] == "failed"
    assert "no active user to choose from among alice, bob" in action["detail"]


def test_weighted_assignment_gives_each_user_their_share(
    ctx: Context, admin: Actor, clock: FrozenClock, sales: list[Actor]
) -> None:
    _assign_flow(
        ctx,
        admin,
        "weighted",
        "        users: [alice, bob, carol]\n        weights: {alice: 5, bob: 3, carol: 2}",
    )
    ids = _leads(ctx, admin, 60)
    clock.advance(minutes=5)
    assert run_once(ctx, limit=25) == 60  # three batches
    shares = Counter(_owner(ctx, rid) for rid in ids)
    assert shares == {"alice": 30, "bob": 18, "carol": 12}
    # Spread out, not in runs: nobody gets more than two leads in a row.
    owners = [_owner(ctx, rid) for rid in ids]
    assert all(len({*owners[i : i + 3]}) > 1 for i in range(len(owners) - 2))


def test_least_loaded_picks_whoever_owns_fewest_records(
    ctx: Context, admin: Actor, clock: FrozenClock, sales: list[Actor]
) -> None:
    for name, count in (("alice", 3), ("bob", 1), ("carol", 2)):
        for i in range(count):
            _contact(ctx, admin, f"{name}{i}", owner=name)
    _assign_flow(ctx, admin, "least_loaded", "        group: sales")
    [rid] = _leads(ctx, admin, 1)
    clock.advance(minutes=5)
    run_once(ctx)
    assert _owner(ctx, rid) == "bob"  # 1 record against 3 and 2

    # Now alice 3, bob 2, carol 2: the batch counts what it hands out as it goes.
    batch = _leads(ctx, admin, 3)
    clock.advance(minutes=5)
    run_once(ctx)
    assert [_owner(ctx, r) for r in batch] == ["bob", "carol", "alice"]


# -- run_sql --------------------------------------------------------------------------------------

SQL = """\
schema_version: 1
key: loyalty
name: Loyalty
record_type: contact
triggers: [{type: manual}]
steps:
  - key: points
    timing: {type: after, amount: 1, unit: hours}
    actions:
      - type: run_sql
        sql: "insert into no_such_table (id) values (:id)"
        params: {id: {cel: record.id}}
      - type: run_sql
        sql: >-
          insert into record_history (record_id, message, at)
          values (:id, :message, CURRENT_TIMESTAMP)
        params:
          id: {cel: record.id}
          message: "10 points for {{ record.first_name }}'; drop table records; --"
      - type: history
        message: "points step ran"
"""


@pytest.fixture
def sql_allowed(ctx: Context) -> Context:
    ctx.settings.allow_sql_actions = True
    return ctx


def test_run_sql_runs_with_bound_parameters_and_a_failing_statement_fails_only_itself(
    sql_allowed: Context, admin: Actor, clock: FrozenClock
) -> None:
    ctx = sql_allowed
    _flow(ctx, admin, SQL)
    rid = _contact(ctx, admin)
    runs.start_record(ctx, admin, "loyalty", rid)
    clock.advance(hours=1)
    assert run_once(ctx) == 1

    broken, inserted, history = _actions(ctx, admin, rid, "loyalty")
    assert broken["status"] == "failed"
    assert "the SQL failed" in broken["detail"] and "no_such_table" in broken["detail"]
    assert inserted["status"] == "done"
    assert history["status"] == "done"
    # The parameter is a value, never SQL: the quote and the "drop table" are just text.
    assert _history(ctx, rid) == [
        "points step ran",
        "10 points for Claire'; drop table records; --",
    ]
    [view] = run_views.record_status(ctx, admin, rid).enrollments
    assert (view.status, view.step_runs[-1].reason) == (
        "finished",
        "1 of 3 actions failed; finished: went through the last step",
    )


def test_run_sql_is_refused_when_the_server_does_not_allow_it(
    sql_allowed: Context, admin: Actor, clock: FrozenClock
) -> None:
    ctx = sql_allowed
    _flow(ctx, admin, SQL)
    # Turned off after the flow was written: the running flow must not run SQL any more.
    ctx.settings.allow_sql_actions = False
    rid = _contact(ctx, admin)
    runs.start_record(ctx, admin, "loyalty", rid)
    clock.advance(hours=1)
    run_once(ctx)
    broken, refused, history = _actions(ctx, admin, rid, "loyalty")
    assert [broken["status"], refused["status"], history["status"]] == ["failed", "failed", "done"]
    assert "SQL actions are turned off on this server" in refused["detail"]
    assert "CRMFLOW_ALLOW_SQL_ACTIONS=true" in refused["detail"]
    assert _history(ctx, rid) == ["points step ran"]


def test_a_statement_running_past_its_timeout_is_stopped_and_fails_its_action(
    sql_allowed: Context, admin: Actor, clock: FrozenClock
) -> None:
    ctx = sql_allowed
    _flow(
        ctx,
        admin,
        """\
schema_version: 1
key: slow
name: Slow
record_type: contact
triggers: [{type: manual}]
steps:
  - key: count
    timing: {type: after, amount: 1, unit: hours}
    actions:
      - type: run_sql
        sql: >-
          with recursive c(x) as (select 1 union all select x + 1 from c where x < 1000000000)
          select count(*) from c
        timeout_seconds: 0.2
      - type: update_record
        values: {status: client}
""",
    )
    rid = _contact(ctx, admin)
    runs.start_record(ctx, admin, "slow", rid)
    clock.advance(hours=1)
    run_once(ctx)
    slow, update = _actions(ctx, admin, rid, "slow")
    assert slow["status"] == "failed"
    assert "the SQL ran longer than 0.2 s and was stopped" in slow["detail"]
    assert update["status"] == "done"
    assert records.get_record(ctx, rid).data["status"] == "client"


# -- managing lists: API and CLI ------------------------------------------------------------------


def test_lists_over_the_api_create_list_and_page_members(
    ctx: Context, admin: Actor, clock: FrozenClock
) -> None:

    member = make_user(ctx, "andrei", "member")
    auth = {"Authorization": f"Bearer {users.create_token(ctx, admin, admin.username).token}"}
    weak = {"Authorization": f"Bearer {users.create_token(ctx, member, 'andrei').token}"}
    with TestClient(create_app(ctx)) as client:
        made = client.post("/api/record-groups", json={"name": "newsletter"}, headers=auth)
        assert made.status_code == 201, made.text
        again = client.post("/api/record-groups", json={"name": "newsletter"}, headers=auth)
        assert again.status_code == 409
        denied = client.post("/api/record-groups", json={"name": "mine"}, headers=weak)
        assert denied.status_code == 403

        _flow(ctx, admin, LISTS)
        ids = [_contact(ctx, admin, f"C{i}") for i in range(3)]
        for rid in ids:
            runs.start_record(ctx, admin, "newsletter", rid)
        clock.advance(hours=1)
        run_once(ctx)

        [listed] = client.get("/api/record-groups", headers=auth).json()
        assert (listed["name"], listed["members"]) == ("newsletter", 3)
        page = client.get("/api/record-groups/newsletter/members?limit=2", headers=auth).json()
        assert [r["id"] for r in page["items"]] == ids[:2]
        rest = client.get(
            f"/api/record-groups/newsletter/members?after={page['next_after']}", headers=auth
        ).json()
        assert ([r["id"] for r in rest["items"]], rest["next_after"]) == (ids[2:], None)
        missing = client.get("/api/record-groups/nope/members", headers=auth)
        assert missing.status_code == 404 and "crmflow lists create" in missing.json()["message"]


def test_lists_from_the_command_line(tmp_path: Any) -> None:

    crmflow = str(Path(sys.executable).parent / "crmflow")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRMFLOW_")}
    env |= {"CRMFLOW_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}", "COLUMNS": "200"}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [crmflow, *args],
            check=False,
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )

    assert run("db", "upgrade").returncode == 0
    made = run("lists", "create", "donors-2026", "--description", "This year's donors")
    assert made.returncode == 0, made.stderr
    shown = run("lists", "list")
    assert "donors-2026" in shown.stdout and "This year's donors" in shown.stdout
    assert run("lists", "members", "donors-2026").stdout.strip() == "[]"
    missing = run("lists", "members", "nope")
    assert missing.returncode == 1 and "crmflow lists create nope" in missing.stderr
