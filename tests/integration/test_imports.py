"""Bulk import and export of records, on SQLite and PostgreSQL."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Literal

import pytest
import sqlalchemy as sa

from crmflow.errors import InvalidInputError, PermissionDeniedError
from crmflow.services import imports, records
from crmflow.services.context import Actor, Context
from crmflow.store.schema import record_changes
from crmflow.store.schema import records as records_table


def count(ctx: Context, table: sa.Table) -> int:
    with ctx.engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


def all_contacts(ctx: Context) -> list[records.RecordView]:
    return records.list_records(ctx, "contact", limit=1000).items


def test_csv_keeps_good_rows_and_reports_bad_ones_by_line_and_field(
    ctx: Context, manager: Actor, member: Actor, tmp_path: Path
) -> None:
    file = tmp_path / "contacts.csv"
    file.write_text(
        "first_name,last_name,email,newsletter,total_donations,owner\n"
        "Ana,Popescu,ana@example.ro,yes,120,andrei\n"
        "Ion,,ion@example.ro,no,,\n"  # line 3: last_name empty
        '"Maria ""Mia""",Rossi,not-an-email,maybe,12.5,\n'  # line 4: two bad fields
        '"Luca\nJr",Bianchi,,,,\n'  # lines 5-6: a quoted newline
        "Sara,Verdi,,,,ghost\n"  # line 7: unknown owner
        "Too,Many,Columns,,,,,\n"  # line 8
    )
    report = imports.import_records(ctx, manager, "contact", file)
    assert (report.read, report.imported, report.rejected) == (6, 2, 4)
    by_line = {e.line: {p.path: p.message for p in e.problems} for e in report.errors}
    assert set(by_line) == {3, 4, 7, 8}
    assert "required" in by_line[3]["last_name"]
    assert set(by_line[4]) == {"email", "newsletter"}
    assert "no user named 'ghost'" in by_line[7]["owner"]
    assert "columns" in next(iter(by_line[8].values()))
    assert "line 4: email" in str(report.errors[1])

    contacts = all_contacts(ctx)
    assert [c.data["last_name"] for c in contacts] == ["Popescu", "Bianchi"]
    assert contacts[0].owner == member.username
    assert contacts[0].data["newsletter"] is True
    assert contacts[0].data["total_donations"] == 120
    assert contacts[1].data == {"first_name": "Luca\nJr", "last_name": "Bianchi"}
    assert contacts[1].owner == manager.username  # no owner given: the importer


def test_imported_rows_have_their_created_events(
    ctx: Context, manager: Actor, member: Actor, tmp_path: Path
) -> None:
    file = tmp_path / "contacts.jsonl"
    rows = [{"last_name": f"n{i}", "status": "lead"} for i in range(7)]
    rows[3]["owner"] = member.username
    file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    progress: list[tuple[int, int]] = []
    report = imports.import_records(
        ctx, manager, "contact", file, batch_size=3, on_progress=lambda *a: progress.append(a)
    )
    assert report.imported == 7 and report.ok
    assert progress[-1] == (7, file.stat().st_size)
    assert len(progress) >= 3
    events = records.change_feed(ctx).items
    assert len(events) == 7
    contacts = all_contacts(ctx)
    assert [e.record_id for e in events] == [c.id for c in contacts]
    assert {(c.created_at, c.updated_at) for c in contacts} == {(ctx.now(), ctx.now())}
    assert {e.kind for e in events} == {"created"}
    assert events[3].after == {"last_name": "n3", "status": "lead", "_owner_id": member.id}
    assert events[0].after == {"last_name": "n0", "status": "lead", "_owner_id": manager.id}
    assert events[0].actor == manager.username
    assert events[0].at == ctx.now()


def test_jsonl_reports_unreadable_lines_and_missing_references(
    ctx: Context, manager: Actor, tmp_path: Path
) -> None:
    company = records.create_record(ctx, manager, "company", {"name": "Acme"})
    file = tmp_path / "contacts.jsonl"
    file.write_text(
        json.dumps({"last_name": "Ok", "company": company.id}) + "\n"
        "{not json\n"
        "\n"  # blank lines are skipped
        '["a", "list"]\n'
        + json.dumps({"last_name": "Lost", "company": 424242})
        + "\n"
        + json.dumps({"last_name": "Typo", "emial": "x@example.com"})
        + "\n"
    )
    report = imports.import_records(ctx, manager, "contact", file, batch_size=2)
    assert (report.read, report.imported, report.rejected) == (5, 1, 4)
    by_line = {e.line: e.problems for e in report.errors}
    assert set(by_line) == {2, 4, 5, 6}
    assert "not valid JSON" in by_line[2][0].message
    assert "JSON object" in by_line[4][0].message
    assert (by_line[5][0].path, by_line[5][0].message) == ("company", "no company with id 424242")
    assert by_line[6][0].path == "emial"
    assert [c.data["last_name"] for c in all_contacts(ctx)] == ["Ok"]


def test_all_or_nothing_writes_nothing_when_a_row_is_bad(
    ctx: Context, manager: Actor, tmp_path: Path
) -> None:
    file = tmp_path / "contacts.csv"
    file.write_text("last_name,company\n" + "".join(f"n{i},\n" for i in range(10)) + "x,999\n")
    report = imports.import_records(
        ctx, manager, "contact", file, all_or_nothing=True, batch_size=4
    )
    assert (report.read, report.imported, report.rejected) == (11, 0, 1)
    assert report.errors[0].line == 12
    assert "nothing written" in report.summary()
    assert count(ctx, records_table) == 0
    assert count(ctx, record_changes) == 0
    good = tmp_path / "good.csv"
    good.write_text("last_name\n" + "".join(f"n{i}\n" for i in range(10)))
    report = imports.import_records(ctx, manager, "contact", good, all_or_nothing=True)
    assert report.imported == 10 and count(ctx, record_changes) == 10


def test_a_bad_header_refuses_the_file_and_members_may_not_import(
    ctx: Context, manager: Actor, member: Actor, tmp_path: Path
) -> None:
    file = tmp_path / "contacts.csv"
    file.write_text("last_name,emial\nRossi,a@b.com\n")
    with pytest.raises(InvalidInputError, match="'emial' is not a field of record type 'contact'"):
        imports.import_records(ctx, manager, "contact", file)
    with pytest.raises(PermissionDeniedError):
        imports.import_records(ctx, member, "contact", file)
    with pytest.raises(InvalidInputError, match="not csv or jsonl"):
        imports.import_records(ctx, manager, "contact", tmp_path / "x.xlsx")
    assert count(ctx, records_table) == 0


def test_the_error_list_is_capped_but_every_rejection_counted(
    ctx: Context, manager: Actor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(imports, "MAX_LISTED_ERRORS", 3)
    stream = io.BytesIO(b"".join(b'{"last_name": 1.5, "x": 1}\n' for _ in range(10)))
    report = imports.import_records(ctx, manager, "contact", stream, fmt="jsonl")
    assert report.rejected == 10
    assert len(report.errors) == 3
    assert report.errors_not_listed == 7


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_export_then_import_round_trips(
    ctx: Context, admin: Actor, manager: Actor, fmt: Literal["csv", "jsonl"]
) -> None:
    company = records.create_record(ctx, admin, "company", {"name": "Acme"})
    originals = [
        records.create_record(
            ctx,
            admin,
            "contact",
            {
                "first_name": 'Ana, "Mia"\nsecond line',
                "last_name": f"Popescu{i}",
                "email": f"ana{i}@example.ro",
                "newsletter": i % 2 == 0,
                "total_donations": 10.5 * i,
                "client_since": "2026-05-27",
                "company": company.id,
                "manager": manager.id,
            },
            owner=manager.username if i % 2 else None,
        )
        for i in range(7)
    ]
    out = io.StringIO()
    assert imports.export_records(ctx, "contact", out, fmt=fmt, page_size=3) == 7
    text = out.getvalue()
    if fmt == "csv":
        assert text.splitlines()[0].endswith(",owner,external_id")
    report = imports.import_records(
        ctx,
        admin,
        "contact",
        io.BytesIO(text.encode()),
        fmt=fmt,
    )
    assert report.ok and report.imported == 7
    copies = all_contacts(ctx)[7:]
    assert [(c.data, c.owner) for c in copies] == [(o.data, o.owner) for o in originals]


def test_a_row_that_is_not_utf8_is_rejected_alone(
    ctx: Context, manager: Actor, tmp_path: Path
) -> None:
    file = tmp_path / "latin1.csv"
    # An unreadable header refuses the file: every row would be read against it.
    file.write_bytes("last_näme\nMuller\n".encode("latin-1"))
    with pytest.raises(InvalidInputError, match="not UTF-8") as refused:
        imports.import_records(ctx, manager, "contact", file)
    assert refused.value.problems[0].line == 1
    # Past the header, the bad row is rejected at its line and every other row is kept.
    file.write_bytes(
        b"last_name\n" + b"Popescu\n" * 2_000 + "Müller\n".encode("latin-1") + b"Rossi\n"
    )
    report = imports.import_records(ctx, manager, "contact", file, batch_size=1000)
    assert (report.imported, report.rejected) == (2_001, 1)
    assert report.errors[0].line == 2_002
    assert "byte fc at line 2002, byte 2 of that line, is not UTF-8" in str(report.errors[0])
    assert count(ctx, records_table) == 2_001
