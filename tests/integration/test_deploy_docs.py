"""docs/deploy.md stays true: its systemd units start commands crmflow has, its settings table
is every setting, its table of migrations that are not additive lists every one that drops,
renames, alters or rewrites, and a wrong setting is refused in words, not with a traceback."""

from __future__ import annotations

import ast
import grp
import os
import pwd
import re
import shlex
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from crmflow.cli.main import app
from crmflow.errors import ConflictError
from crmflow.services.context import Context
from crmflow.services.setup import prepare_to_serve, upgrade_database
from crmflow.settings import Settings
from crmflow.store import migrate
from crmflow.store.backup import pg_dump_command
from crmflow.store.database import OperationalError, create_db_engine
from crmflow.store.migrate import MIGRATIONS, current_revision, head_revision
from tests.conftest import PG_ADMIN_URL, skip_or_fail_without_postgres

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = (ROOT / "docs" / "deploy.md").read_text(encoding="utf-8")
CRMFLOW = str(Path(sys.executable).parent / "crmflow")


def _code_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DEPLOY, flags=re.S)


def _exec_starts() -> list[list[str]]:
    """Each unit's command, as the words crmflow gets: `/bin/sh -c 'exec crmflow ...'` (the
    backup's, for its dated file name) unwrapped, systemd's `$$` and `%%` escapes undone."""
    found = []
    for block in _code_blocks("ini"):
        for line in block.splitlines():
            if line.startswith("ExecStart="):
                words = shlex.split(line.partition("=")[2].replace("$$", "$").replace("%%", "%"))
                if words[:2] == ["/bin/sh", "-c"]:
                    words = shlex.split(words[2])[1:]  # after `exec`
                found.append(words)
    return found


def test_the_units_are_serve_worker_dispatch_and_backup() -> None:
    commands = [words[1] for words in _exec_starts()]
    assert commands == ["serve", "worker", "dispatch", "backup"]
    assert all(words[0] == "/opt/crmflow/.venv/bin/crmflow" for words in _exec_starts())


@pytest.mark.parametrize("words", _exec_starts(), ids=lambda words: words[1])
def test_each_units_exec_start_is_a_command_with_options_crmflow_takes(words: list[str]) -> None:
    """`crmflow <command> <its options> --help`: an unknown command or option is refused (exit
    2) before --help is read, so exit 0 means the unit would start this command. (In this
    process: the same parser as the installed command, without its start-up.)"""
    done = CliRunner().invoke(app, [*words[1:], "--help"])
    assert done.exit_code == 0, done.output
    assert f"crmflow {words[1]}" in done.output


UNIT_FILES = [
    "crmflow.service",
    "crmflow-worker@1.service",
    "crmflow-dispatch.service",
    "crmflow-backup.service",
    "crmflow-backup.timer",
]


def test_systemd_reads_every_unit_without_a_complaint(tmp_path: Path) -> None:
    """`systemd-analyze verify` on the units as written (the worker's template as instance 1),
    with this checkout's crmflow and this machine's user in place of /opt/crmflow and crmflow:
    an unknown key, a bad value or a missing executable is reported on stderr."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed here")
    blocks = _code_blocks("ini")
    assert len(blocks) == len(UNIT_FILES)
    env_file = tmp_path / "crmflow.env"
    env_file.write_text("CRMFLOW_TIMEZONE=UTC\n")
    user = pwd.getpwuid(os.getuid()).pw_name
    group = grp.getgrgid(os.getgid()).gr_name
    for name, written in zip(UNIT_FILES, blocks, strict=True):
        here = (
            written.replace("/opt/crmflow/.venv/bin/crmflow", CRMFLOW)
            .replace("User=crmflow", f"User={user}")
            .replace("Group=crmflow", f"Group={group}")
            .replace("/etc/crmflow/crmflow.env", str(env_file))
        )
        (tmp_path / name).write_text(here)
    done = subprocess.run(
        [analyze, "verify", "--man=no", *(str(tmp_path / name) for name in UNIT_FILES)],
        check=False,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert (done.returncode, done.stderr) == (0, "")


def _settings_table() -> list[str]:
    section = DEPLOY.split("## Settings", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| `(CRMFLOW_[A-Z0-9_]+)` \|", section, flags=re.M)


def test_the_settings_table_lists_every_setting_once_and_no_other() -> None:
    documented = _settings_table()
    assert len(documented) == len(set(documented))
    expected = {"CRMFLOW_" + name.upper() for name in Settings.model_fields}
    assert set(documented) - expected == set(), "documented, but not a setting"
    assert expected - set(documented) == set(), "settings missing from docs/deploy.md"


# What a migration may do while version N still runs: add. These calls may break N (or its data).
_NOT_ADDITIVE = re.compile(
    r"\b(drop_column|drop_table|drop_constraint|drop_index|alter_column|rename_table|"
    r"execute|update|delete)\("
)


def _upgrade_source(path: Path) -> str:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    upgrade = next(
        node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "upgrade"
    )
    return ast.get_source_segment(path.read_text(encoding="utf-8"), upgrade) or ""


def test_every_migration_that_is_not_only_additive_is_in_the_upgrade_table() -> None:
    section = DEPLOY.split("### Without downtime on PostgreSQL", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"^\| (\d{4}) \|", section, flags=re.M))
    flagged = {
        path.name[:4]
        for path in sorted((MIGRATIONS / "versions").glob("[0-9][0-9][0-9][0-9]_*.py"))
        if path.name[:4] != "0001" and _NOT_ADDITIVE.search(_upgrade_source(path))
    }
    assert flagged - listed == set(), "not additive, and not in docs/deploy.md's table"
    assert listed - flagged == set(), "in the table, but only additive"


def test_the_pg_dump_command_shown_is_the_one_crmflow_prints() -> None:
    url = "postgresql+psycopg://crmflow:PASSWORD@db.internal:5432/crmflow"
    assert pg_dump_command(url, "/var/backups/crmflow/crm.dump") in DEPLOY


def test_a_setting_with_a_wrong_value_is_named_without_a_traceback_or_its_value(
    tmp_path: Path,
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRMFLOW_")}
    env |= {
        "CRMFLOW_DATABASE_URL": f"sqlite:///{tmp_path / 'crm.db'}",
        "CRMFLOW_PORT": "eighty",
        "CRMFLOW_SECRET_KEY": "tooshort",
    }
    # `backup` reads the settings before anything else: the cheapest command to start.
    done = subprocess.run(
        [CRMFLOW, "backup", str(tmp_path / "copy.db")],
        check=False,
        capture_output=True,
        text=True,
        env=env,
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "CRMFLOW_PORT: " in done.stderr and "integer" in done.stderr
    assert "CRMFLOW_SECRET_KEY: " in done.stderr and "16 characters" in done.stderr
    assert "tooshort" not in done.stderr
    assert not (tmp_path / "copy.db").exists()


def test_a_database_a_newer_crmflow_upgraded_is_refused_in_words(tmp_path: Path) -> None:
    """Step 5 of the upgrade: a process of the old version that restarts after the new one
    migrated the database is told so, by `serve` and by `db upgrade` (not told to upgrade, which
    it cannot), and nothing is changed."""
    ctx = Context.from_settings(Settings(database_url=f"sqlite:///{tmp_path / 'crm.db'}"))
    upgrade_database(ctx)
    with ctx.engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '9999'"))
    for start in (prepare_to_serve, upgrade_database):
        with pytest.raises(ConflictError) as refused:
            start(ctx)
        assert "at migration 9999, newer than this crmflow knows" in refused.value.message
        assert f"its newest is {head_revision()}" in refused.value.message
        assert "run that version" in refused.value.message
    assert current_revision(ctx.engine) == "9999"
    ctx.engine.dispose()


def test_an_upgrade_that_waits_too_long_for_a_lock_gives_up_whole_on_postgresql() -> None:
    """docs/deploy.md, step 4: with PGOPTIONS' lock_timeout, `db upgrade` behind a transaction
    that reads `tasks` (altered by 0021) gives up instead of queueing every statement behind
    it, and leaves the database where it was, not at 0020: all migrations run in one
    transaction."""
    skip_or_fail_without_postgres()
    name = f"crmflow_lock_{uuid.uuid4().hex[:8]}"
    admin = create_db_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    ctx = Context.from_settings(Settings(database_url=PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"))
    try:
        migrate.upgrade(ctx.engine, "0006")
        with ctx.engine.connect() as reader, reader.begin():
            reader.execute(sa.text("SELECT count(*) FROM tasks"))  # holds its lock till the end
            os.environ["PGOPTIONS"] = "-c lock_timeout=300ms"
            try:
                upgrader = Context.from_settings(ctx.settings)
                with pytest.raises(OperationalError, match="lock timeout"):
                    upgrade_database(upgrader)
                upgrader.engine.dispose()
            finally:
                del os.environ["PGOPTIONS"]
        assert current_revision(ctx.engine) == "0006"
    finally:
        ctx.engine.dispose()
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_the_nginx_example_passes_nginx_t(tmp_path: Path) -> None:
    """`nginx -t` on the example as written, with a throw-away certificate in place of
    certbot's (skipped where nginx or openssl is not installed)."""
    nginx, openssl = shutil.which("nginx") or "/usr/sbin/nginx", shutil.which("openssl")
    if not Path(nginx).is_file() or openssl is None:
        pytest.skip("nginx or openssl is not installed here")
    [site] = _code_blocks("nginx")
    site = site.replace("/etc/letsencrypt/live/crm.example.org/", f"{tmp_path}/")
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
         "/CN=crm.example.org", "-keyout", str(tmp_path / "privkey.pem"),
         "-out", str(tmp_path / "fullchain.pem")],
        check=True,
        capture_output=True,
    )  # fmt: skip
    (tmp_path / "site.conf").write_text(site)
    (tmp_path / "nginx.conf").write_text(
        f"pid {tmp_path}/nginx.pid; error_log {tmp_path}/error.log;\n"
        f"events {{}}\nhttp {{ access_log off; include {tmp_path}/site.conf; }}\n"
    )
    done = subprocess.run(
        [nginx, "-t", "-e", str(tmp_path / "error.log"), "-c", str(tmp_path / "nginx.conf")],
        check=False,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert "syntax is ok" in done.stderr


def test_the_caddy_example_is_a_valid_caddyfile(tmp_path: Path) -> None:
    """`caddy validate` on the example (skipped where caddy is not installed)."""
    caddy = shutil.which("caddy")
    if caddy is None:
        pytest.skip("caddy is not installed here")
    [caddyfile] = re.findall(r"```\n(crm\.example\.org \{\n.*?)```", DEPLOY, flags=re.S)
    (tmp_path / "Caddyfile").write_text(caddyfile)
    done = subprocess.run(
        [caddy, "validate", "--adapter", "caddyfile", "--config", str(tmp_path / "Caddyfile")],
        check=False,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path)},
    )
    assert done.returncode == 0, done.stderr
    assert "Valid configuration" in done.stderr + done.stdout
