"""The meaning checks of a flow document whose shape is already valid.

The models check shapes; these rules check what only the context knows: the record type's fields
and their types, users, groups, saved queries, other flows, and the step graph. Every rule adds
to one list of problems, so a user sees everything wrong in a single pass.

The checks of one value or name against the context (fields, users, groups, queries, flows)
are `ContextChecks`, in `crmflow.engine.definition.context_checks`, which `FlowChecker` extends.
"""

from __future__ import annotations

import base64
import itertools
import string
from datetime import UTC, datetime

from crmflow.engine.actions import registry
from crmflow.engine.calendars import calendar_problems
from crmflow.engine.conditions import did_you_mean
from crmflow.engine.definition import people, steps, timing, triggers
from crmflow.engine.definition.actions import Action
from crmflow.engine.definition.context_checks import DATE_TYPES, CheckScope, ContextChecks
from crmflow.engine.definition.delivery_policy import FailureGoto, default_branch
from crmflow.engine.definition.flow import Visibility
from crmflow.engine.recordtypes import FieldType
from crmflow.engine.template_filters import locale_problem
from crmflow.engine.test_mode import recipient_problems
from crmflow.errors import Problem

__all__ = ["CheckScope", "FlowChecker"]


WHSEC_PREFIX = "whsec_"
_BASE64_ALPHABET = frozenset(string.ascii_letters + string.digits + "+/")
_NEW_SECRET = 'generate one with: echo "whsec_$(openssl rand -base64 32)"'


def whsec_problem(secret: str) -> str | None:
    """What is wrong with a `whsec_<base64>` webhook secret (Standard Webhooks), or None. The
    message never repeats the secret: problems are shown and logged."""
    encoded = secret.removeprefix(WHSEC_PREFIX)
    if not encoded:
        return "nothing follows 'whsec_': the secret is empty"
    data = encoded.rstrip("=")
    padding = len(encoded) - len(data)
    bad = next((c for c in data if c not in _BASE64_ALPHABET), None)
    if bad is not None:
        where = data.index(bad) + len(WHSEC_PREFIX) + 1
        what = "a space" if bad.isspace() else repr(bad)
        urlsafe = " (URL-safe base64 is not taken: use + and /)" if bad in "-_" else ""
        return (
            f"what follows 'whsec_' is not base64: character {where} is {what}, which base64 "
            f"does not use{urlsafe}"
        )
    if padding > 2:
        return f"what follows 'whsec_' is not base64: it ends in {padding} '=', at most 2"
    if len(data) % 4 == 1:
        return (
            f"what follows 'whsec_' is not base64: {len(data)} base64 characters cannot encode "
            "whole bytes (one is missing, or one too many)"
        )
    if not data or not base64.b64decode(data + "=" * (-len(data) % 4), validate=True):
        return "what follows 'whsec_' decodes to no bytes: the secret is empty"
    return None


class FlowChecker(ContextChecks):
    """Every meaning check of a flow document, in one pass: `run()` lists all its problems."""

    def run(self) -> list[Problem]:
        self.check_flow()
        for index, trigger in enumerate(self.flow.triggers):
            path = f"triggers[{index}]"
            if path not in self.scope.skipped:
                self.check_trigger(path, trigger)
        self.check_steps()
        return self.problems

    # -- the flow itself ---------------------------------------------------------------------

    def check_flow(self) -> None:
        flow = self.flow
        if self.record_type is None:
            self.add(
                "record_type",
                f"unknown record type {flow.record_type!r}",
                did_you_mean(flow.record_type, self.scope.record_types)
                or f"known types: {', '.join(sorted(self.scope.record_types))}",
            )
        self.check_user("owner", flow.owner)
        self.check_user("controller", flow.controller)
        if flow.controller is not None:
            self.check_member("controller", flow.controller)  # work falls back to them
        for index, member in enumerate(flow.members):
            self.check_user(f"members[{index}]", member)
        if flow.visibility is Visibility.PRIVATE and not flow.members:
            self.add(
                "members",
                "a private flow needs at least one member",
                "list the usernames who may see it under members, or make it public",
            )
        if flow.visibility is Visibility.PUBLIC and flow.members:
            self.add(
                "members",
                "members only apply to a private flow",
                "set visibility: private, or remove members",
            )
        if flow.timezone is not None:
            self.check_zone("timezone", flow.timezone)
        if flow.locale is not None and (problem := locale_problem(flow.locale)) is not None:
            self.add("locale", problem, "or leave locale out: en")
        if (
            flow.start_at is not None
            and flow.archive_at is not None
            and _utc(flow.archive_at) <= _utc(flow.start_at)
        ):
            self.add(
                "archive_at",
                "archive_at must be after start_at",
                f"start_at is {flow.start_at.isoformat()}",
            )
        if not flow.triggers and not any(p.startswith("triggers[") for p in self.scope.skipped):
            self.add(
                "triggers", "the flow has no trigger", "add `- type: manual` to start it by hand"
            )
        webhook_keys: set[str] = set()
        for index, trigger in enumerate(flow.triggers):
            if isinstance(trigger, triggers.WebhookTrigger):
                if trigger.key in webhook_keys:
                    self.add(f"triggers[{index}].key", f"webhook key {trigger.key!r} is used twice")
                webhook_keys.add(trigger.key)
        self.check_cel("entry_condition", flow.entry_condition)
        self.check_cel("goal", flow.goal)
        reentry = flow.reentry
        if reentry.mode == "once_per_days" and reentry.days is None:
            self.add("reentry.days", "once_per_days needs days", "e.g. days: 30")
        if reentry.mode != "once_per_days" and reentry.days is not None:
            self.add("reentry.days", "days only applies to mode once_per_days")
        self.problems.extend(recipient_problems(flow.test_recipients))
        default = flow.on_delivery_failure
        if isinstance(default, FailureGoto) and flow.step(default.goto) is None:
            known = [step.key for step in flow.steps]
            self.add(
                "on_delivery_failure.goto",
                f"there is no step {default.goto!r}",
                did_you_mean(default.goto, known) or f"steps: {', '.join(sorted(known))}",
            )
        calendar = flow.calendar
        if calendar is not None:
            # Unknown countries and subdivisions are caught at save time, not when a step runs.
            self.problems.extend(calendar_problems(calendar, "calendar"))
            if calendar.quiet_hours and calendar.quiet_hours.start == calendar.quiet_hours.end:
                self.add("calendar.quiet_hours", "quiet hours start and end at the same time")

    # -- triggers ----------------------------------------------------------------------------

    def check_trigger(self, path: str, trigger: triggers.Trigger) -> None:
        if isinstance(trigger, triggers.RecordUpdatedTrigger):
            for index, name in enumerate(trigger.fields):
                self.check_field(f"{path}.fields[{index}]", name)
        elif isinstance(trigger, triggers.FieldChangedTrigger):
            fdef = self.check_field(f"{path}.field", trigger.field)
            if fdef is not None:
                self.check_literal(f"{path}.from", fdef.key, trigger.from_)
                self.check_literal(f"{path}.to", fdef.key, trigger.to)
        elif isinstance(trigger, triggers.StatusChangedTrigger):
            self.check_status_field(path)
            for name, value in (("from", trigger.from_), ("to", trigger.to)):
                if value is not None:
                    self.check_status_value(f"{path}.{name}", value)
        elif isinstance(trigger, triggers.DateReachedTrigger):
            fdef = self.check_field(f"{path}.field", trigger.field, DATE_TYPES)
            if fdef is not None and trigger.ignore_year and fdef.type is not FieldType.DATE:
                self.add(f"{path}.ignore_year", "ignore_year applies to a date field only")
        elif isinstance(trigger, triggers.ScheduleTrigger | triggers.StartListTrigger):
            self.check_query(f"{path}.query", trigger.query)
        elif isinstance(trigger, triggers.WebhookTrigger) and trigger.secret is not None:
            self.check_webhook_secret(f"{path}.secret", trigger.secret)
        # follow_up.from_flows is not checked against existing flows: a follow-up and the flow
        # that starts it name each other, so one of them is always created before the other.
        # The start_flow action, which does the starting, is checked.

    def check_webhook_secret(self, path: str, secret: str) -> None:
        """A secret a sender can sign with: not blank, and a `whsec_` one holds base64 of some
        bytes (otherwise every call would be refused, and only then would anyone find out)."""
        if not secret.strip():
            self.add(
                path,
                "the secret is empty",
                f"give a secret the sender signs with ({_NEW_SECRET}), or remove `secret` to "
                "take calls with an API token instead",
            )
        elif secret.startswith(WHSEC_PREFIX):
            problem = whsec_problem(secret)
            if problem is not None:
                self.add(
                    path,
                    problem,
                    "a whsec_ secret is 'whsec_' followed by standard base64 (A-Z, a-z, 0-9, "
                    f"+ and /, '=' padding) of random bytes; {_NEW_SECRET}",
                )

    # -- steps -------------------------------------------------------------------------------

    def check_steps(self) -> None:
        seen: dict[str, int] = {}
        for index, step in enumerate(self.flow.steps):
            if f"steps[{index}]" in self.scope.skipped:
                continue
            if step.key in seen:
                self.add(
                    f"steps[{index}].key",
                    f"step key {step.key!r} is used twice (also steps[{seen[step.key]}])",
                    "give each step its own key",
                )
            else:
                seen[step.key] = index
        known = set(seen) | set(self.scope.unreadable_step_keys)
        for index, step in enumerate(self.flow.steps):
            path = f"steps[{index}]"
            if path in self.scope.skipped:
                continue
            for where, target in step.targets():
                if target not in known:
                    self.add(
                        f"{path}.{where}",
                        f"there is no step {target!r}",
                        did_you_mean(target, known) or f"steps: {', '.join(sorted(known))}",
                    )
            self.check_step(path, step)
        if not any(p.startswith("steps[") for p in self.scope.skipped):
            self.check_reachable()

    def check_reachable(self) -> None:
        ordered = self.flow.ordered_steps()
        if not ordered:
            return
        following = {a.key: b.key for a, b in itertools.pairwise(ordered)}
        reached: set[str] = set()
        pending = [ordered[0].key]
        while pending:
            key = pending.pop()
            if key in reached:
                continue
            reached.add(key)
            step = self.flow.step(key)
            if step is None:
                continue
            pending += [target for _, target in step.targets()]
            pending += default_branch(step, self.flow.on_delivery_failure)
            if step.falls_through and key in following:
                pending.append(following[key])
        for index, step in enumerate(self.flow.steps):
            if step.key not in reached:
                self.add(
                    f"steps[{index}]",
                    f"step {step.key!r} can never be reached from the first step "
                    f"{ordered[0].key!r}",
                    "point a next, branch, button or timeout at it, or remove it",
                )

    def check_escalation(self, path: str, escalation: people.Escalation, step: steps.Step) -> None:
        if escalation.to is not None:
            self.check_responsibility(f"{path}.to", escalation.to)
        if escalation.decide is None:
            return
        if not isinstance(step, steps.ApprovalStep):
            self.add(
                f"{path}.decide",
                f"only an approval step can be decided automatically; step {step.key!r} is "
                f"{step.type}",
                "use `to: USER` to hand the late step's task to someone else",
            )
        elif escalation.decide not in [b.key for b in step.buttons]:
            known = ", ".join(b.key for b in step.buttons)
            self.add(
                f"{path}.decide",
                f"step {step.key!r} has no button {escalation.decide!r}",
                f"name one of its buttons: {known}",
            )

    def check_step(self, path: str, step: steps.Step) -> None:
        if step.timing is not None:
            self.check_timing(f"{path}.timing", step.timing)
        self.check_cel(f"{path}.condition", step.condition)
        if step.responsibility is not None:
            self.check_responsibility(f"{path}.responsibility", step.responsibility)
        deadline = step.deadline
        if deadline is not None and deadline.notify_controller and self.flow.controller is None:
            self.add(
                f"{path}.deadline",
                "a late step emails the flow's controller, but the flow has none",
                "set controller: <username> on the flow, or notify_controller: false",
            )
        if deadline is not None and deadline.escalate is not None:
            self.check_escalation(f"{path}.deadline.escalate", deadline.escalate, step)
        if deadline is not None and not _gives_work(step):
            self.add(
                f"{path}.deadline",
                f"step {step.key!r} ({step.type}) gives nobody a task or a decision, so its "
                "deadline would chase nobody: deadlines are chased on the tasks a step gives "
                "(create_task) and on approval steps",
                "add a create_task action for the work to chase, make the step an approval, or "
                "remove the deadline (a wait step's limit is its timeout)",
            )
        if isinstance(step, steps.ActionStep):
            for index, action in enumerate(step.actions):
                where = f"{path}.actions[{index}]"
                if where not in self.scope.skipped:
                    self.check_action(where, action, step)
            keys = [a.key for a in step.actions if a.key is not None]
            for key in {k for k in keys if keys.count(k) > 1}:
                self.add(f"{path}.actions", f"action key {key!r} is used twice in this step")
        elif isinstance(step, steps.DecisionStep):
            for index, branch in enumerate(step.branches):
                self.check_cel(f"{path}.branches[{index}].if", branch.if_)
        elif isinstance(step, steps.WaitStep):
            if step.until is None and not step.fields:
                self.add(path, "a wait step needs `until` (a condition) or `fields` to watch")
            self.check_cel(f"{path}.until", step.until)
            for index, name in enumerate(step.fields):
                self.check_field(f"{path}.fields[{index}]", name)
        elif isinstance(step, steps.ApprovalStep):
            if step.responsibility is None:
                self.add(
                    f"{path}.responsibility",
                    "an approval step needs someone to decide",
                    "e.g. responsibility: {type: field, field: manager}",
                )
            self.check_text(f"{path}.message", step.message)
            if step.forbid_self_approval is not None:
                where = f"{path}.forbid_self_approval.field"
                self.check_field(where, step.forbid_self_approval.field, {FieldType.USER})
            keys = [b.key for b in step.buttons]
            for index, key in enumerate(keys):
                if key in keys[:index]:
                    self.add(f"{path}.buttons[{index}].key", f"button key {key!r} is used twice")
        elif isinstance(step, steps.EndStep) and step.next is not None:
            self.add(f"{path}.next", "an end step ends the flow: it has no next step")

    def check_timing(self, path: str, value: timing.Timing) -> None:
        if isinstance(value, timing.AfterTiming):
            if value.business_days and value.unit != "days":
                self.add(f"{path}.business_days", "business_days applies to a delay in days")
        elif isinstance(value, timing.AtTimeTiming):
            if value.zone_field is not None:
                self.check_field(
                    f"{path}.zone_field", value.zone_field, {FieldType.TEXT, FieldType.CHOICE}
                )
        elif isinstance(value, timing.DateTiming):
            self.check_field(f"{path}.field", value.field, DATE_TYPES)
        elif isinstance(value, timing.EventTiming):
            if value.condition is None and not value.fields:
                self.add(path, "an event timing needs a `condition` or `fields` to watch")
            self.check_cel(f"{path}.condition", value.condition)
            for index, name in enumerate(value.fields):
                self.check_field(f"{path}.fields[{index}]", name)

    def check_responsibility(self, path: str, value: people.Responsibility) -> None:
        if isinstance(value, people.FlowOwnerResponsibility) and self.flow.owner is None:
            self.add(path, "the flow has no owner", "set owner: <username> on the flow")
        elif isinstance(value, people.UserResponsibility):
            self.check_user(f"{path}.user", value.user)
            self.check_member(f"{path}.user", value.user)
        elif isinstance(value, people.GroupResponsibility):
            self.check_group(f"{path}.group", value.group)
            self.check_group_members(f"{path}.group", value.group)
        elif isinstance(value, people.FieldResponsibility | people.ManagerOfResponsibility):
            self.check_user_field(f"{path}.field", value.field)

    # -- actions -----------------------------------------------------------------------------

    def check_action(self, path: str, action: Action, step: steps.ActionStep) -> None:
        """Each kind checks its own actions (`crmflow.engine.actions.<type>`)."""
        registry.ACTION_KINDS.check(self, path, action, step)


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _gives_work(step: steps.Step) -> bool:
    """Whether `step` gives people work that a deadline can chase: an approval's decision, or
    the tasks of its create_task actions (docs/people.md, "Deadlines")."""
    if isinstance(step, steps.ApprovalStep):
        return True
    return isinstance(step, steps.ActionStep) and any(
        action.type == "create_task" for action in step.actions
    )
