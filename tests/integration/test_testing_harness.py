"""`crmflow.testing` runs a flow through time as a user's test would: the donor thank-you seed
flow of examples/ over three months, an approval decided by a person, and the frozen clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from crmflow.errors import InvalidInputError, NotFoundError
from crmflow.testing import FlowHarness, FrozenClock

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
MONDAY = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


def _donor_flow() -> FlowHarness:
    return FlowHarness(
        EXAMPLES / "donor-thank-you.yaml",
        now=MONDAY,
        queries=[EXAMPLES / "queries" / "recent-donors.yaml"],
        templates=[EXAMPLES / "templates" / "donor-news.yaml"],
        users={"maria": "manager"},
        timezone="Europe/Paris",
    )


def test_donor_thank_you_runs_through_three_months() -> None:
    with _donor_flow() as flow:
        claire = flow.create_record(
            {
                "first_name": "Claire",
                "last_name": "Martin",
                "email": "claire@example.org",
                "last_donation_date": "2026-11-20",
                "last_donation_amount": 750,
                "newsletter": True,
            },
            owner="maria",
        )
        paul = flow.create_record(
            {
                "first_name": "Paul",
                "last_name": "Petit",
                "email": "paul@example.org",
                "last_donation_date": "2026-11-01",
                "last_donation_amount": 100,
                "newsletter": False,
            }
        )
        assert flow.runs(claire) == []  # the flow is a draft: nothing runs yet

        flow.start()  # the start list (recent donors) enters both
        run = flow.run(claire)
        assert (run.status, run.step) == ("active", "wait-three-months")
        assert run.steps_done == ["thank", "large-gift", "call"]  # a large gift: a call
        assert "task for maria" in run.history[2].actions[0]
        thanks = flow.messages(claire)
        assert [(m.kind, m.subject, m.to, m.status) for m in thanks] == [
            ("email", "Merci Claire !", ("claire@example.org",), "pending")
        ]
        assert flow.history(claire) == ["Thank-you email sent for the donation of 750 EUR"]
        assert flow.run(paul).steps_done == ["thank", "large-gift"]  # no call for 100 EUR

        flow.advance(days=89)
        assert flow.run(claire).step == "wait-three-months"
        # Nobody made the call within its 5 business days: the controller (maria) is told.
        thank_you, late_call = flow.messages(claire)
        assert thank_you.subject == "Merci Claire !"
        assert late_call.to == ("maria@example.org",)
        assert (late_call.subject or "").startswith("crmflow: step call of flow donor-thank-you")

        flow.advance(timedelta(days=31))
        run = flow.run(claire)
        assert run.status == "finished"
        assert run.steps_done == ["thank", "large-gift", "call", "wait-three-months"]
        news = flow.messages(claire)[2]
        assert news.subject == "Claire, nos projets avancent grâce à vous"
        assert news.payload["template"] == "donor-news"
        # Written on its day, 90 days after the call, not when the clock stopped (day 120).
        assert news.not_before == MONDAY + timedelta(days=90)
        assert flow.clock() == MONDAY + timedelta(days=120)

        late = flow.run(paul)
        assert late.status == "finished"
        assert [(s.step, s.status) for s in late.history][2] == ("wait-three-months", "skipped")
        assert [m.subject for m in flow.messages(paul)] == ["Merci Paul !"]


def test_a_donation_recorded_later_enters_the_donor() -> None:
    with _donor_flow() as flow:
        flow.start()
        luc = flow.create_record(
            {"first_name": "Luc", "last_name": "Leroy", "email": "luc@example.org"}
        )
        assert flow.runs(luc) == []  # no donation yet: not in the flow
        flow.advance(days=10)
        flow.update_record(luc, {"last_donation_date": "2026-12-03", "last_donation_amount": 50})
        run = flow.run(luc)
        assert run.history[0].started_at == MONDAY + timedelta(days=10)
        assert [m.subject for m in flow.messages(luc)] == ["Merci Luc !"]
        assert flow.record(luc)["last_donation_amount"] == 50


APPROVAL = """\
schema_version: 1
key: approve-discount
name: Approve a discount
record_type: contact
owner: system
triggers:
  - type: manual
steps:
  - key: ask
    type: approval
    responsibility: {type: user, user: maria}
    message: "A discount for {{ record.last_name }}?"
    buttons:
      - {key: validate, label: Validate}
      - {key: refuse, label: Refuse, goto: refused}
  - key: granted
    actions:
      - type: history
        message: "Discount granted"
    next: done
  - key: refused
    actions:
      - type: history
        message: "Discount refused"
  - key: done
    type: end
"""


def test_an_approval_waits_for_the_person_who_decides() -> None:
    with FlowHarness(APPROVAL, now=MONDAY, users={"maria": "manager"}) as flow:
        flow.start()
        claire = flow.create_record({"last_name": "Martin"})
        with pytest.raises(NotFoundError, match="never entered"):
            flow.run(claire)
        run = flow.start_record(claire)
        assert (run.status, run.step, run.buttons) == ("waiting", "ask", ("validate", "refuse"))
        flow.advance(days=30)
        assert flow.run(claire).status == "waiting"  # time alone decides nothing

        run = flow.decide(claire, "validate", by="maria")
        assert run.status == "finished"
        assert flow.history(claire) == ["Discount granted"]
        with pytest.raises(NotFoundError, match="waits for no decision"):
            flow.decide(claire, "refuse", by="maria")


def test_a_bad_flow_is_refused_with_its_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(APPROVAL.replace("type: approval", "type: aproval"), encoding="utf-8")
    with pytest.raises(InvalidInputError) as refused:
        FlowHarness(path, now=MONDAY, users={"maria": "manager"})
    assert any(p.source == str(path) and p.line == 10 for p in refused.value.problems)


def test_the_database_is_removed_when_the_harness_closes() -> None:
    with FlowHarness(APPROVAL, now=MONDAY, users=["maria"]) as flow:
        database = Path(flow.ctx.engine.url.database or "")
        assert database.is_file()
        assert flow.ctx.now() == MONDAY  # the services read the harness's clock
    assert not database.parent.exists()


def test_the_frozen_clock_moves_only_when_told() -> None:
    clock = FrozenClock(MONDAY)
    assert clock() == clock() == MONDAY
    assert clock.advance(timedelta(days=2)) == MONDAY + timedelta(days=2)
    assert clock.advance(hours=1, minutes=30) == MONDAY + timedelta(days=2, hours=1, minutes=30)
    clock.set(MONDAY - timedelta(days=1))
    assert clock() == MONDAY - timedelta(days=1)
    with pytest.raises(ValueError, match="no time zone"):
        FrozenClock(datetime(2026, 11, 23, 10, 0))
    with pytest.raises(ValueError, match="no time zone"):
        clock.set(datetime(2026, 11, 23, 10, 0))
