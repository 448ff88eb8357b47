"""What the appliers of one batch share, and what an applier is.

An applier carries out the commands of one command family (`commands`: the command types it
takes) for the whole batch at once, on the batch's transaction. It is called once per batch,
in `registry.APPLIERS`' order, with its commands in the order the engine gave them (none, when
the batch had none: some appliers still have work then, such as writing the outbox rows other
appliers made). A command that cannot be carried out is failed with a reason (`EffectBatch.fail`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, Protocol, TypeVar

from crmflow.engine.commands import CommandBase
from crmflow.services.context import Actor, Context
from crmflow.store.database import Connection
from crmflow.store.records import KnownRecords

__all__ = ["ActionRef", "Applied", "Applier", "Applies", "EffectBatch"]

# (enrollment id, step run, action index): where a failure goes in the step-run log.
ActionRef = tuple[int, int, int | None]

CommandT = TypeVar("CommandT", bound=CommandBase)


@dataclass
class Applied:
    """What applying a batch's commands produced: failures to put in the action logs."""

    failures: dict[ActionRef, str] = field(default_factory=dict)

    def fail(self, command: CommandBase, reason: str) -> None:
        self.failures[(command.enrollment_id, command.step_run, command.action_index)] = reason


@dataclass
class EffectBatch:
    """One batch's commands being carried out: the transaction, who acts, where each
    enrollment's record and flow are, the batch's `now`, and what the appliers produce."""

    conn: Connection
    ctx: Context
    actor: Actor
    record_of: dict[int, int]  # enrollment id -> record id
    flow_of: dict[int, str]  # enrollment id -> flow key
    now: datetime
    # The batch's records and record types as stored now, when the caller knows them
    # (`apply_commands`).
    known: KnownRecords | None = None
    applied: Applied = field(default_factory=Applied)
    # Outbox rows made by other appliers (a create_record's .ics invitation): the outbox applier
    # writes them with the outbox messages, in one statement.
    outbox_rows: list[dict[str, Any]] = field(default_factory=list)

    def record_id(self, command: CommandBase) -> int:
        """The record the command's enrollment runs on."""
        return self.record_of[command.enrollment_id]

    def fail(self, command: CommandBase, reason: str) -> None:
        self.applied.fail(command, reason)


class Applier(Protocol):
    """Carries out the commands of some command types, set-based, for a whole batch."""

    @property
    def commands(self) -> tuple[type[CommandBase], ...]:
        """The command types it carries out (each type has one applier)."""
        ...

    def apply(self, batch: EffectBatch, commands: Sequence[CommandBase]) -> None:
        """Carry out `commands` (all of one of `self.commands`' types), failing those that
        cannot be."""
        ...


@dataclass(frozen=True)
class Applies(Generic[CommandT]):
    """An `Applier` made of the command types and the typed function that carries them out."""

    commands: tuple[type[CommandT], ...]
    function: Callable[[EffectBatch, Sequence[CommandT]], None]

    def apply(self, batch: EffectBatch, commands: Sequence[CommandBase]) -> None:
        self.function(batch, [self._own(c) for c in commands])

    def _own(self, command: CommandBase) -> CommandT:
        if not isinstance(command, self.commands):
            raise TypeError(f"{self.function.__qualname__} was given a {type(command).__name__}")
        return command
