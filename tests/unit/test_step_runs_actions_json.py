"""A step run's actions are written as the same JSON text whichever way it is built."""

from __future__ import annotations

import orjson
import pytest
import sqlalchemy as sa

from crmflow.engine.runtime import ActionLog, ActionStatus
from crmflow.store.bulk import Writer
from crmflow.store.step_runs import _action_dict, _actions_json

LOGS = [
    (),
    (ActionLog(0, None, "update_record", ActionStatus.DONE, "status: prospect"),),
    (
        ActionLog(0, "hello", "send_email", ActionStatus.FAILED, 'to "Zoë" <z@example.org>: ✉'),
        ActionLog(1, None, "history", ActionStatus.SKIPPED, "the action is inactive"),
    ),
    # A lone surrogate orjson refuses: written as before, by the standard library.
    (ActionLog(2, "odd", "history", ActionStatus.DONE, "half a pair \ud800"),),
]


@pytest.mark.parametrize("actions", LOGS)
def test_actions_json_is_the_text_of_the_action_dicts(actions: tuple[ActionLog, ...]) -> None:
    with sa.create_engine("sqlite://").connect() as conn:
        writer = Writer(conn)
        text = _actions_json(writer, actions)
        assert text == writer.json([_action_dict(a) for a in actions])
    if actions and "\ud800" not in actions[0].detail:
        assert orjson.loads(text)[0]["status"] == actions[0].status.value
