"""The command line as a user runs it: a subprocess on a fresh SQLite database."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from tests.acceptance.conftest import REPO, Run

EXAMPLES = REPO / "examples"


def test_flows_validate_reports_file_line_and_path_and_exits_1(
    crmflow: Run, tmp_path: Path
) -> None:
    crmflow("db", "upgrade")
    crmflow("demo")  # the users, groups, types and saved queries the examples name
    good = sorted(EXAMPLES.glob("*.yaml"))
    assert len(good) >= 6, "the examples folder holds the seed flows"
    ok = crmflow("flows", "validate", *map(str, good))
    assert ok.stdout.count(": valid") == len(good)

    source = (EXAMPLES / "event-automations.yaml").read_text()
    broken = tmp_path / "broken.yaml"
    broken.write_text(source.replace("record_type: event", "record_type: event\nemial: x", 1))
    bad = crmflow("flows", "validate", str(broken), check_exit=1)
    line = next(i for i, text in enumerate(broken.read_text().splitlines(), 1) if "emial" in text)
    assert f"{broken}:{line}: emial: " in bad.stdout


def test_records_create_list_and_refuse_unknown_fields(crmflow: Run) -> None:
    crmflow("db", "upgrade")
    created = json.loads(
        crmflow(
            "records",
            "create",
            "contact",
            "--data",
            '{"last_name": "Pop", "email": "ana@example.org"}',
        ).stdout
    )
    assert created["data"]["last_name"] == "Pop"
    refused = crmflow(
        "records", "create", "contact", "--data", '{"last_name": "Pop", "emial": "x"}', check_exit=1
    )
    assert "emial" in refused.stderr and "unknown field" in refused.stderr
    listed = json.loads(crmflow("records", "list", "contact").stdout)
    assert [r["id"] for r in listed] == [created["id"]]


def test_import_keeps_good_rows_and_reports_bad_ones_by_line(crmflow: Run, tmp_path: Path) -> None:
    crmflow("db", "upgrade")
    csv_file = tmp_path / "contacts.csv"
    csv_file.write_text(
        "first_name,last_name,email,client_since\n"
        "Ana,Pop,ana@example.org,2026-01-02\n"
        "Ion,Rusu,not-an-email,2026-01-03\n"
        "Elena,Dinu,elena@example.org,2026-13-45\n"
        "Luca,Neri,luca@example.org,\n"
    )
    done = crmflow("records", "import", "contact", str(csv_file), check_exit=1)
    assert f"{csv_file}:3: email:" in done.stdout
    assert f"{csv_file}:4: client_since:" in done.stdout
    exported = crmflow("records", "export", "contact", "--format", "jsonl").stdout.splitlines()
    assert sorted(json.loads(line)["last_name"] for line in exported) == ["Neri", "Pop"]


def test_start_list_flow_needs_the_count_confirmed(crmflow: Run, tmp_path: Path) -> None:
    crmflow("db", "upgrade")
    today = datetime.now(ZoneInfo("Europe/Paris")).date()
    rows = tmp_path / "contacts.jsonl"
    rows.write_text(
        "".join(
            json.dumps(
                {
                    "last_name": f"C{i}",
                    "email": f"c{i}@example.org",
                    # 7 gave 10 days ago, 3 gave a year ago: only the 7 are recent donors.
                    "last_donation_date": str(today - timedelta(days=10 if i < 7 else 365)),
                    "last_donation_amount": 50,
                }
            )
            + "\n"
            for i in range(10)
        )
    )
    crmflow("records", "import", "contact", str(rows))
    crmflow("users", "create", "maria", "--role", "manager")
    crmflow("queries", "load", str(EXAMPLES / "queries" / "recent-donors.yaml"))
    counted = json.loads(crmflow("queries", "count", "recent-donors").stdout)
    assert counted["count"] == 7
    crmflow("templates", "load", str(EXAMPLES / "templates" / "donor-news.yaml"))
    crmflow("flows", "create", str(EXAMPLES / "donor-thank-you.yaml"))
    asked = crmflow("flows", "start", "donor-thank-you", check_exit=1)
    assert "7 record(s)" in asked.stderr and "--confirm 7" in asked.stderr
    crmflow("flows", "start", "donor-thank-you", "--confirm", "7")
    history = crmflow("flows", "history", "donor-thank-you").stdout
    assert "active" in history and "7 record(s)" in history


def test_schema_is_printed_as_json(crmflow: Run) -> None:
    schema = json.loads(crmflow("schema").stdout)
    assert "steps" in json.dumps(schema)


def test_a_failed_export_leaves_an_existing_file_alone(crmflow: Run, tmp_path: Path) -> None:
    crmflow("db", "upgrade")
    target = tmp_path / "contacts.csv"
    target.write_text("precious\n")
    failed = crmflow("records", "export", "contakt", "-o", str(target), check_exit=1)
    assert "contakt" in failed.stderr
    assert target.read_text() == "precious\n"
    assert list(tmp_path.glob(".*partial")) == []
