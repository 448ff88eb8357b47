"""An approval step's optional rules, pure: a quorum of a group (any / all / N, at most the
members there are) counts the members' presses of the first button, keeps each vote in the
state and says the tally; any other button decides at once, as an admin standing in for the
group does; a member votes once. The rules are checked when the flow is read: a quorum needs a
group to count, self-approval names a user field of the record."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from crmflow.engine.recordtypes import type_catalog
from crmflow.engine.runtime import DecisionMade, EnrollmentStatus
from crmflow.engine.transition import Outcome, advance
from crmflow.engine.validation import ValidationContext, flow_from_data
from crmflow.errors import InvalidInputError
from tests.unit.test_transition import NOW, ZONE, history, make_flow, start


def panel(quorum: Any) -> list[dict[str, Any]]:
    return [
        {
            "key": "panel",
            "type": "approval",
            "responsibility": {"type": "group", "group": "panel"},
            "quorum": quorum,
            "buttons": [
                {"key": "validate", "label": "Validate", "goto": "yes"},
                {"key": "refuse", "label": "Refuse", "goto": "no"},
            ],
        },
        {"key": "yes", "actions": [{"type": "history", "message": "approved"}], "next": "done"},
        {"key": "no", "actions": [{"type": "history", "message": "refused"}]},
        {"key": "done", "type": "end"},
    ]


def press(
    quorum: Any, outcome: Outcome, by: str, button: str = "validate", size: int | None = 3
) -> Outcome:
    event = DecisionMade(step_key="panel", button=button, by=by, group_size=size)
    flow = make_flow(panel(quorum))
    return advance(
        flow, outcome.state, outcome.record, now=NOW + timedelta(hours=1), zone=ZONE, event=event
    )


@pytest.mark.parametrize(("quorum", "needed"), [("any", 1), (2, 2), ("all", 3), (5, 3)])
def test_the_quorum_counts_presses_of_the_first_button(quorum: Any, needed: int) -> None:
    outcome = start(make_flow(panel(quorum)))
    for n, who in enumerate(["pia", "paul", "petra"][:needed], start=1):
        assert outcome.state.status is EnrollmentStatus.WAITING
        outcome = press(quorum, outcome, who)
        if n < needed:
            waiting = outcome.state.waiting
            assert waiting is not None and [v.by for v in waiting.votes] == ["pia", "paul"][:n]
            assert f"{n} of {needed} Validate votes" in waiting.description
            assert history(outcome) == []
    assert history(outcome) == ["approved"]


def test_one_refusal_decides_at_once_and_a_member_votes_once() -> None:
    outcome = press("all", start(make_flow(panel("all"))), "pia")
    again = press("all", outcome, "pia")
    assert again.refused is not None and "pia already voted Validate" in again.refused
    assert again.state == outcome.state
    refused = press("all", outcome, "paul", "refuse")
    assert history(refused) == ["refused"]


def test_an_admin_outside_the_group_decides_for_it_at_once() -> None:
    outcome = press("all", start(make_flow(panel("all"))), "alice", size=None)
    assert history(outcome) == ["approved"]
    assert "alice pressed Validate" in outcome.log[0].reason


def _problems(doc_steps: list[dict[str, Any]]) -> str:
    data = {
        "schema_version": 1,
        "key": "f",
        "name": "F",
        "record_type": "contact",
        "owner": "maria",
        "triggers": [{"type": "manual"}],
        "steps": doc_steps,
    }
    with pytest.raises(InvalidInputError) as caught:
        flow_from_data(data, context=ValidationContext(record_types=type_catalog()))
    return "\n".join(f"{p.path}: {p.message}" for p in caught.value.problems)


def test_a_quorum_without_a_group_and_self_approval_on_no_user_field_are_refused() -> None:
    steps = panel(2)
    steps[0]["responsibility"] = {"type": "field", "field": "manager"}
    said = _problems(steps)
    assert "quorum 2 counts the members of a group" in said, said
    steps = panel("all")
    steps[0]["responsibility"] = {"type": "group", "group": "panel", "mode": "round_robin"}
    said = _problems(steps)
    assert "mode round_robin asks one member only" in said, said
    steps = panel("any")
    steps[0]["forbid_self_approval"] = {"field": "email"}
    said = _problems(steps)
    assert "steps[0].forbid_self_approval.field" in said, said
    assert "field 'email' is a email field; a user field is needed here" in said, said
    steps[0]["forbid_self_approval"] = {"field": "manager"}
    make_flow(steps)  # a user field of the contact: accepted


def test_buttons_count_only_while_the_steps_condition_holds() -> None:
    # Seed 002's "Bouton": shown while the step's condition holds. The record changed while it
    # waited (its email was removed): a press is refused with the reason and changes nothing;
    # once the condition holds again, the same press decides.
    steps = panel("any")
    steps[0]["condition"] = 'record.email != ""'
    flow = make_flow(steps)
    waiting = start(flow)
    assert waiting.state.status is EnrollmentStatus.WAITING
    event = DecisionMade(step_key="panel", button="validate", by="pia", group_size=3)
    later = NOW + timedelta(hours=1)
    changed = waiting.record.with_values({"email": ""}, at=later)
    refused = advance(flow, waiting.state, changed, now=later, zone=ZONE, event=event)
    assert refused.refused is not None
    assert "count only while its condition holds" in refused.refused
    assert 'record.email != ""' in refused.refused
    assert refused.state == waiting.state and history(refused) == []
    accepted = advance(flow, waiting.state, waiting.record, now=later, zone=ZONE, event=event)
    assert accepted.refused is None and history(accepted) == ["approved"]
