"""The checks of one value or name against what the validator's context knows.

A flow's record type (its fields, their types, its statuses), the users, groups, saved queries
and other flows: `ContextChecks` checks a value, a template, a condition or a name against them
and adds what is wrong to the one list of problems. The walk over the flow document
(`crmflow.engine.definition.checks.FlowChecker`) and each action kind's checks
(`crmflow.engine.actions.kind.ActionChecker`) share these.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from crmflow.engine.conditions import RECORD_META_FIELDS, check_condition, did_you_mean
from crmflow.engine.definition.flow import FlowDefinition, Visibility
from crmflow.engine.recordtypes import FieldType, RecordType, normalise_value
from crmflow.engine.template_empties import empty_field_warning, fields_shown_empty
from crmflow.engine.templates import check_template, is_template
from crmflow.errors import Problem

__all__ = ["DATE_TYPES", "CheckScope", "ContextChecks", "TemplateCheck", "TemplateFindings"]

DATE_TYPES = frozenset({FieldType.DATE, FieldType.DATETIME})


# One finding inside a stored template: (its path there, message, hint).
TemplateProblems = list[tuple[str, str, str]]


@dataclass(frozen=True)
class TemplateFindings:
    """What is wrong with a stored template (problems) and what may go unnoticed (warnings)."""

    problems: TemplateProblems = field(default_factory=list)
    warnings: TemplateProblems = field(default_factory=list)


@dataclass(frozen=True)
class TemplateCheck:
    """The stored email templates a send_email may name: their `names`, and `check`: (template
    name, the flow's record type, the action's variable names) -> its findings, or None when no
    template has that name. Given by the services (the database) or `flows validate
    --templates DIR` (files)."""

    names: frozenset[str]
    check: Callable[[str, RecordType | None, Collection[str]], TemplateFindings | None]

    def unknown(self, name: str) -> tuple[str, str]:
        """The message and hint for a template `name` that is not among them."""
        load = "load it with `crmflow templates load FILE`"
        suggestion = did_you_mean(name, self.names)
        if suggestion:
            hint = f"{suggestion} Or {load}"
        elif self.names:
            hint = f"known templates: {', '.join(sorted(self.names))}; or {load}"
        else:
            hint = f"none is loaded yet: {load}"
        return f"no email template {name!r}", hint


@dataclass(frozen=True)
class CheckScope:
    """What the checker may rely on (the validator's context, flattened)."""

    record_types: Mapping[str, RecordType]
    users: frozenset[str] | None = None
    groups: frozenset[str] | None = None
    group_members: Mapping[str, frozenset[str]] | None = None
    queries: Mapping[str, str] | None = None
    flows: Mapping[str, str] | None = None
    allow_sql: bool = False
    email_templates: TemplateCheck | None = None
    # Parts replaced by placeholders because their shape was wrong: not checked again.
    skipped: frozenset[str] = frozenset()
    # Step keys present in the document but whose step could not be read.
    unreadable_step_keys: frozenset[str] = frozenset()


@dataclass
class ContextChecks:
    """The flow being checked, what the context knows, and the problems found so far."""

    flow: FlowDefinition
    scope: CheckScope
    problems: list[Problem] = field(default_factory=list)
    # What does not make the flow invalid but may surprise (a field shown empty).
    warnings: list[Problem] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.record_type: RecordType | None = self.scope.record_types.get(self.flow.record_type)

    # -- reporting -------------------------------------------------------------------------

    def add(self, path: str, message: str, hint: str = "") -> None:
        self.problems.append(Problem(path, message, hint))

    def warn(self, path: str, message: str, hint: str = "") -> None:
        self.warnings.append(Problem(path, message, hint))

    @property
    def fields(self) -> list[str] | None:
        return None if self.record_type is None else self.record_type.field_keys

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
        issues = check_template(text, record_fields=self.fields, extra_variables=names)
        for issue in issues:
            self.add(path, issue.message, issue.hint)
        if self.record_type is not None and not issues:
            optional = [f.key for f in self.record_type.fields if not f.required]
            for name in fields_shown_empty(text, optional):
                self.warn(path, *empty_field_warning(name, self.record_type.key))

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
                f"{name!r} is not a member of this private flow and could not see its work",
                f"add them to members (or, for a saved flow, `crmflow flows add-member "
                f"{flow.key} {name}`), or choose a member",
            )

    def check_group(self, path: str, name: str) -> None:
        groups = self.scope.groups
        if groups is None or name in groups:
            return
        self.add(path, f"unknown group {name!r}", did_you_mean(name, groups))

    def check_group_members(self, path: str, name: str) -> None:
        """A private flow's work goes to a group only when each of its active members is a
        member of the flow: anyone else could not see it."""
        flow, known = self.flow, self.scope.group_members
        if flow.visibility is not Visibility.PRIVATE or known is None:
            return
        outside = sorted(
            m for m in known.get(name, ()) if m not in flow.members and m != flow.owner
        )
        if outside:
            add = " and ".join(f"`crmflow flows add-member {flow.key} {m}`" for m in outside)
            self.add(
                path,
                f"group {name!r} has members who are not members of this private flow: "
                f"{', '.join(outside)}",
                f"add them to members (or, for a saved flow, {add}), or choose another group",
            )

    def check_user_field(self, path: str, name: str) -> None:
        """A user field of the record, or (`company.account_manager`) of the record a
        reference field points to."""
        if "." not in name:
            self.check_field(path, name, {FieldType.USER})
            return
        ref, sub = name.split(".", 1)
        fdef = self.check_field(path, ref, {FieldType.REFERENCE})
        if fdef is None:
            return
        target = self.scope.record_types.get(fdef.reference_type or "")
        if target is None:
            return
        sub_def = target.field(sub)
        if sub_def is None or sub_def.type is not FieldType.USER:
            users = [f.key for f in target.fields if f.type is FieldType.USER]
            self.add(
                path,
                f"the {target.key} record type (of field {ref!r}) has no user field {sub!r}",
                f"its user fields: {', '.join(users)}" if users else f"{target.key} has none",
            )

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
