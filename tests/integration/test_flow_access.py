"""`services.flow_access.assignable_refusal`: the work of a private flow goes only to its members
(and its owner); anyone else, or a group with a member outside, is refused with a message that
names them, the flow and the command that grants access. A public flow's work goes to anyone."""

from __future__ import annotations

from crmflow.engine.commands import Assignee
from crmflow.services import flows, users
from crmflow.services.context import Actor, Context
from crmflow.services.flow_access import assignable_refusal
from crmflow.store.flow_access import find_flow_by_key
from tests.conftest import make_user
from tests.integration.test_flows import PRIVATE, WELCOME


def _refusal(ctx: Context, key: str, assignee: Assignee) -> str | None:
    with ctx.engine.connect() as conn:
        row = find_flow_by_key(conn, key)
        assert row is not None
        return assignable_refusal(conn, row, assignee)


def test_private_flow_work_goes_only_to_members_and_says_how_to_grant_access(
    ctx: Context, admin: Actor
) -> None:
    bogdan = make_user(ctx, "bogdan", "member")
    make_user(ctx, "andrei", "member")
    flows.create_flow(ctx, admin, PRIVATE)
    assert _refusal(ctx, "service-orders", Assignee(kind="user", ref="bogdan")) is None
    assert _refusal(ctx, "service-orders", Assignee(kind="user", ref=bogdan.id)) is None
    refused = _refusal(ctx, "service-orders", Assignee(kind="user", ref="andrei"))
    assert refused is not None
    assert "'andrei' is not a member of the private flow 'service-orders'" in refused
    assert "`crmflow flows add-member service-orders andrei`" in refused

    users.create_group(ctx, admin, "workshop")
    users.add_group_member(ctx, admin, "workshop", "bogdan")
    assert _refusal(ctx, "service-orders", Assignee(kind="group", ref="workshop")) is None
    users.add_group_member(ctx, admin, "workshop", "andrei")
    group = _refusal(ctx, "service-orders", Assignee(kind="group", ref="workshop"))
    assert group is not None
    assert "group 'workshop' has members who are not members" in group
    assert "'service-orders': andrei;" in group

    flows.add_member(ctx, admin, "service-orders", "andrei")
    assert _refusal(ctx, "service-orders", Assignee(kind="user", ref="andrei")) is None
    assert _refusal(ctx, "service-orders", Assignee(kind="group", ref="workshop")) is None


def test_public_flow_work_goes_to_anyone(ctx: Context, admin: Actor) -> None:
    make_user(ctx, "andrei", "member")
    flows.create_flow(ctx, admin, WELCOME)
    assert _refusal(ctx, "welcome", Assignee(kind="user", ref="andrei")) is None
