"""A command run before the database exists says so and leaves no empty file behind (issue 9:
`crmflow types list` on a new machine created an empty SQLite file, then answered "no such
table"); `crmflow db upgrade` is the command that creates it."""

from __future__ import annotations

from pathlib import Path

from tests.acceptance.conftest import Run


def test_a_command_on_a_missing_sqlite_file_names_it_and_the_command_that_creates_it(
    crmflow: Run, cli_env: dict[str, str]
) -> None:
    database = Path(cli_env["CRMFLOW_DATABASE_URL"].removeprefix("sqlite:///"))
    assert not database.exists()
    for command in (("types", "list"), ("records", "list", "contact"), ("worker", "--once")):
        refused = crmflow(*command, check_exit=1)
        assert f"there is no database at {database}" in refused.stderr
        assert "`crmflow db upgrade` creates it" in refused.stderr
        assert "Traceback" not in refused.stderr
        assert not database.exists(), f"`crmflow {' '.join(command)}` created the file"
    crmflow("db", "upgrade")
    assert database.is_file()
    assert "contact" in crmflow("types", "list").stdout


def test_a_mistyped_database_url_is_refused_with_the_forms_crmflow_takes(
    crmflow: Run, cli_env: dict[str, str], tmp_path: Path
) -> None:
    for url, says in (
        (str(tmp_path / "crm.db"), "a path is not a database URL: write sqlite:/// before it"),
        ("mysql://root:secret@localhost/crm", "crmflow runs on SQLite or PostgreSQL"),
    ):
        cli_env["CRMFLOW_DATABASE_URL"] = url
        for command in (("db", "upgrade"), ("flows", "list")):
            refused = crmflow(*command, check_exit=1)
            assert f"CRMFLOW_DATABASE_URL: {says}" in refused.stderr
            assert "Traceback" not in refused.stderr and "secret" not in refused.stderr
