"""Who may press an approval step's buttons: the person asked, a member of the group asked, or an
admin; nobody else, and only an admin when the step could ask nobody."""

from __future__ import annotations

import pytest

from crmflow.engine.approvals import Decider, decision_refusal

MARIA = Decider("maria", groups=("sales",), is_admin=False)
ANDREI = Decider("andrei", groups=("direction",), is_admin=False)
ADMIN = Decider("admin", groups=(), is_admin=True)


@pytest.mark.parametrize(
    ("asked_of", "decider", "allowed"),
    [
        ("maria", MARIA, True),
        ("maria", ANDREI, False),
        ("maria", ADMIN, True),
        ("group:direction", ANDREI, True),
        ("group:direction", MARIA, False),
        ("group:direction", ADMIN, True),
        (None, MARIA, False),
        (None, ADMIN, True),
        # A user whose name looks like a group reference is not that group.
        ("group:sales", Decider("group:sales", groups=(), is_admin=False), False),
    ],
)
def test_who_may_decide(asked_of: str | None, decider: Decider, allowed: bool) -> None:
    assert (decision_refusal(asked_of, decider) is None) is allowed


def test_a_refusal_names_who_may_decide() -> None:
    assert decision_refusal("maria", ANDREI) == (
        "'andrei' may not decide this step: it is asked of 'maria' or an admin"
    )
    refusal = decision_refusal("group:direction", MARIA)
    assert refusal is not None and "a member of group 'direction' or an admin" in refusal
    refusal = decision_refusal(None, MARIA)
    assert refusal is not None and "an admin (the step could ask nobody)" in refusal
