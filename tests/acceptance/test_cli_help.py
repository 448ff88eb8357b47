"""Help names what to give, not the Python type behind it (issue 9): `KEY`, `FILE`, `N`, never
`<str>`, `<list[Path]>` or `--help <bool>`."""

from __future__ import annotations

import os
import re
import subprocess

import pytest

from tests.acceptance.conftest import CRMFLOW

_COMMANDS = [
    [],
    ["flows"],
    ["flows", "validate"],
    ["flows", "start"],
    ["flows", "pause"],
    ["records", "import"],
    ["records", "list"],
    ["runs", "decide"],
    ["runs", "list"],
    ["queries", "count"],
    ["simulate"],
]
_PYTHON_TYPE = re.compile(r"<(str|int|bool|float|list|Path|path|file|dict)\b[^>]*>")


@pytest.mark.parametrize("command", _COMMANDS, ids=lambda c: " ".join(c) or "crmflow")
def test_help_shows_metavars_not_python_types(command: list[str]) -> None:
    env = {**os.environ, "COLUMNS": "120", "NO_COLOR": "1"}
    done = subprocess.run(
        [CRMFLOW, *command, "--help"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "Usage:" in done.stdout
    assert not _PYTHON_TYPE.findall(done.stdout), done.stdout
    if command == ["flows", "validate"]:
        assert "FILE" in done.stdout  # the argument is named by its metavar
