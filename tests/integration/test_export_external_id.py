"""`crmflow records export` writes each record's external id, so that an export imported again
with `--upsert-by external_id` updates the records instead of duplicating them."""

from __future__ import annotations

import csv
import io
import json
from typing import Literal

import pytest

from crmflow.services import imports, records
from crmflow.services.context import Actor, Context


def _import(
    ctx: Context,
    admin: Actor,
    text: str,
    fmt: Literal["csv", "jsonl"],
    upsert_by: str | None = None,
) -> int:
    stream = io.BytesIO(text.encode())
    report = imports.import_records(ctx, admin, "contact", stream, fmt=fmt, upsert_by=upsert_by)
    assert report.ok, report.errors
    return report.imported + report.updated


def _contacts(ctx: Context) -> list[records.RecordView]:
    return records.list_records(ctx, "contact", limit=100).items


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_an_export_imported_again_by_external_id_updates_without_duplicates(
    ctx: Context, admin: Actor, fmt: Literal["csv", "jsonl"]
) -> None:
    _import(
        ctx,
        admin,
        "first_name,last_name,email,external_id\n"
        "Ana,Popescu,ana@example.ro,crm-1\n"
        "Ion,Ionescu,ion@example.ro,crm-2\n",
        "csv",
    )
    out = io.StringIO()
    assert imports.export_records(ctx, "contact", out, fmt=fmt) == 2
    text = out.getvalue()
    if fmt == "csv":
        rows = list(csv.DictReader(io.StringIO(text)))
        assert [r["external_id"] for r in rows] == ["crm-1", "crm-2"]
    else:
        assert [json.loads(line)["external_id"] for line in text.splitlines()] == ["crm-1", "crm-2"]

    changed = text.replace("Popescu", "Pop")  # what someone edits in the exported file
    assert _import(ctx, admin, changed, fmt, upsert_by="external_id") == 1
    contacts = _contacts(ctx)
    assert [(c.external_id, c.data["last_name"]) for c in contacts] == [
        ("crm-1", "Pop"),
        ("crm-2", "Ionescu"),
    ]


def test_a_record_without_an_external_id_exports_an_empty_one_and_imports_as_new(
    ctx: Context, admin: Actor
) -> None:
    records.create_record(ctx, admin, "contact", {"first_name": "Eva", "last_name": "Stan"})
    out = io.StringIO()
    imports.export_records(ctx, "contact", out, fmt="csv")
    header, row = out.getvalue().splitlines()
    assert header.endswith(",owner,external_id") and row.endswith(",")
    jsonl = io.StringIO()
    imports.export_records(ctx, "contact", jsonl, fmt="jsonl")
    assert "external_id" not in json.loads(jsonl.getvalue())
    assert _import(ctx, admin, out.getvalue(), "csv") == 1
    assert [c.external_id for c in _contacts(ctx)] == [None, None]


def test_a_csv_export_guards_formula_cells_and_an_import_gives_them_back_unchanged(
    ctx: Context, admin: Actor
) -> None:
    # A text a spreadsheet would run (CSV injection) is written with a `'` before it; plain
    # numbers stay numbers; importing the export changes nothing.
    values = {
        "=cmd|' /C calc'!A0": "crm-1",
        "+40 721 000 000": "=crm-2",
        "@SUM(1+1)": "crm-3",
        "'=already quoted": "crm-4",
        "-Popescu": "crm-5",
    }
    lines = [f"{_csv_line(f'x{i}')},{_csv_line(e)}" for i, e in enumerate(values.values())]
    _import(ctx, admin, "last_name,external_id\n" + "\n".join(lines) + "\n", "csv")
    for contact, last_name in zip(_contacts(ctx), values, strict=True):  # stored as typed
        records.update_record(ctx, admin, contact.id, {"last_name": last_name})
    out = io.StringIO()
    imports.export_records(ctx, "contact", out, fmt="csv")
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert [r["last_name"] for r in rows] == [
        "'=cmd|' /C calc'!A0",
        "'+40 721 000 000",
        "'@SUM(1+1)",
        "''=already quoted",
        "'-Popescu",
    ]
    assert rows[1]["external_id"] == "'=crm-2"
    before = [(c.external_id, c.data) for c in _contacts(ctx)]
    changed = _import(ctx, admin, out.getvalue(), "csv", upsert_by="external_id")
    assert changed == 0  # every row found its record, and found it unchanged
    assert [(c.external_id, c.data) for c in _contacts(ctx)] == before


def _csv_line(value: str) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="").writerow([value])
    return out.getvalue()
