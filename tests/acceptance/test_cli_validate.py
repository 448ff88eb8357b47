"""`crmflow flows validate` in a Git checkout (no database) and beside a database: it never
creates one, and `--types FILE...` checks flows of custom record types offline."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from crmflow.cli.common import sqlite_file
from tests.acceptance.conftest import REPO, Run

EXAMPLES = REPO / "examples"
BOOK_TYPE = """\
key: book
name: Book
fields:
  - {key: title, type: text, required: true}
  - {key: genre, type: choice, choices: [novel, essay]}
"""
BOOK_FLOW = """\
schema_version: 1
key: new-books
name: New books
record_type: book
triggers: [{type: record_created}]
steps:
  - key: note
    condition: record.genre == "novel"
    actions:
      - type: history
        message: "A novel: {{ record.title }}"
"""


def _database(cli_env: dict[str, str]) -> Path:
    path = sqlite_file(cli_env["CRMFLOW_DATABASE_URL"])
    assert path is not None
    return path


def test_without_a_database_validate_checks_built_in_types_and_creates_nothing(
    crmflow: Run, cli_env: dict[str, str], tmp_path: Path
) -> None:
    flow = tmp_path / "books.yaml"
    flow.write_text(BOOK_FLOW)
    done = crmflow(
        "flows", "validate", str(EXAMPLES / "donor-thank-you.yaml"), str(flow), check_exit=1
    )
    assert f"{EXAMPLES / 'donor-thank-you.yaml'}: valid" in done.stdout
    assert f"{flow}:4: record_type: unknown record type 'book'" in done.stdout
    assert "no database at" in done.stderr and "--types" in done.stderr
    assert not _database(cli_env).exists()
    assert not (tmp_path / "var").exists()


def test_types_files_and_folders_make_custom_types_known_offline(
    crmflow: Run, cli_env: dict[str, str], tmp_path: Path
) -> None:
    types = tmp_path / "types"
    types.mkdir()
    (types / "book.yaml").write_text(BOOK_TYPE)
    flow = tmp_path / "books.yaml"
    flow.write_text(BOOK_FLOW)
    by_file = crmflow("flows", "validate", "--types", str(types / "book.yaml"), str(flow))
    assert f"{flow}: valid (flow 'new-books', 1 steps)" in by_file.stdout
    by_folder = crmflow(
        "flows", "validate", "--types", str(types), "--types", str(EXAMPLES / "types"),
        str(flow), str(EXAMPLES / "recruitment-approval.yaml"),
    )  # fmt: skip
    assert by_folder.stdout.count(": valid") == 2
    assert by_folder.stderr == ""  # no note: nothing was looked for in a database

    # A field the type does not have is found offline too, with its line.
    flow.write_text(BOOK_FLOW.replace('record.genre == "novel"', 'record.author == "x"'))
    wrong = crmflow("flows", "validate", "--types", str(types), str(flow), check_exit=1)
    assert f"{flow}:8: steps[0].condition:" in wrong.stdout and "author" in wrong.stdout

    # A broken type file is refused with every problem, located in that file.
    (types / "book.yaml").write_text(BOOK_TYPE + "  - {key: pages, type: nummber}\nextra: 1\n")
    broken = crmflow("flows", "validate", "--types", str(types), str(flow), check_exit=1)
    assert f"{types / 'book.yaml'}:6: fields[2].type:" in broken.stderr
    assert f"{types / 'book.yaml'}:7: extra: unknown key" in broken.stderr
    assert not _database(cli_env).exists()


def test_with_a_database_validate_knows_its_types_and_names(
    crmflow: Run, cli_env: dict[str, str], tmp_path: Path
) -> None:
    crmflow("db", "upgrade")
    type_file = tmp_path / "book.yaml"
    type_file.write_text(BOOK_TYPE)
    crmflow("types", "load", str(type_file))
    flow = tmp_path / "books.yaml"
    flow.write_text(BOOK_FLOW.replace("triggers:", "owner: ghost\ntriggers:"))
    done = crmflow("flows", "validate", str(flow), check_exit=1)
    # The type comes from the database, and so do the users: 'ghost' is not one of them.
    assert "unknown record type" not in done.stdout
    assert "owner: " in done.stdout and "ghost" in done.stdout
    assert done.stderr.count("note:") == 0


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:///var/crmflow.db",
        "sqlite:////tmp/x/crmflow.db",
        "sqlite+pysqlite:///data.db?timeout=5",
        "sqlite://",
        "sqlite:///:memory:",
        "postgresql+psycopg://u:p@localhost/crm",
    ],
)
def test_the_sqlite_file_is_read_from_the_url_as_sqlalchemy_reads_it(url: str) -> None:
    parsed = make_url(url)
    expected = (
        Path(parsed.database)
        if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:")
        else None
    )
    assert sqlite_file(url) == expected
