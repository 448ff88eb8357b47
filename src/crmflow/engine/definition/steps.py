"""The steps of a flow: one model per step `type` (`action` when the type is left out)."""

from __future__ import annotations

from functools import cached_property
from typing import Annotated, Literal

from pydantic import Field, model_validator

from crmflow.engine.definition.actions import Action
from crmflow.engine.definition.common import Definition, Duration, Key
from crmflow.engine.definition.delivery_policy import FailureGoto, MessagingActionBase
from crmflow.engine.definition.people import Deadline, Responsibility
from crmflow.engine.definition.timing import Timing

__all__ = [
    "ActionStep",
    "ApprovalButton",
    "ApprovalStep",
    "Branch",
    "DecisionStep",
    "EndStep",
    "MergeStep",
    "SelfApprovalRule",
    "Step",
    "StepBase",
    "WaitStep",
]


class StepBase(Definition):
    """What every step has.

    Steps run by `order` (absent = position in the list). After a step the flow goes to `next`
    when given, else to the following step; a step whose `condition` is false, or that is not
    `active`, is skipped.
    """

    key: Key
    name: str = ""
    notes: str = ""
    active: bool = True
    order: int | None = Field(default=None, ge=0, le=1_000_000)
    timing: Timing | None = None
    condition: str | None = None
    responsibility: Responsibility | None = None
    deadline: Deadline | None = None
    next: str | None = None

    def targets(self) -> list[tuple[str, str]]:
        """(path relative to the step, step key) of every step this one may go to explicitly."""
        out: list[tuple[str, str]] = []
        if self.next is not None:
            out.append(("next", self.next))
        if self.timing is not None and self.timing.type == "event" and self.timing.on_timeout:
            out.append(("timing.on_timeout", self.timing.on_timeout))
        return out

    @property
    def falls_through(self) -> bool:
        """Whether the flow may continue to the following step when no explicit target applies."""
        return self.next is None


class ActionStep(StepBase):
    type: Literal["action"] = "action"
    actions: list[Action] = Field(default_factory=list)

    def targets(self) -> list[tuple[str, str]]:
        out = super().targets()
        for i, action in enumerate(self.actions):
            if isinstance(action, MessagingActionBase) and isinstance(
                action.on_failure, FailureGoto
            ):
                # A failure branch: taken when the action's message fails for good.
                out.append((f"actions[{i}].on_failure.goto", action.on_failure.goto))
        return out

    @cached_property
    def run_order(self) -> tuple[tuple[int, Action], ...]:
        """(index, action) in the order they run: by `order`, else their place in the list."""
        return tuple(
            sorted(
                enumerate(self.actions),
                key=lambda pair: (pair[1].order if pair[1].order is not None else pair[0], pair[0]),
            )
        )


class Branch(Definition):
    if_: str = Field(alias="if")
    goto: str


class DecisionStep(StepBase):
    """The first branch whose `if` holds is taken; else `else`, else the following step."""

    type: Literal["decision"]
    branches: list[Branch] = Field(min_length=1)
    else_: str | None = Field(default=None, alias="else")

    def targets(self) -> list[tuple[str, str]]:
        out = super().targets()
        out += [(f"branches[{i}].goto", b.goto) for i, b in enumerate(self.branches)]
        if self.else_ is not None:
            out.append(("else", self.else_))
        return out

    @property
    def falls_through(self) -> bool:
        return self.else_ is None and self.next is None


class WaitStep(StepBase):
    """Waits until `until` holds or one of `fields` changes; at `timeout`, goes to `on_timeout`."""

    type: Literal["wait"]
    until: str | None = None
    fields: list[str] = Field(default_factory=list)
    timeout: Duration
    on_timeout: str | None = None

    def targets(self) -> list[tuple[str, str]]:
        out = super().targets()
        if self.on_timeout is not None:
            out.append(("on_timeout", self.on_timeout))
        return out


class ApprovalButton(Definition):
    """A button such as Validate or Refuse; pressing it goes to `goto` (default: next step)."""

    key: Key
    label: str
    goto: str | None = None
    comment_required: bool = False


class SelfApprovalRule(Definition):
    """The user held in `field` (the requester) may not decide their own request."""

    field: str


Quorum = Literal["any", "all"] | Annotated[int, Field(ge=1, le=10_000)]


class ApprovalStep(StepBase):
    """The responsible person decides by pressing a button, in the app or from an email link.

    `quorum` (a group responsibility only): how many members must press the first button (its
    approval) for it to count: `any` one (the default), `all` the active members, or a number
    (at most all of them). Any other button pressed by one member decides at once (a veto)."""

    type: Literal["approval"]
    message: str = ""
    buttons: list[ApprovalButton] = Field(min_length=1)
    email_link: bool = False  # an email to the person asked, with a signed link per button
    quorum: Quorum = "any"
    forbid_self_approval: SelfApprovalRule | None = None

    @model_validator(mode="after")
    def _quorum_counts_a_group(self) -> ApprovalStep:
        if self.quorum == "any":
            return self
        who = self.responsibility
        if who is None or who.type != "group":
            raise ValueError(
                f"quorum {self.quorum!r} counts the members of a group: give the step "
                "`responsibility: {type: group, group: NAME}`, or remove `quorum`"
            )
        if who.mode == "round_robin":
            raise ValueError(
                f"quorum {self.quorum!r} counts the members of a group, but mode round_robin "
                "asks one member only: use mode any (the default) or all, or remove `quorum`"
            )
        return self

    def targets(self) -> list[tuple[str, str]]:
        out = super().targets()
        out += [
            (f"buttons[{i}].goto", b.goto) for i, b in enumerate(self.buttons) if b.goto is not None
        ]
        return out

    @property
    def falls_through(self) -> bool:
        return self.next is None and any(b.goto is None for b in self.buttons)


class MergeStep(StepBase):
    """Joins branches: the flow continues from here whichever branch led to it."""

    type: Literal["merge"]


class EndStep(StepBase):
    """Ends the flow for the record."""

    type: Literal["end"]

    @property
    def falls_through(self) -> bool:
        return False


Step = Annotated[
    ActionStep | DecisionStep | WaitStep | ApprovalStep | MergeStep | EndStep,
    Field(discriminator="type"),
]
