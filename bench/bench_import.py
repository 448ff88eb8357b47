"""Importing contacts from JSONL, against a bare executemany of the same rows in the same run.

crmflow's path parses, checks and converts every value, resolves usernames and checks company
references per batch, inserts the records and writes one `created` change event per record. The
baseline reads the same file and inserts each line as the record's data, with the same batch size
and one transaction per batch, and does nothing else.

    python -m bench.bench_import [--rows N] [--runs N] [--backend sqlite|postgres|both]
"""

from __future__ import annotations

import random
import tempfile
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa

from bench.common import Comparison, fresh_database, ratio_main, timed
from crmflow.services.context import Actor, Context
from crmflow.services.imports import import_records
from crmflow.services.users import actor_by_username, create_user
from crmflow.store.records import driver_time, records_insert
from crmflow.store.schema import records

__all__ = ["AIM", "main", "run", "write_contacts"]

AIM = 3.0
BATCH_SIZE = 5000
COMPANIES = 200
FIRST = ["Ana", "Ion", "Maria", "Andrei", "Elena", "Luca", "Giulia", "Marco", "Sofia", "Paul"]
LAST = ["Popescu", "Ionescu", "Rossi", "Bianchi", "Dumitru", "Ferrari", "Martin", "Bernard"]
STATUSES = ["lead", "prospect", "client", "donor", "inactive"]
LANGUAGES = ["en", "fr", "ro", "it"]


def write_contacts(path: Path, rows: int, seed: int = 7) -> None:
    """A JSONL file of `rows` contacts like a CRM export, referencing the first COMPANIES ids."""
    rng = random.Random(seed)
    start = date(2015, 1, 1)
    with path.open("wb") as out:
        for i in range(rows):
            first, last = rng.choice(FIRST), rng.choice(LAST)
            row: dict[str, Any] = {
                "first_name": first,
                "last_name": last,
                "email": f"{first}.{last}{i}@Example.com",
                "phone": f"+40 7{rng.randrange(10_000_000, 99_999_999)}",
                "language": rng.choice(LANGUAGES),
                "status": rng.choice(STATUSES),
                "client_since": (start + timedelta(days=rng.randrange(4000))).isoformat(),
                "company": rng.randrange(1, COMPANIES + 1),
                "newsletter": rng.random() < 0.5,
                "total_donations": round(rng.random() * 500, 2),
            }
            if i % 10 == 0:
                row["manager"] = "maria"
            out.write(orjson.dumps(row))
            out.write(b"\n")


def _prepare(ctx: Context) -> Actor:
    """The users and companies the contacts refer to (not timed)."""
    system = actor_by_username(ctx, "system")
    create_user(ctx, system, username="maria", role="manager")
    now = ctx.now()
    with ctx.engine.begin() as conn:
        conn.execute(
            records.insert(),
            [
                {
                    "type": "company",
                    "owner_id": system.id,
                    "data": {"name": f"Company {i}"},
                    "created_at": now,
                    "updated_at": now,
                }
                for i in range(COMPANIES)
            ],
        )
        ids = conn.execute(sa.select(records.c.id).order_by(records.c.id)).scalars().all()
    if list(ids) != list(range(1, COMPANIES + 1)):
        raise RuntimeError(f"the companies did not get ids 1..{COMPANIES}: the file needs them")
    return system


def _bare_insert(ctx: Context, path: Path, owner_id: int) -> int:
    """The baseline: each line inserted as it is, same batches and transactions, nothing else."""
    # The same statement and timestamp handling as crmflow's import, without RETURNING.
    statement = records_insert(ctx.engine.dialect)
    at = driver_time(ctx.engine.dialect, ctx.now())
    count = 0
    batch: list[dict[str, Any]] = []

    def flush() -> None:
        with ctx.engine.begin() as conn:
            conn.execute(statement, batch)

    with path.open("rb") as lines:
        for line in lines:
            batch.append(
                {"p_type": "contact", "p_owner": owner_id, "p_data": line.decode(), "p_now": at}
            )
            if len(batch) >= BATCH_SIZE:
                flush()
                count += len(batch)
                batch = []
    if batch:
        flush()
        count += len(batch)
    return count


def _ours(ctx: Context, actor: Actor, path: Path, rows: int) -> Callable[[], None]:
    def go() -> None:
        report = import_records(ctx, actor, "contact", path, batch_size=BATCH_SIZE)
        if report.imported != rows:
            raise RuntimeError(
                f"crmflow imported {report.imported} of {rows} rows: {report.errors[:3]}"
            )

    return go


def run(backend: str, rows: int, runs: int) -> Comparison:
    """Median seconds of crmflow's import and of the bare insert, each on a fresh database."""
    result = Comparison("import contacts (JSONL)", backend, rows, ours=[], baseline=[])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "contacts.jsonl"
        write_contacts(path, rows)
        for _ in range(runs):
            with fresh_database(backend) as ctx:
                result.ours.append(timed(_ours(ctx, _prepare(ctx), path, rows)))
            with fresh_database(backend) as ctx:
                owner_id = _prepare(ctx).id
                result.baseline.append(timed(lambda: _bare_insert(ctx, path, owner_id)))  # noqa: B023
    return result


def main(argv: list[str] | None = None) -> None:
    ratio_main(__doc__, run, AIM, argv)


if __name__ == "__main__":
    main()
