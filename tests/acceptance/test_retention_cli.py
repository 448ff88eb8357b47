"""`crmflow prune` and `crmflow archive export` as a user runs them (a subprocess, SQLite)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.acceptance.conftest import Run


def test_prune_says_what_went_and_the_export_writes_json_lines_once(
    crmflow: Run, tmp_path: Path
) -> None:
    crmflow("db", "upgrade")
    pruned = crmflow("prune")
    assert "step_runs: 0 rows removed" in pruned.stdout
    assert "record_changes: 0 rows removed" in pruned.stdout

    out = tmp_path / "history.jsonl"
    done = crmflow("archive", "export", "--before", "2999-01-01", str(out))
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert lines == []  # a new database has no history yet
    assert "wrote 0 rows older than 2998-12-31T23:00:00+00:00" in done.stderr

    again = crmflow("archive", "export", "--before", "2999-01-01", str(out), check_exit=1)
    assert f"{out} exists" in again.stderr and "--overwrite" in again.stderr
    bad = crmflow("archive", "export", "--before", "yesterday", str(tmp_path / "x"), check_exit=1)
    assert "--before: 'yesterday' is not a date" in bad.stderr and "2026-01-01" in bad.stderr
    nowhere = str(tmp_path / "missing" / "x.jsonl")
    failed = crmflow("archive", "export", "--before", "2026-01-01", nowhere, check_exit=1)
    assert "cannot write" in failed.stderr and "No such file" in failed.stderr
