"""`crmflow simulate` as a user runs it: a subprocess, no database, examples from the checkout."""

from __future__ import annotations

import json
from pathlib import Path

from tests.acceptance.conftest import REPO, Run

EXAMPLES = REPO / "examples"


def test_simulate_prints_the_timeline_of_an_example(crmflow: Run) -> None:
    done = crmflow(
        "simulate",
        str(EXAMPLES / "event-automations.yaml"),
        "--record",
        str(EXAMPLES / "event-automations.record.json"),
        "--until",
        "60 days",
        "--start",
        "2024-05-01T09:00:00+03:00",
    )
    out = done.stdout
    assert "nothing is stored or sent" in out
    # The sample event starts "today + 20 days + 18 hours" (2024-05-21 18:00 in Bucharest): the
    # preparation runs 7 days before, at 09:00 Bucharest time.
    assert "2024-05-14 09:00" in out
    assert "Prepare Donor evening" in out
    assert "In 7 days: Donor evening" in out
    assert "stopped: the record finished the flow" in out


def test_simulate_with_the_default_start_and_a_decision(crmflow: Run) -> None:
    done = crmflow(
        "simulate",
        str(EXAMPLES / "recruitment-approval.yaml"),
        "--record",
        str(EXAMPLES / "recruitment-approval.record.json"),
        "--until",
        "30 days",
        "--decide",
        "manager-approval=refuse",
        "--json",
    )
    data = json.loads(done.stdout)
    assert data["status"] == "finished"
    assert data["record"]["status"] == "refused"
    steps = [entry["step"] for entry in data["timeline"]]
    assert "refused" in steps and "management-approval" not in steps


def test_a_broken_flow_exits_1_with_its_problems(crmflow: Run, tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    text = (EXAMPLES / "sales-orders.yaml").read_text().replace("subject:", "subjct:", 1)
    broken.write_text(text)
    done = crmflow(
        "simulate",
        str(broken),
        "--record",
        str(EXAMPLES / "sales-orders.record.json"),
        check_exit=1,
    )
    assert "subjct" in done.stderr
    assert f"{broken}:" in done.stderr  # file and line of the problem


def test_an_unknown_button_exits_1_and_names_the_buttons(crmflow: Run) -> None:
    done = crmflow(
        "simulate",
        str(EXAMPLES / "recruitment-approval.yaml"),
        "--record",
        str(EXAMPLES / "recruitment-approval.record.json"),
        "--decide",
        "manager-approval=maybe",
        check_exit=1,
    )
    assert "has no button 'maybe'" in done.stderr
    assert "validate, refuse" in done.stderr


def test_a_record_the_re_entry_policy_keeps_out_would_not_enter(crmflow: Run) -> None:
    """The donor thank-you admits a record once per 30 days: entered 10 days before the start,
    it would not enter; entered 40 days before, it would."""
    args = (
        "simulate",
        str(EXAMPLES / "donor-thank-you.yaml"),
        "--record",
        str(EXAMPLES / "donor-thank-you.record.json"),
        "--start",
        "2024-05-01T09:00:00+00:00",
    )
    kept_out = crmflow(*args, "--entered", "finished=10 days", "--entered", "left=90 days").stdout
    let_in = crmflow(*args, "--entered", "finished=40 days", "--json").stdout

    assert "not entered" in kept_out
    assert (
        "stopped: would not enter: re-entry: once per 30 days, last entered 2024-04-21" in kept_out
    )
    assert json.loads(let_in)["status"] != "not entered"


def test_a_paused_flow_lets_no_record_in(crmflow: Run) -> None:
    done = crmflow(
        "simulate",
        str(EXAMPLES / "recruitment-approval.yaml"),
        "--record",
        str(EXAMPLES / "recruitment-approval.record.json"),
        "--flow-status",
        "paused",
        "--json",
    )
    data = json.loads(done.stdout)
    assert data["status"] == "not entered"
    assert data["stopped"] == ("would not enter: flow paused: no record enters until it is resumed")
    assert data["commands"] == []


def test_a_past_entry_that_is_not_status_when_exits_1(crmflow: Run) -> None:
    done = crmflow(
        "simulate",
        str(EXAMPLES / "recruitment-approval.yaml"),
        "--record",
        str(EXAMPLES / "recruitment-approval.record.json"),
        "--entered",
        "gone=3 days",
        check_exit=1,
    )
    assert "'gone=3 days' is not STATUS=WHEN" in done.stderr


def test_a_horizon_beyond_ten_years_or_before_the_start_exits_1_and_says_why(
    crmflow: Run,
) -> None:
    flow = [str(EXAMPLES / "event-automations.yaml")]
    flow += ["--record", str(EXAMPLES / "event-automations.record.json")]
    start = ["--start", "2024-05-01T09:00:00+03:00"]
    for until, says in (
        ("99999999 days", "'99999999 days' is more than ten years"),
        ("1000000 weeks", "'1000000 weeks' is more than ten years"),
        ("9" * 5000 + " days", "9" * 40 + "' is more than ten years"),  # int() takes 4,300
        ("9999-12-31T23:59:00+00:00", "is more than ten years ahead"),
        ("2024-04-01T09:00", "'2024-04-01T09:00' is not after the start"),
    ):
        done = crmflow("simulate", *flow, *start, "--until", until, check_exit=1)
        assert says in done.stderr and "Traceback" not in done.stderr
    far = crmflow("simulate", *flow, "--start", "9999-12-30T00:00Z", check_exit=1)
    assert "--start was refused" in far.stderr and "Traceback" not in far.stderr
    back = crmflow("simulate", *flow, *start, "--entered", "finished=99999999 days", check_exit=1)
    assert "is more than ten years" in back.stderr and "Traceback" not in back.stderr
