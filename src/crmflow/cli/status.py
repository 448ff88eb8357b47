"""`crmflow status`: one screen of how crmflow is doing, read from the database (the same
figures as /metrics' gauges: docs/observability.md)."""

from __future__ import annotations

from datetime import UTC
from typing import TYPE_CHECKING, Annotated

import typer

from crmflow.cli.common import console, print_json, reports_errors, state

if TYPE_CHECKING:
    from crmflow.services.observability import Figures


def _duration(seconds: float) -> str:
    """3 s, 4 min 10 s, 2 h 5 min, 3 d 4 h."""
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60} s"
    if whole < 86400:
        return f"{whole // 3600} h {whole % 3600 // 60} min"
    return f"{whole // 86400} d {whole % 86400 // 3600} h"


def _count(n: int, capped: bool) -> str:
    return f"at least {n:,}" if capped else f"{n:,}"


def _lines(f: Figures) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    if f.due:
        late = f"the oldest {_duration(f.oldest_due_seconds)} past its due time"
        rows.append(("backlog", f"{_count(f.due, f.due_capped)} run(s) due now; {late}"))
    else:
        rows.append(("backlog", "nothing due: every run is on time"))
    if f.feed_unread:
        rows.append(
            (
                "change feed",
                f"{f.feed_unread:,} record change(s) not read yet, the oldest "
                f"{_duration(f.feed_lag_seconds)} old",
            )
        )
    else:
        rows.append(("change feed", "every record change read"))
    channels: dict[str, dict[str, tuple[int, bool]]] = {}
    for (channel, st), counted in sorted(f.outbox.items()):
        channels.setdefault(channel, {})[st] = counted
    busy = {c: states for c, states in channels.items() if any(n for n, _ in states.values())}
    if not busy:
        rows.append(("outbox", "no message waiting or failed"))
    for channel, states in busy.items():
        said = ", ".join(f"{_count(*states[s])} {s}" for s in states if states[s][0])
        rows.append((f"outbox {channel}", f"{said} (waiting or failed)"))
    stuck = [loop for loop in f.loops if loop["state"] in ("stuck", "dead")]
    failures = [
        f"{_count(f.failed_step_runs, f.failed_step_runs_capped)} step run(s) failed in the "
        "last hour",
        f"{f.failing_triggers} trigger(s) failing",
        f"{len(stuck)} loop(s) stuck or dead",
    ]
    rows.append(("failures", "; ".join(failures)))
    for kind, missing in (
        ("worker", "flows do not move: start `crmflow worker` (or `crmflow serve`)"),
        ("dispatcher", "messages are not sent: start `crmflow dispatch` or a worker"),
    ):
        seen = f.seen(kind)
        alive = sum(1 for loop in seen if loop["state"] == "alive")
        text = f"{len(seen)} seen in the last minute ({alive} alive)" if seen else f"0 — {missing}"
        rows.append((f"{kind}s", text))
    for loop in stuck:
        rows.append((f"  {loop['kind']} {loop['name']}", f"{loop['state']}: {loop['reason']}"))
    return rows


@reports_errors
def status(
    as_json: Annotated[
        bool, typer.Option("--json", metavar="", help="Print the figures as JSON.")
    ] = False,
) -> None:
    """How crmflow is doing, on one screen: the runs due and how late the oldest is, the
    change feed's lag, the outbox's waiting and failed messages, the failures of the last hour,
    and the workers and dispatchers seen in the last minute. Exits 1 when the database does not
    answer."""
    from crmflow.services.observability import read_figures

    figures = read_figures(state.context)
    if as_json:
        print_json(figures.as_dict())
    else:
        console.print(
            f"crmflow status at {figures.at.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC "
            f"({state.database_label})",
            highlight=False,
            markup=False,
        )
        if not figures.database_ok:
            console.print(f"  the database does not answer: {figures.database_error}", markup=False)
        else:
            width = max(len(label) for label, _ in _lines(figures))
            for label, text in _lines(figures):
                console.print(f"  {label:<{width}}  {text}", highlight=False, markup=False)
    if not figures.database_ok:
        raise typer.Exit(1)
