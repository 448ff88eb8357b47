"""How fast the command line starts: `crmflow --help` and `crmflow flows validate FILE` (one
file), each as a ratio to `python -c pass` (the interpreter's own start), in the same run.

    python -m bench.bench_cli_start --runs 20
    python -m bench.bench_cli_start --runs 20 --no-bytecode-cache

Each command runs as a child process, `runs` times, the three commands taking turns (so that
the load of a shared machine falls on all of them alike); the median wall time and the median
CPU time (user + system) of each are printed, and the wall time against the aim (0.5 s). The
children run in an empty temporary folder whose database does not exist: `flows validate`
checks against the built-in record types, as in a Git checkout, and must not create it.

Byte code: an installed crmflow has its modules compiled (.pyc), but a development environment
may set PYTHONDONTWRITEBYTECODE=1, and then every start compiles every module from source (two
to three times slower). The children therefore use a private byte-code cache in the temporary
folder, filled by one untimed run of each command, so the figures are those of an installed
crmflow; `--no-bytecode-cache` measures the environment as it is.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["AIM_SECONDS", "CliStart", "main", "run"]

AIM_SECONDS = 0.5
REPO = Path(__file__).resolve().parents[1]
CRMFLOW = str(Path(sys.executable).parent / "crmflow")
FLOW = REPO / "examples" / "donor-thank-you.yaml"


@dataclass
class Start:
    """The wall and CPU seconds of one command's starts."""

    command: str
    argv: list[str]
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    @property
    def median_wall(self) -> float:
        return statistics.median(self.wall)

    @property
    def median_cpu(self) -> float:
        return statistics.median(self.cpu)


@dataclass
class CliStart:
    baseline: Start
    commands: list[Start]
    bytecode_cache: bool

    def lines(self) -> list[str]:
        base = self.baseline
        cache = "byte-code cache" if self.bytecode_cache else "no byte-code cache"
        out = []
        for start in self.commands:
            verdict = "ok" if start.median_wall < AIM_SECONDS else "ABOVE AIM"
            out.append(
                f"cli start {start.command:<32} ratio={start.median_wall / base.median_wall:6.1f}x"
                f"  median wall={start.median_wall:.3f}s (aim < {AIM_SECONDS:g}s, {verdict})"
                f"  cpu={start.median_cpu:.3f}s"
                f"  baseline `python -c pass` wall={base.median_wall:.3f}s"
                f" cpu={base.median_cpu:.3f}s  runs={len(start.wall)}, {cache}"
            )
        return out


def _timed(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float]:
    """Wall and CPU seconds (the child's user + system time) of one run, which must succeed."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.perf_counter()
    done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, check=False)
    wall = time.perf_counter() - began
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.decode()}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def run(runs: int, *, bytecode_cache: bool = True) -> CliStart:
    baseline = Start("python -c pass", [sys.executable, "-c", "pass"])
    commands = [
        Start("crmflow --help", [CRMFLOW, "--help"]),
        Start(f"crmflow flows validate {FLOW.name}", [CRMFLOW, "flows", "validate", str(FLOW)]),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        env = {k: v for k, v in os.environ.items() if not k.startswith("CRMFLOW_")}
        env["CRMFLOW_DATABASE_URL"] = f"sqlite:///{folder / 'absent.db'}"
        if bytecode_cache:
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            env["PYTHONPYCACHEPREFIX"] = str(folder / "pycache")
        work = folder / "work"
        work.mkdir()
        for start in (baseline, *commands):
            _timed(start.argv, env, work)  # fills the byte-code cache; not counted
        for _ in range(runs):
            for start in (baseline, *commands):
                wall, cpu = _timed(start.argv, env, work)
                start.wall.append(wall)
                start.cpu.append(cpu)
        if (folder / "absent.db").exists() or any(work.iterdir()):
            raise RuntimeError("flows validate created a database")
    return CliStart(baseline, commands, bytecode_cache)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument(
        "--no-bytecode-cache",
        action="store_true",
        help="measure with the environment's byte-code settings as they are",
    )
    args = parser.parse_args(argv)
    for line in run(args.runs, bytecode_cache=not args.no_bytecode_cache).lines():
        print(line, flush=True)


if __name__ == "__main__":
    main()
