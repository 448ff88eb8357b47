"""The action kinds, in one tuple: the validator checks an action and the step runs it through
the kind registered for its model.

Adding a kind is a module `crmflow.engine.actions.<type>` (its model, checks and runner) that
builds its `KIND`, one line in `KINDS` below, and its model in the `Action` union of
`crmflow.engine.definition.actions` (see README.md, "Adding an action kind"). What becomes of
its commands is the service side's registry (`crmflow.services.effects.registry`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from crmflow.engine.actions import (
    add_to_group,
    assign_owner,
    create_record,
    create_task,
    end_flow,
    history,
    notify,
    remove_from_group,
    run_sql,
    send_email,
    send_sms,
    set_status,
    start_flow,
    update_record,
    webhook,
)
from crmflow.engine.actions.kind import ActionChecker, ActionKind
from crmflow.engine.definition.action_base import ActionBase

if TYPE_CHECKING:
    from crmflow.engine.actions.base import ActionContext, ActionResult
    from crmflow.engine.definition import Action, ActionStep

__all__ = ["ACTION_KINDS", "KINDS", "ActionRegistry", "run_action"]

# In the order of the flow document's `Action` union.
KINDS: tuple[ActionKind, ...] = (
    update_record.KIND,
    set_status.KIND,
    create_task.KIND,
    notify.KIND,
    send_email.KIND,
    send_sms.KIND,
    webhook.KIND,
    create_record.KIND,
    add_to_group.KIND,
    remove_from_group.KIND,
    assign_owner.KIND,
    start_flow.KIND,
    history.KIND,
    end_flow.KIND,
    run_sql.KIND,
)


class ActionRegistry:
    """Kinds found by the model of an action (a dictionary lookup per action run)."""

    def __init__(self, kinds: Iterable[ActionKind]) -> None:
        self.kinds = tuple(kinds)
        self._by_model: dict[type[ActionBase], ActionKind] = {}
        types: set[str] = set()
        for kind in self.kinds:
            if kind.model in self._by_model or kind.type in types:
                raise ValueError(f"the action type {kind.type!r} is registered twice")
            self._by_model[kind.model] = kind
            types.add(kind.type)

    def kind_of(self, action: ActionBase) -> ActionKind:
        try:
            return self._by_model[type(action)]
        except KeyError:
            raise LookupError(f"no action kind is registered for {type(action).__name__}") from None

    def check(
        self, checker: ActionChecker, path: str, action: ActionBase, step: ActionStep
    ) -> None:
        """Add the problems of `action` (at `path`, in `step`) to `checker`."""
        self.kind_of(action).check(checker, path, action, step)

    def run(self, action: ActionBase, index: int, ctx: ActionContext) -> ActionResult:
        """The commands of `action`; raises EvaluationError when it cannot be carried out."""
        kind = self._by_model.get(type(action))  # `kind_of` inlined: once per action run
        if kind is None:
            kind = self.kind_of(action)  # raises LookupError, saying which
        return kind.run(action, index, ctx)


ACTION_KINDS = ActionRegistry(KINDS)


def run_action(action: Action, index: int, ctx: ActionContext) -> ActionResult:
    """The commands of one action; raises EvaluationError when it cannot be carried out."""
    return ACTION_KINDS.run(action, index, ctx)
