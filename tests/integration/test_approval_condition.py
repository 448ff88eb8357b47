"""An approval's buttons count only while its step's condition holds (seed 002's "Bouton"), on
SQLite and PostgreSQL: when the record changes while it waits so that the condition is false,
the page learns why before anyone presses (`decision_refusal_for`), a press is refused with the
same reason and nothing moves; once the condition holds again, the same press decides."""

from __future__ import annotations

import pytest

from crmflow.engine.lifecycle import LifecycleAction
from crmflow.errors import ConflictError
from crmflow.services import enrollments as runs
from crmflow.services import flows, records
from crmflow.services.context import Actor, Context
from crmflow.services.users import actor_by_username, create_user
from crmflow.worker import run_once
from tests.integration.helpers import history

FLOW = """\
schema_version: 1
key: quote
name: Quote approval
record_type: contact
triggers: [{type: manual}]
steps:
  - key: approve
    type: approval
    condition: record.email.endsWith("@example.org")
    responsibility: {type: user, user: bogdan}
    buttons:
      - {key: validate, label: Validate}
      - {key: refuse, label: Refuse, goto: refused}
  - key: approved
    actions: [{type: history, message: approved}]
    next: done
  - key: refused
    actions: [{type: history, message: refused}]
  - key: done
    type: end
"""


def test_a_press_counts_only_while_the_steps_condition_holds(ctx: Context, admin: Actor) -> None:
    create_user(ctx, admin, username="bogdan", role="member", email="bogdan@ex.org")
    flows.create_flow(ctx, admin, FLOW)
    flows.change_status(ctx, admin, "quote", LifecycleAction.START)
    data = {"first_name": "Ana", "last_name": "Pop", "email": "ana@example.org"}
    rid = records.create_record(ctx, admin, "contact", data).id
    run_id = runs.start_record(ctx, admin, "quote", rid).id
    run_once(ctx)
    bogdan = actor_by_username(ctx, "bogdan")
    assert runs.decision_refusal_for(ctx, bogdan, run_id, "approve") is None

    records.update_record(ctx, admin, rid, {"email": "ana@elsewhere.org"})  # while it waits
    why = runs.decision_refusal_for(ctx, bogdan, run_id, "approve")
    assert why is not None and 'record.email.endsWith("@example.org")' in why, why
    with pytest.raises(ConflictError, match="count only while its condition holds"):
        runs.decide(ctx, bogdan, run_id, "approve", "validate")
    assert "approved" not in history(ctx, rid)

    records.update_record(ctx, admin, rid, {"email": "ana@example.org"})
    assert runs.decision_refusal_for(ctx, bogdan, run_id, "approve") is None
    runs.decide(ctx, bogdan, run_id, "approve", "validate")
    run_once(ctx)
    assert "approved" in history(ctx, rid)
