"""`make bench` / `python -m bench`: every benchmark on SQLite and PostgreSQL, as ratios.

python -m bench                      # 1,000,000 rows, 3 runs, both backends
python -m bench --rows 100000 --runs 5 --backend sqlite
"""

from __future__ import annotations

import argparse

from bench import bench_import, bench_query_count

AIMS = {"import": 3.0, "query count": 3.0}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--only", choices=["import", "query"], default=None)
    args = parser.parse_args()
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    lines = []
    for backend in backends:
        if args.only in (None, "import"):
            result = bench_import.run(backend, args.rows, args.runs)
            lines.append(result.line(AIMS["import"]))
            print(lines[-1], flush=True)
        if args.only in (None, "query"):
            result = bench_query_count.run(backend, args.rows, args.runs)
            lines.append(result.line(AIMS["query count"]))
            print(lines[-1], flush=True)
    print("\nsummary (median of runs; ratio = crmflow / bare baseline in the same run):")
    for line in lines:
        print("  " + line)


if __name__ == "__main__":
    main()
