"""Structured logs: every log line of crmflow (standard `logging` loggers) rendered by structlog.

`configure(level=..., fmt=...)` is called once by the long-running commands (`crmflow serve`,
`worker`, `dispatch`): JSON lines (`fmt="json"`: one object a line, with `timestamp`, `level`,
`logger`, `event` and the line's own keys) for a log collector, or readable coloured lines in a
terminal (`fmt="console"`); the default is JSON unless stderr is a terminal. Settings:
CRMFLOW_LOG_LEVEL, CRMFLOW_LOG_FORMAT (docs/observability.md).

A line about a run carries `flow`, `version`, `enrollment`, `record` and `step`: the runner
marks the run it is working on (`in_run`, a context variable: one assignment per run, nothing
else), and every line logged meanwhile, in any module, gets the keys. A line may also give its
own keys with `extra={...}` (`run_keys(...)`); structlog's context variables
(`structlog.contextvars.bind_contextvars`) are merged as well.

This module sits below the engine in the layers: it imports structlog and the standard library
only.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping, MutableMapping, Sequence
from contextvars import ContextVar
from typing import Any, Literal

import structlog

from crmflow.engine.runtime import StepRunLog, StepStatus
from crmflow.engine.step_loop import Outcome

__all__ = [
    "FORMATS",
    "LEVELS",
    "RunKeys",
    "configure",
    "default_format",
    "in_run",
    "left_run",
    "log_failed_steps",
    "run_keys",
]

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
FORMATS = ("json", "console")
LogFormat = Literal["json", "console"]

# (flow key, flow version, enrollment id, record id, step key) of the run being worked on.
RunKeys = tuple[str, int, int, int, "str | None"]
_RUN: ContextVar[RunKeys | None] = ContextVar("crmflow_run", default=None)
_RUN_FIELDS = ("flow", "version", "enrollment", "record", "step")


def in_run(flow: str, version: int, enrollment: int, record: int, step: str | None) -> None:
    """The lines logged from now on in this thread (or task) are about this run, until
    `left_run()` (or the next `in_run`)."""
    _RUN.set((flow, version, enrollment, record, step))


def left_run() -> None:
    """The lines logged from now on are about no run."""
    _RUN.set(None)


def run_keys(
    flow: str, version: int, enrollment: int, record: int, step: str | None
) -> dict[str, Any]:
    """The keys of a run, for `log.warning(..., extra=run_keys(...))`."""
    return dict(zip(_RUN_FIELDS, (flow, version, enrollment, record, step), strict=True))


_runs_log = logging.getLogger("crmflow.runs")


def log_failed_steps(outcomes: Mapping[int, Outcome], step_logs: Sequence[StepRunLog]) -> None:
    """A warning for each failed step run of a batch as written (`step_logs`: an action failed,
    or its effect could not be carried out): its run's keys and the reason (the failed actions'
    details). The run goes on, as its flow says."""
    for step in step_logs:
        if step.status is not StepStatus.FAILED or step.enrollment_id not in outcomes:
            continue
        state = outcomes[step.enrollment_id].state
        failed = [a for a in step.actions if a.status == "failed"]
        reason = "; ".join(f"{a.key or a.type}: {a.detail}" for a in failed) or step.reason
        keys = run_keys(
            state.flow_key, state.flow_version, state.enrollment_id, state.record_id, step.step_key
        )
        _runs_log.warning(
            "step %s failed: %s",
            step.step_key,
            reason,
            extra={**keys, "reason": reason, "step_run": step.step_run},
        )


def _drop_colours(
    _logger: Any, _name: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """uvicorn gives each line a copy with terminal colour codes (`color_message`): not kept."""
    event.pop("color_message", None)
    return event


def _add_run(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    keys = _RUN.get()
    if keys is not None:
        for field, value in zip(_RUN_FIELDS, keys, strict=True):
            event.setdefault(field, value)
    return event


def default_format() -> LogFormat:
    """Readable lines when a person watches stderr, JSON lines otherwise (a service manager,
    a container, a file)."""
    return "console" if sys.stderr.isatty() else "json"


_HANDLER_NAME = "crmflow-structlog"


def configure(*, level: str = "INFO", fmt: str | None = None) -> None:
    """Render every log line of this process (the root logger: crmflow's, uvicorn's, ...) as
    `fmt` (json | console; None: `default_format()`), at `level` and above. Called again, it
    replaces its own handler (tests, a second command in one process)."""
    level = level.upper()
    if level not in LEVELS:
        raise ValueError(f"log level {level!r}: use one of {', '.join(LEVELS)}")
    chosen = fmt or default_format()
    if chosen not in FORMATS:
        raise ValueError(f"log format {chosen!r}: use json or console")
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.ExtraAdder(),
        _drop_colours,
        _add_run,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any
    if chosen == "json":
        renderer = structlog.processors.JSONRenderer()
        # The traceback as text, without the frames' local variables (they may hold secrets).
        final: list[Any] = [structlog.processors.format_exc_info, renderer]
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
        final = [renderer]
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *final],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # structlog's own loggers (structlog.get_logger()) go through the same handler.
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            _add_run,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
