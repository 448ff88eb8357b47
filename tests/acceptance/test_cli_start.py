"""`crmflow --help` and an offline `crmflow flows validate` start without loading the server.

Checked as a user would: `python -X importtime $(which crmflow) ...` lists every module the
command imported; none of the database, web, template or CEL libraries may be among them.
(The time itself is measured by bench/bench_cli_start.py, not asserted here.)
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bench import bench_cli_start
from tests.acceptance.conftest import CRMFLOW, REPO

# What a command that only explains itself, or only reads a flow file, has no use for.
SERVER_MODULES = ("sqlalchemy", "alembic", "psycopg", "fastapi", "starlette", "uvicorn")
HEAVY_MODULES = (*SERVER_MODULES, "jinja2", "cel")
SERVER_PARTS = ("crmflow.services", "crmflow.store", "crmflow.api", "crmflow.worker")
# What `flows validate` reads its settings and a calendar's country without: Settings (through
# pydantic-settings, which loads asyncio and ssl) and the holidays package (for a known code);
# what it prints without (rich); and the runtime half of the engine, which the action kinds
# import in their runners only (the commands' models, the step's scope, people and clock).
VALIDATE_NEEDS_NONE_OF = (
    *("crmflow.settings", "pydantic_settings", "asyncio", "ssl"),
    "holidays",
    "rich",
    *("crmflow.engine.commands", "crmflow.engine.runtime", "crmflow.engine.steps"),
)


def _start(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-X", "importtime", CRMFLOW, *args],
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _imported(process: subprocess.Popen[str]) -> tuple[int, str, set[str]]:
    """Exit code, standard output and the modules `-X importtime` reported."""
    out, err = process.communicate(timeout=120)
    modules = {
        line.rsplit("|", 1)[1].strip()
        for line in err.splitlines()
        if line.startswith("import time:") and "|" in line
    }
    return process.returncode, out, modules


def _heavy(modules: set[str], heavy: tuple[str, ...], parts: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in heavy or m.startswith(parts))


def test_help_loads_no_server_module(cli_env: dict[str, str], tmp_path: Path) -> None:
    """The root's help builds every group (each command module is imported), and a group's help
    also runs the root's options: neither imports what only a running command needs."""
    started = [_start(args, cli_env, tmp_path) for args in (["--help"], ["flows", "--help"])]
    for process in started:
        code, out, modules = _imported(process)
        assert code == 0 and "Usage:" in out, out
        assert {"crmflow.cli.flows", "crmflow.cli.runs", "crmflow.cli.records"} <= modules
        assert _heavy(modules, HEAVY_MODULES, SERVER_PARTS) == []
    assert list(tmp_path.iterdir()) == []


def test_validate_with_types_reads_files_only(cli_env: dict[str, str], tmp_path: Path) -> None:
    """The CI check of a Git checkout: no database is opened, created or even imported."""
    flow = REPO / "examples" / "recruitment-approval.yaml"  # a flow of the custom type candidate
    types = REPO / "examples" / "types"
    code, out, modules = _imported(
        _start(["flows", "validate", "--types", str(types), str(flow)], cli_env, tmp_path)
    )
    assert code == 0, out
    assert f"{flow}: valid" in out
    assert _heavy(modules, SERVER_MODULES, ("crmflow.store", "crmflow.api")) == []
    assert list(tmp_path.iterdir()) == []  # no var/crmflow.db, no cli.db


def test_validate_builds_no_settings_and_loads_no_holiday_countries(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    """What bench/bench_cli_start.py times: a flow whose calendar names a country (FR), beside
    no database. Its country is one of those known without loading the holidays package."""
    flow = REPO / "examples" / "donor-thank-you.yaml"
    assert "holidays: FR" in flow.read_text()
    code, out, modules = _imported(_start(["flows", "validate", str(flow)], cli_env, tmp_path))
    assert code == 0 and f"{flow}: valid" in out, out
    loaded = [m for m in modules for x in VALIDATE_NEEDS_NONE_OF if m == x or m.startswith(f"{x}.")]
    assert sorted(loaded) == []
    assert list(tmp_path.iterdir()) == []


def test_the_start_benchmark_runs_and_compares_with_python_itself() -> None:
    """bench/bench_cli_start.py still runs (it is not part of `make test`); no timing asserted."""
    result = bench_cli_start.run(1)
    assert [len(s.wall) for s in (result.baseline, *result.commands)] == [1, 1, 1]
    lines = result.lines()
    assert len(lines) == 2 and all("ratio=" in line for line in lines)
