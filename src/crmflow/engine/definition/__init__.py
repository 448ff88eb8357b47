"""The flow document: pydantic models of everything a flow says (definitions, not runtime state).

Parse and check a document with `crmflow.engine.validation.parse_flow`; these models alone check
its shape, not its meaning (fields of the record type, step targets, users).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from crmflow.engine.definition.action_base import ActionBase
    from crmflow.engine.definition.actions import (
        Action,
        AddToGroupAction,
        AssignOwnerAction,
        CreateRecordAction,
        CreateTaskAction,
        EndFlowAction,
        HistoryAction,
        NotifyAction,
        RemoveFromGroupAction,
        RunSqlAction,
        SendEmailAction,
        SendSmsAction,
        SetStatusAction,
        StartFlowAction,
        UpdateRecordAction,
        WebhookAction,
    )
    from crmflow.engine.definition.calendar import Calendar, QuietHours
    from crmflow.engine.definition.common import Duration
    from crmflow.engine.definition.flow import (
        SCHEMA_VERSION,
        CatchUpPolicy,
        FlowDefinition,
        FlowStatus,
        ReentryPolicy,
        Visibility,
    )
    from crmflow.engine.definition.people import (
        Deadline,
        FieldResponsibility,
        FlowOwnerResponsibility,
        GroupResponsibility,
        ManagerOfResponsibility,
        RecordOwnerResponsibility,
        Responsibility,
        UserResponsibility,
    )
    from crmflow.engine.definition.steps import (
        ActionStep,
        ApprovalButton,
        ApprovalStep,
        Branch,
        DecisionStep,
        EndStep,
        MergeStep,
        Step,
        StepBase,
        WaitStep,
    )
    from crmflow.engine.definition.timing import (
        AfterTiming,
        AtTimeTiming,
        DateTiming,
        EventTiming,
        ImmediateTiming,
        Timing,
    )
    from crmflow.engine.definition.triggers import (
        DateReachedTrigger,
        FieldChangedTrigger,
        FollowUpTrigger,
        ManualTrigger,
        RecordCreatedTrigger,
        RecordDeletedTrigger,
        RecordUpdatedTrigger,
        ScheduleTrigger,
        StartListTrigger,
        StatusChangedTrigger,
        Trigger,
        WebhookTrigger,
    )

__all__ = [
    "SCHEMA_VERSION",
    "Action",
    "ActionBase",
    "ActionStep",
    "AddToGroupAction",
    "AfterTiming",
    "ApprovalButton",
    "ApprovalStep",
    "AssignOwnerAction",
    "AtTimeTiming",
    "Branch",
    "Calendar",
    "CatchUpPolicy",
    "CreateRecordAction",
    "CreateTaskAction",
    "DateReachedTrigger",
    "DateTiming",
    "Deadline",
    "DecisionStep",
    "Duration",
    "EndFlowAction",
    "EndStep",
    "EventTiming",
    "FieldChangedTrigger",
    "FieldResponsibility",
    "FlowDefinition",
    "FlowOwnerResponsibility",
    "FlowStatus",
    "FollowUpTrigger",
    "GroupResponsibility",
    "HistoryAction",
    "ImmediateTiming",
    "ManagerOfResponsibility",
    "ManualTrigger",
    "MergeStep",
    "NotifyAction",
    "QuietHours",
    "RecordCreatedTrigger",
    "RecordDeletedTrigger",
    "RecordOwnerResponsibility",
    "RecordUpdatedTrigger",
    "ReentryPolicy",
    "RemoveFromGroupAction",
    "Responsibility",
    "RunSqlAction",
    "ScheduleTrigger",
    "SendEmailAction",
    "SendSmsAction",
    "SetStatusAction",
    "StartFlowAction",
    "StartListTrigger",
    "StatusChangedTrigger",
    "Step",
    "StepBase",
    "Timing",
    "Trigger",
    "UpdateRecordAction",
    "UserResponsibility",
    "Visibility",
    "WaitStep",
    "WebhookAction",
    "WebhookTrigger",
]

# The names above are loaded when first used (PEP 562), not when the package is: the action
# models live beside their checks and runners in `crmflow.engine.actions.<type>`, which use the
# definition's leaf modules (calendar, common, timing, people), so importing the whole document
# model here would import those kind modules half way through their own import.
_HOMES: dict[str, str] = {
    "Action": "actions",
    "ActionBase": "action_base",
    "ActionStep": "steps",
    "AddToGroupAction": "actions",
    "AfterTiming": "timing",
    "ApprovalButton": "steps",
    "ApprovalStep": "steps",
    "AssignOwnerAction": "actions",
    "AtTimeTiming": "timing",
    "Branch": "steps",
    "Calendar": "calendar",
    "CatchUpPolicy": "flow",
    "CreateRecordAction": "actions",
    "CreateTaskAction": "actions",
    "DateReachedTrigger": "triggers",
    "DateTiming": "timing",
    "Deadline": "people",
    "DecisionStep": "steps",
    "Duration": "common",
    "EndFlowAction": "actions",
    "EndStep": "steps",
    "EventTiming": "timing",
    "FieldChangedTrigger": "triggers",
    "FieldResponsibility": "people",
    "FlowDefinition": "flow",
    "FlowOwnerResponsibility": "people",
    "FlowStatus": "flow",
    "FollowUpTrigger": "triggers",
    "GroupResponsibility": "people",
    "HistoryAction": "actions",
    "ImmediateTiming": "timing",
    "ManagerOfResponsibility": "people",
    "ManualTrigger": "triggers",
    "MergeStep": "steps",
    "NotifyAction": "actions",
    "QuietHours": "calendar",
    "RecordCreatedTrigger": "triggers",
    "RecordDeletedTrigger": "triggers",
    "RecordOwnerResponsibility": "people",
    "RecordUpdatedTrigger": "triggers",
    "ReentryPolicy": "flow",
    "RemoveFromGroupAction": "actions",
    "Responsibility": "people",
    "RunSqlAction": "actions",
    "SCHEMA_VERSION": "flow",
    "ScheduleTrigger": "triggers",
    "SendEmailAction": "actions",
    "SendSmsAction": "actions",
    "SetStatusAction": "actions",
    "StartFlowAction": "actions",
    "StartListTrigger": "triggers",
    "StatusChangedTrigger": "triggers",
    "Step": "steps",
    "StepBase": "steps",
    "Timing": "timing",
    "Trigger": "triggers",
    "UpdateRecordAction": "actions",
    "UserResponsibility": "people",
    "Visibility": "flow",
    "WaitStep": "steps",
    "WebhookAction": "actions",
    "WebhookTrigger": "triggers",
}


def __getattr__(name: str) -> Any:
    module = _HOMES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
