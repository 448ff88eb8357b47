"""An enrollment's state is stored as the text pydantic would write, read back as it was."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from crmflow.engine.runtime import (
    ButtonChoice,
    EnrollmentState,
    EnrollmentStatus,
    Vote,
    Waiting,
    WaitKind,
)
from crmflow.store.enrollments.rows import state_json

AT = datetime(2026, 3, 2, 9, 0, 0, 250_000, tzinfo=UTC)


def _approval(at: datetime) -> EnrollmentState:
    return EnrollmentState(
        enrollment_id=7,
        flow_key="approve-discount",
        flow_version=3,
        record_id=42,
        status=EnrollmentStatus.WAITING,
        step_key="ask",
        step_since=at.replace(microsecond=0),
        due_at=at + timedelta(days=2),
        waiting=Waiting(
            kind=WaitKind.APPROVAL,
            description='waiting for "Zoë" \u2028 ✉',
            buttons=(ButtonChoice(key="yes", label="Yes"), ButtonChoice(key="no", label="No")),
            asked_of="group:sales",
            votes=(Vote(by="rita", button="yes", comment="ok", at=at),),
        ),
        step_runs=4,
        current_run=4,
        deadline_at=at + timedelta(days=1),
        entered_at=at - timedelta(days=3),
    )


STATES = {
    "entered": EnrollmentState(
        enrollment_id=1, flow_key="k", flow_version=1, record_id=1, entered_at=AT
    ),
    "approval, UTC": _approval(AT),
    "approval, another zone": _approval(AT.astimezone(ZoneInfo("Europe/Paris"))),
    "approval, a fixed offset": _approval(AT.astimezone(timezone(timedelta(hours=-5)))),
    "finished": _approval(AT).evolve(
        {
            "status": EnrollmentStatus.FINISHED,
            "waiting": None,
            "finished_at": AT,
            "end_reason": "reached the end step 'done'",
        }
    ),
    # Beyond 64 bits: orjson refuses it, pydantic writes it.
    "a huge id": EnrollmentState(
        enrollment_id=2**70, flow_key="k", flow_version=1, record_id=1, entered_at=AT
    ),
}


@pytest.mark.parametrize("name", list(STATES))
def test_state_json_is_pydantic_s_text_and_reads_back(name: str) -> None:
    state = STATES[name]
    text = state_json(state)
    assert text == state.model_dump_json()
    assert EnrollmentState.model_validate_json(text) == state
