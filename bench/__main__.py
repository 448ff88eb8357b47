"""`make bench` / `python -m bench`: every benchmark on SQLite and PostgreSQL, as ratios.

python -m bench                      # 1,000,000 rows, 3 runs, both backends
python -m bench --rows 100000 --runs 5 --backend sqlite
python -m bench --only steps         # one benchmark
python -m bench --only cli           # the command line's start-up (no database)
python -m bench --only delivery      # emails to a local SMTP server, against bare smtplib
python -m bench --only web           # /records and /tasks of 10,000 rows, against the API's JSON
python -m bench --only migrate       # db upgrade on a copy with --rows records, against a bare copy
python -m bench --only retention     # pruning ended runs' history, against the bare delete
python -m bench --only scale         # 1, 2, 4 `crmflow worker` processes on PostgreSQL
python -m bench --only soak          # timers due over virtual time: lateness, memory
"""

from __future__ import annotations

import argparse

from bench import (
    bench_cli_start,
    bench_crash,
    bench_delivery,
    bench_enroll,
    bench_feed,
    bench_import,
    bench_memory,
    bench_migrate,
    bench_query_count,
    bench_retention,
    bench_scale,
    bench_soak,
    bench_steps,
    bench_timers,
    bench_wakeup,
    bench_web_pages,
)

AIMS = {"import": 3.0, "query count": 3.0, "enroll": 3.0}
ONLY = [
    "import",
    "query",
    "enroll",
    "steps",
    "feed",
    "timers",
    "wakeup",
    "memory",
    "crash",
    "cli",
    "delivery",
    "web",
    "migrate",
    "retention",
    "scale",
    "soak",
]
STEPS_ROWS = 100_000  # enrollments through the 5-step flow (5 step runs each)
# PostgreSQL: fewer, to keep `make bench` within minutes on a shared machine (each statement is
# a network round trip there; the rate and ratio are per row either way).
STEPS_ROWS_POSTGRES = 20_000
TIMERS = 10_000  # due over TIMER_SECONDS of real time
TIMER_SECONDS = 60.0
MEMORY_TIMERS = 1_000_000  # pending timers while the worker runs for MEMORY_SECONDS
MEMORY_SECONDS = 120.0
CRASH_ENROLLMENTS = 10_000
DELIVERY_EMAILS = 1_000  # per run, through 1 and 4 dispatcher threads and the bare loop
DELIVERY_LATENCY = (1_000, 20.0)  # emails due evenly over so many seconds, at rest
WAKEUP = (5, 60.0)  # records created at rest per run, seconds at rest measured
WEB_ROWS = 10_000  # records and open tasks behind the pages (issue 12's figure)
RETENTION_ROWS = 100_000  # step runs of ended runs pruned (and a message per run)
SCALE_RECORDS = 20_000  # entered from a start list, run by 1, 2 and 4 worker processes
# The soak at the density of 1,000,000 timers an hour (278 a second), for a tenth of the hour:
# the worker's idle rule makes an hour of virtual time cost real minutes whatever the count.
SOAK = (100_000, 360.0)
CLI_START_RUNS = 20  # a start takes a fraction of a second: more runs for a steady median


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--only", choices=ONLY, default=None)
    args = parser.parse_args()
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]

    def wanted(name: str) -> bool:
        return args.only in (None, name)

    lines = []

    def report(line: str) -> None:
        lines.append(line)
        print(line, flush=True)

    for backend in backends:
        if wanted("import"):
            report(bench_import.run(backend, args.rows, args.runs).line(AIMS["import"]))
        if wanted("query"):
            report(bench_query_count.run(backend, args.rows, args.runs).line(AIMS["query count"]))
        if wanted("enroll"):
            report(bench_enroll.run(backend, args.rows, args.runs).line(AIMS["enroll"]))
        if wanted("steps"):
            most = STEPS_ROWS if backend == "sqlite" else STEPS_ROWS_POSTGRES
            steps = bench_steps.run(backend, min(args.rows, most), args.runs, parked=True)
            report(steps.line())
        if wanted("feed"):
            report(bench_feed.run(backend, args.rows, args.runs).line())
        if wanted("timers"):
            report(bench_timers.run(backend, TIMERS, TIMER_SECONDS).line())
        if wanted("wakeup"):
            samples, idle = WAKEUP
            report(bench_wakeup.run(backend, samples, idle, args.runs).line())
        if wanted("memory"):
            report(bench_memory.run(backend, MEMORY_TIMERS, MEMORY_SECONDS).line())
        if wanted("delivery"):
            emails, seconds = DELIVERY_LATENCY
            delivery = bench_delivery.run(
                backend,
                DELIVERY_EMAILS,
                max(args.runs, 3),
                latency_emails=emails,
                latency_seconds=seconds,
            )
            for line in delivery.lines():
                report(line)
        if wanted("migrate"):  # db upgrade from before the records migrations, on a copy
            report(bench_migrate.run(backend, args.rows, args.runs).line())
        if wanted("retention"):  # pruning old runs' history, against the bare delete
            rows = min(args.rows, RETENTION_ROWS)
            report(bench_retention.run(backend, rows, args.runs).line(bench_retention.AIM))
        if wanted("soak"):
            enrollments, seconds = SOAK
            for line in bench_soak.run(backend, enrollments, seconds, cpu=True).lines():
                report(line)
        if wanted("web"):
            for times in bench_web_pages.run(backend, min(args.rows, WEB_ROWS), max(args.runs, 5)):
                report(times.line())
    if wanted("crash") and "postgres" in backends:
        report(bench_crash.run(CRASH_ENROLLMENTS).line())
    if wanted("scale") and "postgres" in backends:
        for line in bench_scale.run(SCALE_RECORDS, args.runs).lines():
            report(line)
    if wanted("cli"):  # no database: once, whatever the backends
        for line in bench_cli_start.run(CLI_START_RUNS).lines():
            report(line)
    print("\nsummary (median of runs; ratio = crmflow / bare baseline in the same run):")
    for line in lines:
        print("  " + line)


if __name__ == "__main__":
    main()
