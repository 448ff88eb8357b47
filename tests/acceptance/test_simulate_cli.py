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
