"""Flows, their versions, members and history: the one place that writes `flows`,
`flow_versions`, `flow_members` and `flow_status_changes` (`services.flows` edits them,
`services.lifecycle` moves them through their statuses; who may see which flow is
`store.flow_access`), and the reads the other services need about flows (the started flows an
inbound webhook may start, the flow row a start locks, the current definitions that use a saved
query, the flows whose triggers hear a record type).

Every change of a flow row adds one to its `revision` (If-Match compares it).

The statements live in `reads`, `writes` (every write of these tables) and `schedule` (start_at,
archive_at, auto-archive); every name is importable from here.
"""

from __future__ import annotations

from crmflow.store.flows.reads import (
    NamesInUse,
    active_flows,
    current_documents,
    current_versions_of,
    find_flow,
    find_version,
    flow_by_id,
    flow_head,
    flow_revision,
    flows_seen,
    flows_with_status,
    lock_flow,
    member_names,
    names_in_use,
    non_draft_flows_of_types,
    status_changes,
    version_document,
)
from crmflow.store.flows.schedule import (
    archives_due,
    current_documents_of,
    drafts_due,
    drained_flows,
    next_scheduled,
)
from crmflow.store.flows.writes import (
    FlowFields,
    VersionFields,
    add_member,
    bump_revision,
    delete_flow,
    insert_flow,
    insert_status_change,
    insert_version,
    remove_member,
    replace_version,
    set_members,
    set_paused,
    set_status,
    update_flow,
)

__all__ = [
    "FlowFields",
    "NamesInUse",
    "VersionFields",
    "active_flows",
    "add_member",
    "archives_due",
    "bump_revision",
    "current_documents",
    "current_documents_of",
    "current_versions_of",
    "delete_flow",
    "drafts_due",
    "drained_flows",
    "find_flow",
    "find_version",
    "flow_by_id",
    "flow_head",
    "flow_revision",
    "flows_seen",
    "flows_with_status",
    "insert_flow",
    "insert_status_change",
    "insert_version",
    "lock_flow",
    "member_names",
    "names_in_use",
    "next_scheduled",
    "non_draft_flows_of_types",
    "remove_member",
    "replace_version",
    "set_members",
    "set_paused",
    "set_status",
    "status_changes",
    "update_flow",
    "version_document",
]
