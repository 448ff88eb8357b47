"""Test your flows: a frozen clock, and a harness that runs one flow on a temporary SQLite database.

The harness runs the real thing (the migrations, the services, the triggers and the worker's
batches), only the clock is yours: it moves when you say, and every step due on the way runs at
its own time, so 90 days take a fraction of a second. Each call that changes something (start,
create or update a record, a decision) runs the work it makes due, as a running worker would::

    from datetime import UTC, datetime, timedelta
    from pathlib import Path

    from crmflow.testing import FlowHarness

    def test_thank_you() -> None:
        start = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
        with FlowHarness(Path("flows/thank-you.yaml"), now=start) as h:
            h.start()
            claire = h.create_record({"last_name": "Martin", "email": "claire@example.org"})
            assert [m.subject for m in h.messages(claire)] == ["Thank you"]
            h.advance(timedelta(days=90))
            assert h.run(claire).status == "finished"

A document given as `str` is the document's text; give a `pathlib.Path` to read a file (its
name then appears in the problems a bad document raises, with line numbers).

The times are the clock's, never the machine's: a test that does not set `now` would pass or
fail depending on the day (quiet hours, business days, "today - 90 days"), so `now` is required.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from crmflow.engine.lifecycle import LifecycleAction
from crmflow.engine.source import parse_source
from crmflow.errors import NotFoundError
from crmflow.services import enrollments, flows, records, run_views
from crmflow.services import queries as query_service
from crmflow.services import record_types as record_type_service
from crmflow.services import templates as template_service
from crmflow.services import users as user_service
from crmflow.services.context import Actor, Context
from crmflow.services.lifecycle import fire_lifecycle_schedule
from crmflow.services.setup import upgrade_database
from crmflow.settings import Settings
from crmflow.store import enrollments as enrollment_store
from crmflow.store.outbox import flow_messages
from crmflow.worker import next_trigger_at, run_once

__all__ = ["FlowHarness", "FrozenClock", "Message", "Run", "StepRun"]

Document = str | Path | Mapping[str, Any]
# advance() moves from one due time to the next; a flow due again at every instant it runs
# would never let the clock reach its target, so the walk stops there and says so.
_MAX_WAKEUPS = 100_000


class FrozenClock:
    """A clock that moves only when told: `Context.clock` for tests (call it for the time).

    `now` must be aware (a naive time has no place in crmflow: every stored time is UTC)."""

    def __init__(self, now: datetime) -> None:
        self.current = _aware(now)

    def __call__(self) -> datetime:
        return self.current

    def set(self, now: datetime) -> None:
        """Jump to `now` (backwards too: a test may replay a moment)."""
        self.current = _aware(now)

    def advance(self, delta: timedelta | None = None, /, **parts: float) -> datetime:
        """Move on by `delta` or by `timedelta(**parts)` (`advance(days=2)`); the new time."""
        self.current += delta if delta is not None else timedelta(**parts)
        return self.current


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError(f"{value!r} has no time zone: give e.g. datetime(..., tzinfo=UTC)")
    return value


@dataclass(frozen=True)
class StepRun:
    """One run of a step for a record: what it did (each action's words) or why not."""

    step: str
    status: str  # done | skipped | waiting | failed | ended
    reason: str
    actions: tuple[str, ...]  # "email to claire@example.org: Merci Claire !"
    started_at: datetime


@dataclass(frozen=True)
class Run:
    """A record's run through a flow, as `crmflow runs` shows it."""

    id: int
    flow: str
    status: str  # active | waiting | finished | left | cancelled
    step: str | None  # the step it is at (or ended at)
    waiting_for: str  # what that step waits for, in words
    buttons: tuple[str, ...]  # an approval's buttons, while it waits for a decision
    end_reason: str
    history: tuple[StepRun, ...]  # its step runs, oldest first

    @property
    def steps_done(self) -> list[str]:
        """The steps that ran to completion, in order (a step run twice is listed twice)."""
        return [r.step for r in self.history if r.status == "done"]


@dataclass(frozen=True)
class Message:
    """An email, SMS or webhook call a flow wrote to the outbox (the dispatcher sends it)."""

    flow: str
    step: str
    record_id: int
    kind: str  # email | sms | webhook
    status: str  # pending until delivered: sent | failed | cancelled
    not_before: datetime  # when it may leave (after quiet hours)
    payload: Mapping[str, Any]  # the rendered message: to, subject, body, ...

    @property
    def subject(self) -> str | None:
        """An email's subject (None for an SMS or a webhook call)."""
        found = self.payload.get("subject")
        return None if found is None else str(found)

    @property
    def to(self) -> tuple[str, ...]:
        """The recipients (one for an SMS, none for a webhook)."""
        found = self.payload.get("to")
        if found is None:
            return ()
        return (found,) if isinstance(found, str) else tuple(str(to) for to in found)


class FlowHarness:
    """One flow on a fresh, migrated SQLite database in a temporary folder, with a frozen clock.

    `record_types`, `queries` and the email `templates` its send_email actions name are
    documents (as for `crmflow types load` / `queries load` / `templates load`) created before
    the flow; `users` are created first (`{"maria": "manager"}`, or names, who
    are members), so the flow may name them. Everything is done as the `system` admin unless a
    method takes a user. Use it as a context manager, or call `close()`.
    """

    def __init__(
        self,
        flow: str | Path,
        *,
        now: datetime,
        record_types: Iterable[Document] = (),
        queries: Iterable[Document] = (),
        users: Mapping[str, str] | Iterable[str] = (),
        timezone: str = "UTC",
        templates: Iterable[Document] = (),
    ) -> None:
        self.clock = FrozenClock(now)
        self._folder = tempfile.TemporaryDirectory(prefix="crmflow-test-")
        database = Path(self._folder.name) / "crmflow.db"
        settings = Settings(_env_file=None, database_url=f"sqlite:///{database}", timezone=timezone)
        self.ctx = Context.from_settings(settings)
        self.ctx.clock = self.clock
        try:
            upgrade_database(self.ctx)
            self.system: Actor = user_service.ensure_system_user(self.ctx)
            self._create_users(users)
            for document in record_types:
                self._load_record_type(document)
            for document in queries:
                self._load_query(document)
            for document in templates:
                self._load_template(document)
            text, source = _text_of(flow)
            view = flows.create_flow(self.ctx, self.system, text, source=source)
        except BaseException:
            self.close()
            raise
        self.flow_key = view.key
        self.record_type = view.record_type

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the database and remove the temporary folder."""
        self.ctx.engine.dispose()
        self._folder.cleanup()

    # --- doing ------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the flow, confirming its start lists' count (what an admin confirms), and run
        what became due."""
        count = flows.start_list_count(self.ctx, self.system, self.flow_key)
        flows.change_status(
            self.ctx, self.system, self.flow_key, LifecycleAction.START, confirm_count=count
        )
        self.run_due()

    def create_record(
        self,
        values: Mapping[str, Any],
        *,
        record_type: str | None = None,
        owner: str | None = None,
    ) -> int:
        """A new record (of the flow's record type by default); its id. Triggers fire."""
        record = records.create_record(
            self.ctx, self.system, record_type or self.record_type, values, owner=owner
        )
        self.run_due()
        return record.id

    def update_record(self, record_id: int, values: Mapping[str, Any]) -> None:
        """Change fields of a record (None clears one), as a user would. Triggers fire."""
        records.update_record(self.ctx, self.system, record_id, values)
        self.run_due()

    def start_record(self, record_id: int, *, test: bool = False) -> Run:
        """Start the flow for one record by hand (a manual trigger); the run. With `test`, in
        test mode: its messages go to the flow's test_recipients (docs/flows.md, "Test mode")."""
        enrollments.start_record(self.ctx, self.system, self.flow_key, record_id, test=test)
        self.run_due()
        return self.run(record_id)

    def decide(self, record_id: int, button: str, *, by: str = "system", comment: str = "") -> Run:
        """Press `button` of the approval the record waits at in this flow, as user `by`."""
        waiting = self.run(record_id)
        if waiting.step is None or not waiting.buttons:
            raise NotFoundError(
                f"record {record_id} waits for no decision in {self.flow_key!r} "
                f"(it is {waiting.status} at {waiting.step!r})"
            )
        actor = user_service.actor_by_username(self.ctx, by)
        enrollments.decide(self.ctx, actor, waiting.id, waiting.step, button, comment or None)
        self.run_due()
        return self.run(record_id)

    # --- time -------------------------------------------------------------------------------

    def run_due(self) -> int:
        """Run everything due now (triggers, then batches, until none is left), as the worker
        does; how many runs moved."""
        return run_once(self.ctx, now=self.clock())

    def advance(self, delta: timedelta | None = None, /, **parts: float) -> None:
        """Move the clock on by `delta` (or `days=`, `hours=`, ...), stopping at each moment
        something falls due on the way and running it then: a step due in 2 days runs on that
        day, and what it makes due afterwards too, as a worker that never slept would."""
        target = self.clock() + (delta if delta is not None else timedelta(**parts))
        self.run_due()
        for _ in range(_MAX_WAKEUPS):
            wakeup = self._next_wakeup()
            if wakeup is None or wakeup > target:
                break
            self.clock.set(wakeup)
            self.run_due()
        else:
            raise RuntimeError(
                f"the flow fell due {_MAX_WAKEUPS:,} times before {target.isoformat()}: "
                "does a step keep itself due?"
            )
        self.clock.set(target)
        self.run_due()

    def _next_wakeup(self) -> datetime | None:
        """The next moment after now that something is due: a run, a timed trigger (schedule,
        date reached) or a flow's start_at / archive_at; what is due now has just run."""
        now = self.clock()
        times = [
            enrollment_store.next_due(self.ctx.engine),
            next_trigger_at(self.ctx.engine),
            fire_lifecycle_schedule(self.ctx, now=now).next_at,
        ]
        later = [t for t in times if t is not None and t > now]
        return min(later) if later else None

    # --- what a test checks -----------------------------------------------------------------

    def runs(self, record_id: int) -> list[Run]:
        """Every run of the record, in every flow, oldest first."""
        status = run_views.record_status(self.ctx, self.system, record_id)
        return [_run(view) for view in status.enrollments]

    def run(self, record_id: int) -> Run:
        """The record's latest run of this flow (NotFoundError when it never entered)."""
        mine = [r for r in self.runs(record_id) if r.flow == self.flow_key]
        if not mine:
            raise NotFoundError(f"record {record_id} never entered {self.flow_key!r}")
        return mine[-1]

    def history(self, record_id: int) -> list[str]:
        """The history written on the record, oldest first (the `history` action's messages)."""
        status = run_views.record_status(self.ctx, self.system, record_id)
        return [str(entry["message"]) for entry in status.history]

    def record(self, record_id: int) -> dict[str, Any]:
        """The record's field values now (in stored form: dates as text, users as ids)."""
        return dict(records.get_record(self.ctx, record_id).data)

    def messages(self, record_id: int | None = None) -> list[Message]:
        """The messages the flows wrote (for one record, or all), oldest first."""
        # No service lists outbox rows yet (the dispatcher of a later issue will own them), so
        # the harness reads them from the store; it is a test helper, not a use-case.
        with self.ctx.engine.connect() as conn:
            return [
                Message(
                    flow=row.flow_key,
                    step=row.step_key,
                    record_id=row.record_id,
                    kind=row.kind,
                    status=row.status,
                    not_before=row.not_before,
                    payload=row.payload,
                )
                for row in flow_messages(conn, record_id)
            ]

    # --- setting up -------------------------------------------------------------------------

    def _create_users(self, wanted: Mapping[str, str] | Iterable[str]) -> None:
        roles = wanted if isinstance(wanted, Mapping) else dict.fromkeys(wanted, "member")
        for username, role in roles.items():
            user_service.create_user(
                self.ctx,
                self.system,
                username=username,
                role=role,
                email=f"{username}@example.org",
            )

    def _load_record_type(self, document: Document) -> None:
        if isinstance(document, Path):
            record_type_service.load_record_type_file(self.ctx, self.system, document)
        else:
            record_type_service.create_record_type(self.ctx, self.system, _data_of(document))

    def _load_template(self, document: Document) -> None:
        if isinstance(document, Path):
            template_service.load_template_file(self.ctx, self.system, document)
            return
        data = _data_of(document)
        template_service.save_template(self.ctx, self.system, str(data.get("name")), data)

    def _load_query(self, document: Document) -> None:
        if isinstance(document, Path):
            query_service.load_query_file(self.ctx, self.system, document)
            return
        data = dict(_data_of(document))
        query_service.save_query(
            self.ctx,
            self.system,
            name=str(data["name"]),
            record_type=str(data["record_type"]),
            filter=data.get("filter") or {},
            description=str(data.get("description") or ""),
        )


def _text_of(document: str | Path) -> tuple[str, str]:
    """A document's text and the name its problems carry."""
    if isinstance(document, Path):
        return document.read_text(encoding="utf-8"), str(document)
    return document, "<flow>"


def _data_of(document: str | Mapping[str, Any]) -> Mapping[str, Any]:
    if isinstance(document, Mapping):
        return document
    data = parse_source(document, source="<document>").data
    if not isinstance(data, Mapping):
        raise ValueError("expected a YAML or JSON mapping")
    return data


def _run(view: run_views.EnrollmentView) -> Run:
    return Run(
        id=view.id,
        flow=view.flow,
        status=view.status,
        step=view.step,
        waiting_for=view.waiting_for,
        buttons=tuple(view.buttons),
        end_reason=view.end_reason,
        history=tuple(
            StepRun(
                step=r.step,
                status=r.status,
                reason=r.reason,
                actions=tuple(str(a.get("detail", "")) for a in r.actions),
                started_at=r.started_at,
            )
            for r in view.step_runs
        ),
    )
