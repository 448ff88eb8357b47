"""A webhook trigger's secret lets its holder start the flow's records as the sender: members who
may read a flow see its document without it; admins, who may edit the flow, see it."""

from __future__ import annotations

from fastapi.testclient import TestClient

from crmflow.services.context import Actor, Context
from crmflow.services.flows import HIDDEN_SECRET
from tests.acceptance.conftest import auth_headers
from tests.acceptance.test_inbound_webhooks import SECRET, _flow, _start
from tests.conftest import make_user


def test_a_member_reads_a_flow_without_its_webhook_secret_and_an_admin_with_it(
    ctx: Context, client: TestClient, as_admin: dict[str, str], admin: Actor
) -> None:
    _start(client, as_admin, _flow("signed", "crm-call"), "signed")
    make_user(ctx, "andrei", "member")
    as_member = auth_headers(ctx, admin, "andrei")

    for headers, sees in ((as_member, False), (as_admin, True)):
        flow = client.get("/api/flows/signed", headers=headers)
        version = client.get("/api/flows/signed/versions/1", headers=headers)
        assert flow.status_code == version.status_code == 200
        [trigger] = flow.json()["document"]["triggers"]
        [stored] = version.json()["document"]["triggers"]
        assert (trigger["secret"] == SECRET) is sees and (stored["secret"] == SECRET) is sees
        assert (SECRET in version.json()["source"]) is sees
        assert (SECRET in flow.text) is sees and (SECRET in version.text) is sees
        if not sees:
            assert trigger["secret"] == HIDDEN_SECRET
            assert HIDDEN_SECRET in version.json()["source"]
