"""examples/replay_changes.py, as docs/integrations.md shows it, replays its sample CSV through
the sync endpoint: signed with the server's secret, or with a manager's token."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from fastapi.testclient import TestClient

from crmflow.services import records
from crmflow.services.context import Actor, Context
from tests.acceptance.conftest import REPO, auth_headers

SAMPLE = REPO / "examples" / "replay_changes.csv"


def _example() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "replay_changes", REPO / "examples/replay_changes.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _synced(ctx: Context) -> dict[str | None, dict[str, object]]:
    return {r.external_id: r.data for r in records.list_records(ctx, "contact").items}


def test_the_example_replays_the_sample_signed(ctx: Context, client: TestClient) -> None:
    ctx.settings = ctx.settings.model_copy(update={"sync_secret": "a plain sync secret"})
    answers = _example().replay(
        client, "contact", SAMPLE, secret="a plain sync secret", clock=ctx.now
    )
    assert [(a["created"], a["updated"], a["deleted"], a["rejected"]) for a in answers] == [
        (2, 1, 1, 1)
    ]
    assert answers[0]["errors"][0]["line"] == 4  # the 4th change, crm-1003: no last name
    assert _synced(ctx) == {
        "crm-1001": {
            "first_name": "Ana",
            "last_name": "Popescu",
            "email": "ana@popescu.example.org",
        }
    }


def test_the_example_replays_in_batches_with_a_token(
    ctx: Context, client: TestClient, admin: Actor, manager: Actor, tmp_path: Path
) -> None:
    token = auth_headers(ctx, admin, manager.username)["Authorization"].removeprefix("Bearer ")
    fixed = tmp_path / "changes.csv"
    fixed.write_text(SAMPLE.read_text().replace(",Elena,,", ",Elena,Dinu,"))
    example = _example()
    answers = example.replay(client, "contact", fixed, token=token, batch=2)
    assert len(answers) == 3 and sum(a["rejected"] for a in answers) == 0
    assert set(_synced(ctx)) == {"crm-1001", "crm-1003"}
