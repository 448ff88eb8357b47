"""What every benchmark shares: throw-away databases on both backends, timing, ratio reports."""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa

from crmflow.services.context import Context
from crmflow.services.setup import upgrade_database
from crmflow.settings import Settings
from crmflow.store.database import create_db_engine

PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@contextmanager
def fresh_database(backend: str) -> Iterator[Context]:
    """A new, migrated database on `backend` ('sqlite' or 'postgres'), dropped afterwards."""
    if backend == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            ctx = Context.from_settings(
                Settings(database_url=f"sqlite:///{Path(tmp) / 'bench.db'}")
            )
            upgrade_database(ctx)
            try:
                yield ctx
            finally:
                ctx.engine.dispose()
        return
    name = f"crmflow_bench_{uuid.uuid4().hex[:8]}"
    admin = create_db_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    ctx = Context.from_settings(Settings(database_url=PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"))
    try:
        upgrade_database(ctx)
        yield ctx
    finally:
        ctx.engine.dispose()
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


@dataclass
class Comparison:
    """Seconds of crmflow's path and of the bare baseline, one pair per run."""

    name: str
    backend: str
    rows: int
    ours: list[float]
    baseline: list[float]
    # Optional: the same database work as crmflow's, written by hand as one SQL statement (what
    # the database itself costs, so that what crmflow adds on top can be told apart).
    by_hand: list[float] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        return statistics.median(self.ours) / statistics.median(self.baseline)

    def line(self, aim: float) -> str:
        ours = statistics.median(self.ours)
        base = statistics.median(self.baseline)
        verdict = "ok" if self.ratio <= aim else "ABOVE AIM"
        text = (
            f"{self.name:<28} {self.backend:<8} rows={self.rows:>9,}  "
            f"ratio={self.ratio:5.2f}x (aim <= {aim:g}x, {verdict})  "
            f"median ours={ours:.3f}s baseline={base:.3f}s"
        )
        if self.by_hand:
            hand = statistics.median(self.by_hand)
            text += (
                f" same-SQL-by-hand={hand:.3f}s ({ours / hand:.2f}x of it, {hand / base:.2f}x bare)"
            )
        return text + f"  runs={len(self.ours)}"


def ratio_main(
    doc: str | None,
    run: Callable[[str, int, int], Comparison],
    aim: float,
    argv: list[str] | None = None,
) -> None:
    """The command line of a benchmark that compares a row count against a baseline:
    `--rows N --runs N --backend sqlite|postgres|both`, one ratio line per backend."""

    parser = argparse.ArgumentParser(description=doc.splitlines()[0] if doc else None)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    args = parser.parse_args(argv)
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    for backend in backends:
        print(run(backend, args.rows, args.runs).line(aim), flush=True)
