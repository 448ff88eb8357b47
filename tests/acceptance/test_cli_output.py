"""What the command line prints: tables kept whole through a pipe, every problem of a refusal,
and help that names values (FILE, KEY, N, USER) rather than Python types."""

from __future__ import annotations

import json

from tests.acceptance.conftest import Run


def test_a_table_through_a_pipe_keeps_long_values_whole(
    crmflow: Run, cli_env: dict[str, str]
) -> None:
    crmflow("db", "upgrade")
    description = "Donors who gave twice " + "and again " * 40 + "(the end)"
    assert len(description) > int(cli_env["COLUMNS"])  # wider than the terminal rich assumes
    crmflow("lists", "create", "donors-2026", "--description", description)
    shown = crmflow("lists", "list").stdout  # stdout is a pipe
    [row] = [line for line in shown.splitlines() if "donors-2026" in line]
    assert description in row


def test_a_refusal_lists_every_problem_up_to_the_cap(crmflow: Run) -> None:
    crmflow("db", "upgrade")
    unknown = {"last_name": "Pop"} | {f"field_{i:03}": "x" for i in range(130)}
    refused = crmflow(
        "records", "create", "contact", "--data", json.dumps(unknown), check_exit=1
    ).stderr
    assert "(130 problems)" in refused
    listed = [line for line in refused.splitlines() if line.startswith("  - ")]
    assert len(listed) == 100 and "field_000: unknown field" in listed[0]
    assert refused.rstrip().endswith("... and 30 more")
    not_json = crmflow("queries", "try", "contact", "[1, 2", check_exit=1).stderr
    assert "FILTER was refused (1 problem)" in not_json and "not valid" in not_json


def test_help_names_values_not_python_types(crmflow: Run) -> None:
    shown = {
        name: crmflow(*command, "--help").stdout
        for name, command in (
            ("root", []),
            ("pause", ["flows", "pause"]),
            ("runs", ["runs", "list"]),
        )
    }
    for name, text in shown.items():
        options = text.split("Options")[1]
        for python_type in ("<int>", "<str>", "<path>", "INTEGER", "TEXT"):
            assert python_type not in options, (name, python_type)
    assert "USER" in shown["root"]  # --as USER
    assert "KEY" in shown["pause"] and "--confirm" in shown["pause"] and " N " in shown["pause"]
    assert "STATUS" in shown["runs"] and " ID " in shown["runs"]
