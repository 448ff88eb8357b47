"""The change feed passing record changes that no flow listens to.

N `updated` changes of contacts are in `record_changes` (one INSERT ... SELECT, not timed); a
flow runs on contacts with a manual trigger, so only a contact's deletion would concern it
(its records inside end). `ingest_changes` consumes them all, as a worker's loop does:

- ours: the feed as it runs, the changes nobody hears filtered out in SQL (`store.feed.
  read_heard`: no row of theirs is sent, up to SKIP_SPAN x 500 passed per transaction);
- rows: the same feed with that filter taken away (every change's id, type and kind read, 500
  per transaction, and matched in Python: what the feed did before, and still does on
  PostgreSQL while a gap in the ids is waited for);
- baseline: the bare read of the same N rows' id, type and kind, 500 per statement.

    python -m bench.bench_feed [--rows N] [--runs N] [--backend sqlite|postgres|both]
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

import sqlalchemy as sa

from bench.bench_steps import create_flow
from bench.common import fresh_database, timed
from crmflow.services.context import Context
from crmflow.services.triggers import change_feed
from crmflow.store.types import UTCDateTime

__all__ = ["FeedResult", "main", "run"]

AIM = 2.0  # ours within twice the bare read of the rows
BATCH = 500
AT = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def _fill(ctx: Context, count: int) -> None:
    at = sa.bindparam("at", AT, type_=UTCDateTime())
    if ctx.engine.dialect.name == "postgresql":
        sql = (
            "insert into record_changes (record_id, record_type, kind, before, after, at) "
            "select i, 'contact', 'updated', jsonb_build_object('status', 'lead'), "
            "jsonb_build_object('status', 'client'), :at from generate_series(1, :n) as i"
        )
    else:
        sql = (
            "with recursive n(i) as (select 1 union all select i + 1 from n where i < :n) "
            "insert into record_changes (record_id, record_type, kind, before, after, at) "
            "select i, 'contact', 'updated', json_object('status', 'lead'), "
            "json_object('status', 'client'), :at from n"
        )
    with ctx.engine.begin() as conn:
        conn.execute(sa.text(sql).bindparams(at), {"n": count})
        if ctx.engine.dialect.name == "postgresql":
            conn.execute(sa.text("analyze record_changes"))


@contextmanager
def _without_filter() -> Iterator[None]:
    """The feed with its SQL filter taken away: every change read (its PostgreSQL gap path)."""
    kept = change_feed._heard_window
    change_feed.__dict__["_heard_window"] = lambda *_args, **_kw: None
    try:
        yield
    finally:
        change_feed.__dict__["_heard_window"] = kept


def _ingest(ctx: Context, rows: int) -> None:
    consumed = change_feed.ingest_changes(ctx, now=AT, limit=BATCH)
    if consumed != rows:
        raise RuntimeError(f"the feed consumed {consumed} changes, expected {rows}")


def _bare(ctx: Context) -> None:
    with ctx.engine.connect() as conn:
        position = 0
        while True:
            found = conn.execute(
                sa.text(
                    "select id, record_type, kind from record_changes where id > :p "
                    "order by id limit :n"
                ),
                {"p": position, "n": BATCH},
            ).all()
            if not found:
                return
            position = found[-1].id


@dataclass
class FeedResult:
    backend: str
    rows: int
    ours: list[float] = field(default_factory=list)
    unfiltered: list[float] = field(default_factory=list)
    baseline: list[float] = field(default_factory=list)

    def line(self) -> str:
        ours, rows = statistics.median(self.ours), statistics.median(self.unfiltered)
        base = statistics.median(self.baseline)
        verdict = "ok" if ours / base <= AIM else "ABOVE AIM"
        return (
            f"{'feed, changes nobody hears':<28} {self.backend:<8} rows={self.rows:>9,}  "
            f"ratio={ours / base:5.2f}x (aim <= {AIM:g}x, {verdict})  "
            f"median ours={ours:.3f}s every-row={rows:.3f}s ({rows / base:.2f}x; ours "
            f"{rows / ours:.1f}x faster) bare-read={base:.3f}s  runs={len(self.ours)}"
        )


def run(backend: str, rows: int, runs: int) -> FeedResult:
    """Each run: one database filled once; the feed with and without its filter (its cursor
    set back to 0 between them), then the bare read."""
    result = FeedResult(backend, rows)
    for _ in range(runs):
        with fresh_database(backend) as ctx:
            ctx.clock = lambda: AT
            create_flow(ctx)
            _fill(ctx, rows)
            with _without_filter():
                result.unfiltered.append(timed(lambda: _ingest(ctx, rows)))
            with ctx.engine.begin() as conn:
                conn.execute(sa.text("update feed_cursors set position = 0"))
            result.ours.append(timed(lambda: _ingest(ctx, rows)))
            result.baseline.append(timed(lambda: _bare(ctx)))
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    args = parser.parse_args(argv)
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    for backend in backends:
        print(run(backend, args.rows, args.runs).line(), flush=True)


if __name__ == "__main__":
    main()
