"""Counting a saved query over many contacts, against the same count written by hand in SQL.

Both sides run on the same table in the same run, without any index on the JSON fields (the
table has only its primary key and `(type, id)`), so the ratio is crmflow's compiled SQL plus its
service overhead (reading the saved query and the record type, checking and resolving the
filter, compiling it) against a bare `SELECT count(*)` a person would type:

    python -m bench.bench_query_count --rows 1000000 --runs 3 --backend both
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta

import orjson
import sqlalchemy as sa

from bench.common import Comparison, fresh_database, ratio_main, timed
from crmflow.services.context import Context
from crmflow.services.queries import count_query, save_query
from crmflow.services.users import actor_by_username

__all__ = ["main", "run"]

AIM = 3.0
QUERY = "clients-six-months"
FILTER = {
    "all": [
        {"field": "client_since", "op": "=", "value": "today - 180 days"},
        {"field": "status", "op": "in", "value": ["client", "donor"]},
    ]
}
HAND_WRITTEN = {
    "sqlite": (
        "SELECT count(*) FROM records WHERE type = 'contact'"
        " AND json_extract(data, '$.client_since') = :day"
        " AND json_extract(data, '$.status') IN ('client', 'donor')"
    ),
    "postgresql": (
        "SELECT count(*) FROM records WHERE type = 'contact'"
        " AND data->>'client_since' = :day"
        " AND data->>'status' IN ('client', 'donor')"
    ),
}
STATUSES = ["lead", "prospect", "client", "donor", "inactive"]
LANGUAGES = ["en", "fr", "ro", "it", "de", "es"]
FIRST = ["Ana", "Luca", "Marie", "Ion", "Giulia", "Pierre", "Elena", "Marco", "Sophie", "Andrei"]
LAST = ["Popescu", "Rossi", "Martin", "Ionescu", "Bianchi", "Dubois", "Stan", "Ferrari", "Moreau"]
BATCH = 50_000


def _contacts(rows: int, target: date, seed: int = 7) -> Iterator[list[bytes]]:
    """Batches of contact documents as JSON; client_since spreads over 180 days around `target`
    (so about 1 in 180 falls on it), a quarter of the contacts have none."""
    rng = random.Random(seed)
    batch: list[bytes] = []
    for i in range(rows):
        doc: dict[str, object] = {
            "first_name": rng.choice(FIRST),
            "last_name": rng.choice(LAST),
            "email": f"contact{i}@example.org",
            "language": rng.choice(LANGUAGES),
            "status": rng.choice(STATUSES),
            "newsletter": rng.random() < 0.4,
        }
        if rng.random() < 0.75:
            doc["client_since"] = (target + timedelta(days=rng.randrange(-90, 90))).isoformat()
        if rng.random() < 0.3:
            doc["total_donations"] = rng.randrange(10, 5000)
        batch.append(orjson.dumps(doc))
        if len(batch) == BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def _fill(ctx: Context, rows: int, target: date) -> None:
    """Bulk-load `rows` contacts straight into `records` (COPY on PostgreSQL)."""
    now = datetime.now(UTC).replace(microsecond=0)
    raw = ctx.engine.raw_connection()
    try:
        cursor = raw.cursor()
        if ctx.engine.dialect.name == "postgresql":
            with cursor.copy(
                "COPY records (type, data, created_at, updated_at) FROM STDIN"
            ) as copy:
                for batch in _contacts(rows, target):
                    for doc in batch:
                        copy.write_row(("contact", doc.decode(), now, now))
            cursor.execute("ANALYZE records")
        else:
            stamp = now.replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")
            for batch in _contacts(rows, target):
                cursor.executemany(
                    "INSERT INTO records (type, data, created_at, updated_at) "
                    "VALUES ('contact', ?, ?, ?)",
                    [(doc.decode(), stamp, stamp) for doc in batch],
                )
            cursor.execute("ANALYZE")
        raw.commit()
    finally:
        raw.close()


def run(backend: str, rows: int, runs: int) -> Comparison:
    """Fill a fresh `backend` database with `rows` contacts; time `count_query` against the
    hand-written count, alternating, `runs` times each (after one warm-up of each)."""
    with fresh_database(backend) as ctx:
        target = ctx.now().astimezone(ctx.zone).date() - timedelta(days=180)
        _fill(ctx, rows, target)
        save_query(
            ctx,
            actor_by_username(ctx, "system"),
            name=QUERY,
            record_type="contact",
            filter=FILTER,
            description="Contacts who became clients or donors exactly 180 days ago",
        )
        statement = sa.text(HAND_WRITTEN[ctx.engine.dialect.name])

        def hand_written() -> int:
            with ctx.engine.connect() as conn:
                return int(conn.execute(statement, {"day": target.isoformat()}).scalar_one())

        expected = hand_written()
        got = count_query(ctx, QUERY)
        if got != expected:
            raise AssertionError(f"count_query gave {got}, the hand-written SQL {expected}")
        ours: list[float] = []
        baseline: list[float] = []
        for _ in range(runs):
            ours.append(timed(lambda: count_query(ctx, QUERY)))
            baseline.append(timed(hand_written))
        print(
            f"  {backend}: {expected:,} of {rows:,} contacts match "
            f"(client_since = {target.isoformat()}); ours {statistics.median(ours):.3f}s, "
            f"hand-written {statistics.median(baseline):.3f}s",
            flush=True,
        )
        return Comparison("saved query count", backend, rows, ours, baseline)


def main(argv: list[str] | None = None) -> None:
    ratio_main(__doc__, run, AIM, argv)


if __name__ == "__main__":
    main()
