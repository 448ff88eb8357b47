"""Hostile import files: an oversized cell, a byte that is not UTF-8, a line that is not JSON,
deep nesting, huge numbers, NUL characters, an unclosed quote, a row of tens of MB. Each bad row
is rejected alone and reported at its true line (a CSV row's first line), every good row is kept
(or, with all-or-nothing, the file is refused whole with every bad row still reported), through
the service on SQLite and PostgreSQL, the CLI and the API."""

from __future__ import annotations

import json
import subprocess
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from crmflow.services import imports, records
from crmflow.services.context import Actor, Context

Run = Callable[..., subprocess.CompletedProcess[str]]


def last_names(ctx: Context) -> list[str]:
    return [r.data["last_name"] for r in records.list_records(ctx, "contact", limit=1000).items]


def hostile_csv(max_chars: int) -> tuple[bytes, dict[str, int], list[str]]:
    """A CSV with good rows around an oversized cell and a bad byte; the lines of the bad rows
    and the last names of the good ones. A quoted two-line cell comes before the bad rows, so a
    reader counting rows instead of lines would report them one line early."""
    lines = [
        b"first_name,last_name,email",  # 1
        b"Ana,Popescu,ana@example.ro",  # 2
        b'"Luca\nJr",Bianchi,',  # 3-4: a quoted newline
        b"Big," + b"x" * (max_chars + 1) + b",",  # 5: one cell over the limit
        b"Long," + b"y" * 200_000 + b",",  # 6: over csv's default 128 KB, under the limit
        "Ion,Müller,".encode("latin-1"),  # 7: a byte that is not UTF-8
        'Ștefan,"Dumitru, ""Ște""",'.encode(),  # 8
    ]
    good = ["Popescu", "Bianchi", "y" * 200_000, 'Dumitru, "Ște"']
    return b"\n".join(lines) + b"\n", {"oversized": 5, "bad byte": 7}, good


def test_a_csv_keeps_every_good_row_around_an_oversized_cell_and_a_bad_byte(
    ctx: Context, manager: Actor, tmp_path: Path
) -> None:
    max_chars = ctx.settings.max_field_chars
    content, bad, good = hostile_csv(max_chars)
    file = tmp_path / "contacts.csv"
    file.write_bytes(content)
    report = imports.import_records(ctx, manager, "contact", file, batch_size=2)
    assert (report.read, report.imported, report.rejected) == (6, 4, 2)
    assert last_names(ctx) == good
    by_line = {e.line: str(e) for e in report.errors}
    assert set(by_line) == {bad["oversized"], bad["bad byte"]}
    oversized = by_line[bad["oversized"]]
    assert f"last_name: is {max_chars + 1:,} characters long, over the limit" in oversized
    assert "CRMFLOW_MAX_FIELD_CHARS" in oversized
    assert "byte fc at line 7, byte 6 of that line, is not UTF-8" in by_line[bad["bad byte"]]
    assert "save the file as UTF-8" in by_line[bad["bad byte"]]


def test_all_or_nothing_refuses_the_file_and_still_reports_every_bad_row(
    ctx: Context, manager: Actor, tmp_path: Path
) -> None:
    content, bad, _ = hostile_csv(ctx.settings.max_field_chars)
    file = tmp_path / "contacts.csv"
    file.write_bytes(content)
    report = imports.import_records(ctx, manager, "contact", file, all_or_nothing=True)
    assert (report.imported, report.rejected) == (0, 2)
    assert [e.line for e in report.errors] == [bad["oversized"], bad["bad byte"]]
    assert "import refused, nothing written" in report.summary()
    assert last_names(ctx) == []


def test_a_jsonl_file_rejects_each_bad_line_alone(
    ctx: Context, manager: Actor, tmp_path: Path
) -> None:
    max_chars = ctx.settings.max_field_chars
    lines = [
        json.dumps({"last_name": "Popescu"}).encode(),  # 1
        b'{"last_name": "M\xfcller"}',  # 2: not UTF-8
        json.dumps({"last_name": "z" * (max_chars + 1)}).encode(),  # 3: over the limit
        b'{"last_name": "Rossi",',  # 4: not JSON
        b'{"last_name": "Deep", "first_name": ' + b"[" * 5000 + b"]" * 5000 + b"}",  # 5
        b'{"last_name": "Huge", "total_donations": 1' + b"0" * 100_000 + b"}",  # 6
        b'{"last_name": "Nul\\u0000"}',  # 7: a NUL character
        b"",  # 8: blank, skipped
        json.dumps({"last_name": "Bianchi", "first_name": "Ω" * 1000}).encode(),  # 9
    ]
    file = tmp_path / "contacts.jsonl"
    file.write_bytes(b"\n".join(lines) + b"\n")
    report = imports.import_records(ctx, manager, "contact", file)
    assert last_names(ctx) == ["Popescu", "Bianchi"]
    by_line = {e.line: str(e) for e in report.errors}
    assert set(by_line) == {2, 3, 4, 5, 6, 7}, by_line
    assert "byte fc at line 2" in by_line[2] and "not UTF-8" in by_line[2]
    assert f"last_name: is {max_chars + 1:,} characters long" in by_line[3]
    assert "is not valid JSON" in by_line[4]
    assert "is not valid JSON" in by_line[5] and "depth" in by_line[5]
    assert "is not valid JSON" in by_line[6]
    assert "last_name: contains a NUL character" in by_line[7]
    assert (report.read, report.imported, report.rejected) == (8, 2, 6)


def test_an_unclosed_quote_is_reported_at_its_first_line_and_the_rows_before_are_kept(
    ctx: Context, manager: Actor, tmp_path: Path
) -> None:
    file = tmp_path / "contacts.csv"
    file.write_bytes(b'last_name,first_name\nPopescu,Ana\nRossi,"Mia\nstill\nopen\n')
    report = imports.import_records(ctx, manager, "contact", file)
    assert last_names(ctx) == ["Popescu"]
    assert [e.line for e in report.errors] == [3]
    assert "a quoted cell opened on line 3 is never closed" in str(report.errors[0])


def test_a_row_of_many_megabytes_is_skipped_in_bounded_memory(
    ctx: Context, manager: Actor, tmp_path: Path
) -> None:
    file = tmp_path / "contacts.csv"
    with file.open("wb") as out:
        out.write(b"last_name\nPopescu\n")
        out.write(b'"' + (b"a" * 999_999 + b"\n") * 30 + b'"\n')  # lines 3-33: 30 MB
        out.write(b"x" * 30_000_000 + b"\n")  # line 34: 30 MB without a newline
        out.write(b"Rossi\n")
    tracemalloc.start()
    try:
        report = imports.import_records(ctx, manager, "contact", file)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert last_names(ctx) == ["Popescu", "Rossi"]
    assert [e.line for e in report.errors] == [3, 34]
    assert "the row (lines 3-33) is over 1,024,005 bytes long" in str(report.errors[0])
    assert "the row (line 34) is over" in str(report.errors[1])
    assert peak < 12_000_000, f"peak {peak / 1e6:.1f} MB of Python memory for a 30 MB row"


def test_the_cli_keeps_good_rows_reports_true_lines_and_exits_1(
    crmflow: Run, tmp_path: Path
) -> None:
    content, bad, _ = hostile_csv(256_000)
    file = tmp_path / "contacts.csv"
    file.write_bytes(content)
    crmflow("db", "upgrade")
    done = crmflow("records", "import", "contact", str(file), check_exit=1)
    assert f"contacts.csv:{bad['oversized']}: last_name: is 256,001 characters long" in done.stdout
    assert f"contacts.csv:{bad['bad byte']}: byte fc at line 7" in done.stdout
    assert '"imported": 4' in done.stderr and "Traceback" not in done.stderr
    refused = crmflow("records", "import", "contact", str(file), "--all-or-nothing", check_exit=1)
    assert f"contacts.csv:{bad['bad byte']}:" in refused.stdout
    assert '"imported": 0' in refused.stderr and '"rejected": 2' in refused.stderr


def test_the_api_import_keeps_good_rows_of_a_bad_upload(
    ctx: Context, client: TestClient, as_admin: dict[str, str]
) -> None:
    content, bad, good = hostile_csv(ctx.settings.max_field_chars)
    answer = client.post(
        "/api/records/contact/import",
        files={"file": ("contacts.csv", content, "text/csv")},
        headers=as_admin,
    )
    assert answer.status_code == 200, answer.text
    report = answer.json()
    assert (report["imported"], report["rejected"]) == (4, 2)
    assert [e["line"] for e in report["errors"]] == [bad["oversized"], bad["bad byte"]]
    assert last_names(ctx) == good


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_an_empty_or_header_only_file_imports_nothing_without_error(
    ctx: Context, manager: Actor, tmp_path: Path, fmt: str
) -> None:
    for content in (b"", b"\xef\xbb\xbflast_name\n" if fmt == "csv" else b"\n\n"):
        file = tmp_path / f"contacts.{fmt}"
        file.write_bytes(content)
        report = imports.import_records(ctx, manager, "contact", file)
        assert (report.read, report.rejected) == (0, 0)
