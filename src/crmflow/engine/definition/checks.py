"""The meaning checks of a flow document whose shape is already valid.

The models check shapes; these rules check what only the context knows: the record type's fields
and their types, users, groups, saved queries, other flows, and the step graph. Every rule adds
to one list of problems, so a user sees everything wrong in a single pass.
"""

from __future__ import annotations

import base64
import itertools
import string
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from crmflow.engine.actions import registry
from crmflow.engine.calendars import calendar_problems
from crmflow.engine.conditions import RECORD_META_FIELDS, check_condition, did_you_mean
from crmflow.engine.definition import people, steps, timing, triggers
from crmflow.engine.definition.actions import Action
from crmflow.engine.definition.flow import FlowDefinition, Visibility
from crmflow.engine.recordtypes import FieldType, RecordType, normalise_value
from crmflow.engine.templates import check_template, is_template
from crmflow.errors import Problem

__all__ = ["CheckScope", "FlowChecker"]

DATE_TYPES = frozenset({FieldType.DATE, FieldType.DATETIME})


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


@dataclass(frozen=True)
class CheckScope:
    """What the checker may rely on (the validator's context, flattened)."""

    record_types: Mapping[str, RecordType]
    users: frozenset[str] | None = None
    groups: frozenset[str] | None = None
    queries: Mapping[str, str] | None = None
    flows: Mapping[str, str] | None = None
    allow_sql: bool = False
    # Parts replaced by placeholders because their shape was wrong: not checked again.
    skipped: frozenset[str] = frozenset()
    # Step keys present in the document but whose step could not be read.
    unreadable_step_keys: frozenset[str] = frozenset()


@dataclass
class FlowChecker:
    flow: FlowDefinition
    scope: CheckScope
    problems: list[Problem] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.record_type: RecordType | None = self.scope.record_types.get(self.flow.record_type)

    # -- reporting -------------------------------------------------------------------------

    def add(self, path: str, message: str, hint: str = "") -> None:
        self.problems.append(Problem(path, message, hint))

    @property
    def fields(self) -> list[str] | None:
        return None if self.record_type is None else self.record_type.field_keys

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
        elif isinstance(value, people.FieldResponsibility):
            self.check_field(f"{path}.field", value.field, {FieldType.USER})

    # -- actions -----------------------------------------------------------------------------

    def check_action(self, path: str, action: Action, step: steps.ActionStep) -> None:
        """Each kind checks its own actions (`crmflow.engine.actions.<type>`)."""
        registry.ACTION_KINDS.check(self, path, action, step)

    # -- values, text, conditions ---------------------------------------------------------------

    def check_values(
        self,
        path: str,
        values: Mapping[str, Any],
        target: RecordType | None,
        *,
        check_required: bool = False,
    ) -> None:
        for name, value in values.items():
            where = f"{path}.{name}"
            if target is not None and target.field(name) is None:
                self.add(
                    where,
                    f"the {target.key} record type has no field {name!r}",
                    did_you_mean(name, target.field_keys)
                    or f"known fields: {', '.join(target.field_keys)}",
                )
                continue
            self.check_value(where, value, None if target is None else target.field(name))
        if check_required and target is not None:
            for fdef in target.fields:
                if fdef.required and fdef.key not in values:
                    self.add(path, f"the {target.key} record needs a value for {fdef.key!r}")

    def check_value(self, path: str, value: Any, fdef: Any) -> None:
        if isinstance(value, dict):
            if set(value) != {"cel"} or not isinstance(value["cel"], str):
                self.add(path, 'a computed value is written {cel: "<expression>"}')
                return
            self.check_cel(f"{path}.cel", value["cel"])
            return
        if isinstance(value, str) and is_template(value):
            self.check_text(path, value)
            return
        if fdef is None or value is None:
            return
        try:
            normalise_value(fdef, value, zone=UTC)
        except ValueError as exc:
            self.add(path, str(exc), "or compute it with {cel: ...} or a {{ template }}")
            return
        if fdef.type is FieldType.USER and isinstance(value, str):
            self.check_user(path, value)

    def check_literal(self, path: str, field_key: str, value: Any) -> None:
        fdef = None if self.record_type is None else self.record_type.field(field_key)
        if fdef is not None and value is not None:
            try:
                normalise_value(fdef, value, zone=UTC)
            except ValueError as exc:
                self.add(path, str(exc))

    def check_text(self, path: str, text: str, extra: Iterable[str] = ()) -> None:
        if not is_template(text):
            return
        names = list(extra)
        for issue in check_template(text, record_fields=self.fields, extra_variables=names):
            self.add(path, issue.message, issue.hint)

    def check_cel(self, path: str, expression: str | None) -> None:
        if expression is None:
            return
        for issue in check_condition(expression, record_fields=self.fields):
            self.add(path, issue.message, issue.hint)

    # -- names the context knows --------------------------------------------------------------

    def check_field(self, path: str, name: str, kinds: Collection[FieldType] | None = None) -> Any:
        if self.record_type is None:
            return None
        fdef = self.record_type.field(name)
        if fdef is None:
            if kinds is not None and DATE_TYPES & set(kinds) and name in RECORD_META_FIELDS:
                return None
            self.add(
                path,
                f"the {self.record_type.key} record type has no field {name!r}",
                did_you_mean(name, self.record_type.field_keys)
                or f"known fields: {', '.join(self.record_type.field_keys)}",
            )
            return None
        if kinds is not None and fdef.type not in kinds:
            wanted = " or ".join(sorted(str(k) for k in kinds))
            fitting = [f.key for f in self.record_type.fields if f.type in kinds]
            self.add(
                path,
                f"field {name!r} is a {fdef.type} field; a {wanted} field is needed here",
                f"{wanted} fields: {', '.join(fitting)}" if fitting else "",
            )
            return None
        return fdef

    def check_default_field(self, path: str, name: str, kind: FieldType, option: str) -> None:
        if self.record_type is None:
            return
        fdef = self.record_type.field(name)
        if fdef is None or fdef.type is not kind:
            self.add(
                f"{path}.{option}",
                f"the {self.record_type.key} record type has no {kind} field {name!r} "
                f"to use by default",
                f"give {option} explicitly",
            )

    def check_status_field(self, path: str) -> Any:
        if self.record_type is None:
            return None
        fdef = self.record_type.field("status")
        if fdef is None:
            self.add(path, f"the {self.record_type.key} record type has no status field")
        return fdef

    def check_status_value(self, path: str, value: str) -> None:
        fdef = None if self.record_type is None else self.record_type.field("status")
        if fdef is None or fdef.type is not FieldType.CHOICE or is_template(value):
            return
        if value not in fdef.choices:
            self.add(
                path,
                f"{value!r} is not a status of {self.flow.record_type!r}",
                did_you_mean(value, fdef.choices) or f"statuses: {', '.join(fdef.choices)}",
            )

    def check_user(self, path: str, name: str | None) -> None:
        users = self.scope.users
        if name is None or users is None or name in users:
            return
        self.add(path, f"unknown user {name!r}", did_you_mean(name, users))

    def check_member(self, path: str, name: str) -> None:
        flow = self.flow
        if flow.visibility is not Visibility.PRIVATE:
            return
        if name not in flow.members and name != flow.owner:
            self.add(
                path,
                f"{name!r} is not a member of this private flow",
                "add them to members, or choose a member",
            )

    def check_group(self, path: str, name: str) -> None:
        groups = self.scope.groups
        if groups is None or name in groups:
            return
        self.add(path, f"unknown group {name!r}", did_you_mean(name, groups))

    def check_query(self, path: str, name: str) -> None:
        queries = self.scope.queries
        if queries is None:
            return
        if name not in queries:
            self.add(
                path,
                f"unknown saved query {name!r}",
                did_you_mean(name, queries) or "save the query first",
            )
        elif queries[name] != self.flow.record_type:
            self.add(
                path,
                f"saved query {name!r} selects {queries[name]!r} records, "
                f"but this flow runs on {self.flow.record_type!r}",
            )

    def check_flow_key(self, path: str, key: str, record_type: str | None) -> None:
        flows = self.scope.flows
        if flows is None:
            return
        if key not in flows and key != self.flow.key:
            self.add(path, f"unknown flow {key!r}", did_you_mean(key, flows))
            return
        actual = flows.get(key, self.flow.record_type)
        if record_type is not None and actual != record_type:
            self.add(
                path,
                f"flow {key!r} runs on {actual!r} records, not on {record_type!r}",
                "use record_field to start it on a related record",
            )

    def check_zone(self, path: str, name: str) -> None:
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            self.add(path, f"unknown time zone {name!r}", "use an IANA name such as Europe/Paris")


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
