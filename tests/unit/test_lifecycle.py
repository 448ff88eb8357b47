"""The lifecycle rules of seed 000: allowed changes, refusals with the reason, edit modes."""

from __future__ import annotations

import pytest

from crmflow.engine.definition import FlowStatus as S
from crmflow.engine.lifecycle import EditMode, edit_mode, next_status
from crmflow.engine.lifecycle import LifecycleAction as A
from crmflow.errors import ConflictError

ALLOWED = {
    (S.DRAFT, A.START): S.ACTIVE,
    (S.DRAFT, A.ARCHIVE): S.ARCHIVED,
    (S.ACTIVE, A.PAUSE): S.PAUSED,
    (S.ACTIVE, A.DRAIN): S.DRAINING,
    (S.ACTIVE, A.ARCHIVE): S.ARCHIVED,
    (S.PAUSED, A.RESUME): S.ACTIVE,
    (S.PAUSED, A.DRAIN): S.DRAINING,
    (S.PAUSED, A.ARCHIVE): S.ARCHIVED,
    (S.DRAINING, A.RESUME): S.ACTIVE,
    (S.DRAINING, A.ARCHIVE): S.ARCHIVED,
    (S.ARCHIVED, A.RESUME): S.ACTIVE,
}


@pytest.mark.parametrize(("start", "action"), list(ALLOWED))
def test_allowed_changes(start: S, action: A) -> None:
    assert next_status(start, action) is ALLOWED[(start, action)]


@pytest.mark.parametrize(
    ("start", "action"), [(s, a) for s in S for a in A if (s, a) not in ALLOWED]
)
def test_every_other_change_is_refused_with_what_is_allowed(start: S, action: A) -> None:
    with pytest.raises(ConflictError) as caught:
        next_status(start, action)
    message = caught.value.message
    assert f"cannot {action.value} a flow that is {start.value}" in message
    assert "allowed now:" in message


def test_no_change_ever_leads_back_to_draft() -> None:
    assert S.DRAFT not in ALLOWED.values()
    assert all(next_status(s, a) is not S.DRAFT for (s, a) in ALLOWED)


def test_a_started_flow_is_resumed_not_started_again() -> None:
    with pytest.raises(ConflictError, match="use resume"):
        next_status(S.ARCHIVED, A.START)


def test_edit_modes() -> None:
    assert edit_mode(S.DRAFT) is EditMode.IN_PLACE
    assert edit_mode(S.PAUSED) is EditMode.NEW_VERSION
    assert edit_mode(S.ARCHIVED) is EditMode.NEW_VERSION
    for locked in (S.ACTIVE, S.DRAINING):
        with pytest.raises(ConflictError, match="pause it"):
            edit_mode(locked)


def test_a_flow_archived_as_a_draft_starts_and_cannot_be_resumed() -> None:
    # Resuming it would make it active without its start list ever entering.
    assert next_status(S.ARCHIVED, A.START, started=False) is S.ACTIVE
    with pytest.raises(ConflictError) as caught:
        next_status(S.ARCHIVED, A.RESUME, started=False)
    message = caught.value.message
    assert "archived as a draft and has never run; use start" in message
    assert "allowed now: start" in message
    # Every other rule is the same as for a flow that has run.
    for (status, action), target in ALLOWED.items():
        if (status, action) != (S.ARCHIVED, A.RESUME):
            assert next_status(status, action, started=False) is target
