"""The README's tour runs as written (issue 9): its commands are read from README.md, so the
tour cannot drift from what crmflow does.

Every fenced ```sh block under "## A tour" (its "### Running flows" included) is run in order,
one logical line at a time (a line ending in a backslash, or with a quote still open, goes on
on the next one), each by `bash -c` from the repository's root, as a user pastes them:

- against what `make run` leaves: a new SQLite database, `crmflow db upgrade`, then
  `crmflow serve --demo` running (on a free port, its worker included) for the whole tour;
- `source .venv/bin/activate` is not run: the commands find `crmflow` and `python` first on
  PATH, in the test's own environment (the same venv);
- `NAME=VALUE` (a token, or `$(...)` reading an id from a command's JSON) is evaluated by bash,
  its exit status checked, and NAME given to the commands after it;
- the only substitution: the curl blocks' `http://127.0.0.1:8000` becomes the test server's
  address. The curl commands are run, against that server;
- a command exits 0, or 1 where its comment says `exits 1`; any other first word than
  crmflow, curl or a `NAME=` assignment fails the test, so nothing in the tour goes unrun;
- a few outputs a reader would look at are checked (CHECKS); each must find its command.

Byte code is cached for the commands (PYTHONPYCACHEPREFIX, as an installed crmflow has it), so
that some forty start-ups take seconds, not a minute.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.acceptance.conftest import CRMFLOW, REPO
from tests.acceptance.test_serve import _serving as serving

README = REPO / "README.md"
TOUR_HEADING = "## A tour"
README_SERVER = "http://127.0.0.1:8000"
EXPORTED = Path("/tmp/contacts-export.csv")  # where the tour's `records export -o` writes
ACTIVATE = "source .venv/bin/activate"
ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")


@dataclass(frozen=True)
class Command:
    """One logical line of the tour: its text as bash reads it, and its comment."""

    text: str
    comment: str
    line: int  # in README.md, for the failure message

    @property
    def expected_exit(self) -> int:
        return 1 if re.search(r"\bexits 1\b", self.comment) else 0


def _comment(text: str) -> str:
    """The comment of a logical line: after the first `#` outside quotes that starts a word."""
    quote = ""
    for i, char in enumerate(text):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or text[i - 1].isspace()):
            return text[i + 1 :].strip()
    return ""


def _complete(text: str) -> bool:
    """Whether bash would run `text` now, rather than wait for its next line."""
    if text.rstrip().endswith("\\"):
        return False
    try:
        shlex.split(text, comments=True)
    except ValueError:  # a quote is still open
        return False
    return True


def tour_commands(readme: str) -> list[Command]:
    """The logical lines of the ```sh blocks of the README's tour section, in order."""
    lines = readme.splitlines()
    start = lines.index(TOUR_HEADING)
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    commands: list[Command] = []
    in_block = False
    pending: list[str] = []
    first_line = 0
    for number, line in enumerate(lines[start:end], start=start + 1):
        if line.startswith("```"):
            assert not pending, f"README.md:{first_line}: a command is not finished"
            in_block = line == "```sh" if not in_block else False
            continue
        if not in_block or (not pending and (not line.strip() or line.lstrip().startswith("#"))):
            continue
        if not pending:
            first_line = number
        pending.append(line)
        text = "\n".join(pending)
        if _complete(text):
            commands.append(Command(text, _comment(text), first_line))
            pending = []
    return commands


Check = Callable[[str], None]


def _count_is_a_number(output: str) -> None:
    assert re.search(r'"count": [1-9][0-9]*\n', output), "no count"


def _exported(output: str) -> None:
    assert "exported" in output
    rows = EXPORTED.read_text(encoding="utf-8").splitlines()
    assert rows[0].startswith("first_name,last_name,email")
    assert any("ioana.marin@example.org" in row for row in rows)  # imported from the tour's CSV
    assert not any("radu.ilie@example.org" in row for row in rows)  # its refused row


def _contains(*parts: str) -> Check:
    def check(output: str) -> None:
        for part in parts:
            assert part in output, f"{part!r} not in the output"

    return check


# The words of a command (quotes and comment gone, the README's own address) or their start,
# up to a word's end -> what the command's output (stdout and stderr) must show.
START_OF_MY_FLOW = (
    f"curl -X POST -H Authorization: Bearer $T {README_SERVER}/api/flows/my-flow/start"
)
CHECKS: dict[str, Check] = {
    "crmflow records import contact examples/tour/contacts.csv": _contains(
        "contacts.csv:4: status: 'customer' is not one of the choices",
        '"imported": 4',
        '"rejected": 1',
    ),
    "crmflow records export contact": _exported,
    "crmflow queries count six-month-clients": _count_is_a_number,
    "crmflow flows validate --types": _contains("valid (flow 'donor-thank-you'"),
    "crmflow flows create examples/tour/my-flow.yaml": _contains("created flow 'my-flow' (draft"),
    "crmflow --as alice flows start donor-thank-you": _contains("is active"),
    "crmflow --as alice flows pause donor-thank-you": _contains("paused (20 record(s) inside)"),
    "crmflow --as alice flows edit donor-thank-you": _contains("is at version 2"),
    "crmflow flows history donor-thank-you": _contains("edited: version 2 created"),
    START_OF_MY_FLOW: _contains(
        "starting 'my-flow' enters the 8 record(s) of its start list", '"count":8'
    ),
    f"{START_OF_MY_FLOW}?confirm_count=8": _contains('"status":"active"'),
    "crmflow runs show $CANDIDATE": _contains("at step 'manager-approval'"),
    "crmflow --as maria runs decide $ENROLLMENT": _contains("at step 'management-approval'"),
    "crmflow runs list recruitment-approval --status cancelled": _contains("asked to stop"),
    "crmflow runs not-entered": _contains("already inside this flow"),
}


def _checks_of(command: Command) -> list[str]:
    words = " ".join(shlex.split(command.text.replace("\\\n", " "), comments=True))
    return [key for key in CHECKS if words == key or words.startswith(key + " ")]


@pytest.fixture
def tour_env(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A user's shell after `source .venv/bin/activate`, on a new database."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRMFLOW_")}
    env["CRMFLOW_DATABASE_URL"] = f"sqlite:///{tmp_path / 'tour.db'}"
    env["PATH"] = f"{Path(CRMFLOW).parent}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(Path(sys.executable).parent.parent)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(tmp_path_factory.getbasetemp() / "tour-pycache")
    return env


@pytest.fixture
def make_run(tour_env: dict[str, str], tmp_path: Path) -> Iterator[str]:
    """What `make run` does (`crmflow db upgrade`, `crmflow serve --demo`); yields the address."""
    upgrade = subprocess.run(
        [CRMFLOW, "db", "upgrade"], env=tour_env, capture_output=True, text=True, check=False
    )
    assert upgrade.returncode == 0, upgrade.stderr
    with serving(tour_env, REPO, tmp_path / "serve.log") as base:
        yield base


def _run(command: Command, env: dict[str, str], base: str) -> str:
    """Run one command as bash would; returns its output after checking its exit status."""
    text = command.text.replace(README_SERVER, base)
    words = shlex.split(text, comments=True)
    assignment = ASSIGNMENT.match(words[0])
    if assignment:
        name = assignment.group()[:-1]
        # The assignment's status is its $(...)'s; pipefail: that of every command in the pipe.
        text = f'set -o pipefail; {text}\nprintf %s "${name}"'
    else:
        assert words[0] in ("crmflow", "curl"), (
            f"README.md:{command.line}: {words[0]!r}: the tour's test runs crmflow and curl"
        )
        text = f"set -o pipefail; {text}"
    done = subprocess.run(
        ["bash", "-c", text],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == command.expected_exit, (
        f"README.md:{command.line}: exited {done.returncode}, not {command.expected_exit}\n"
        f"{command.text}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    )
    if assignment:
        value = done.stdout.strip()
        assert value, f"README.md:{command.line}: {command.text} gave nothing"
        env[assignment.group()[:-1]] = value
    return done.stdout + done.stderr


def test_the_readme_tour_runs_as_written(make_run: str, tour_env: dict[str, str]) -> None:
    commands = tour_commands(README.read_text(encoding="utf-8"))
    assert commands[0].text == ACTIVATE, "the tour starts in the venv"
    EXPORTED.unlink(missing_ok=True)
    unused = set(CHECKS)
    try:
        for command in commands[1:]:
            output = _run(command, tour_env, make_run)
            for key in _checks_of(command):
                try:
                    CHECKS[key](output)
                except AssertionError as exc:
                    raise AssertionError(
                        f"README.md:{command.line}: {command.text}\n{exc}\noutput:\n{output}"
                    ) from exc
                unused.discard(key)
    finally:
        EXPORTED.unlink(missing_ok=True)
    assert not unused, f"no command of the tour for these checks: {sorted(unused)}"
