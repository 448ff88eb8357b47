"""Each table is written from one place (issue 9): `scripts/table_writers.py` over src/crmflow
finds one writer per table, and the scanner sees the ways a module writes a table (Core, a call
handed the table, raw SQL in any case) but not a mention in a docstring."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "table_writers.py"


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("table_writers", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_each_table_of_the_schema_is_written_from_one_module_or_table_group_package() -> None:
    found = _script().writers(ROOT / "src" / "crmflow")

    assert {"enrollments", "entry_decisions", "records", "step_runs"} <= found.keys()
    assert {table: places for table, places in found.items() if len(places) != 1} == {}
    assert found["enrollments"] == {"store/enrollments/"}
    assert found["entry_decisions"] == {"store/entry_decisions.py"}


def test_the_command_says_so_and_succeeds_over_src() -> None:
    run = subprocess.run(
        [sys.executable, str(SCRIPT)], capture_output=True, text=True, check=False, timeout=60
    )

    assert run.returncode == 0, run.stdout
    assert "store/enrollments/\n" in run.stdout


def _write(root: Path, relative: str, text: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))


def test_the_scanner_finds_writes_not_mentions_and_fails_a_table_with_two_writers(
    tmp_path: Path,
) -> None:
    package = tmp_path / "crmflow"
    _write(
        package,
        "store/schema.py",
        """
        import sqlalchemy as sa
        alpha = sa.Table("alpha", sa.MetaData())
        beta = sa.Table("beta", sa.MetaData())
        gamma = sa.Table("gamma", sa.MetaData())
        """,
    )
    _write(
        package,
        "store/a.py",
        '''
        """Says `INSERT INTO gamma ... SELECT` and `delete from gamma`: documentation only."""
        from crmflow.store.schema import alpha as a_table, gamma

        def write(conn, value):
            """Not `update gamma set x = 1` either."""
            conn.execute(a_table.insert())
            conn.execute(f"Update beta SET x = {value}")
            return gamma.c.id
        ''',
    )
    _write(
        package,
        "store/group/one.py",
        """
        from sqlalchemy.dialects import postgresql, sqlite
        from crmflow.store.schema import alpha

        def upsert(conn, pg):
            return (postgresql.insert if pg else sqlite.insert)(alpha)
        """,
    )
    _write(
        package,
        "store/group/two.py",
        """
        import sqlalchemy as sa
        from crmflow.store import schema

        def clear(conn):
            conn.execute(sa.delete(schema.alpha))
            conn.execute(schema.alpha.update())
        """,
    )
    _write(
        package,
        "services/counts.py",
        """
        records = {}
        alpha = {}
        alpha.update(records)
        """,
    )
    _write(package, "store/migrations/0001.py", "SQL = 'insert into gamma values (1)'\n")

    script = _script()

    assert script.writers(package) == {
        "alpha": {"store/a.py", "store/group/"},
        "beta": {"store/a.py"},
        "gamma": set(),
    }
    assert script.main([str(package)]) == 1
