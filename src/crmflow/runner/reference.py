"""What a batch's engine calls read besides the enrollments themselves: the flows (status and
parsed definition), the record types and the records as the engine sees them.

It is loaded once per transaction: by `move_batch`, or by its caller when the caller read it
already in the same transaction (a manual start, the worker's evaluation on an unchanged
snapshot) and passes it on, so that nothing is read twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from crmflow.context import Context, definitions_cache
from crmflow.engine.recordtypes import RecordType
from crmflow.engine.runtime import RecordSnapshot
from crmflow.runner.people import with_people
from crmflow.store import enrollments as repo
from crmflow.store.database import Connection
from crmflow.store.record_types import record_type_catalog
from crmflow.store.records import StoredRecord

__all__ = ["Reference", "load_reference"]


@dataclass(frozen=True)
class Reference:
    """The reference data of some enrollments, read in one transaction."""

    infos: dict[tuple[int, int], repo.FlowInfo]  # by (flow id, version)
    types: dict[str, RecordType]  # the whole catalogue, by key
    records: dict[int, RecordSnapshot]  # by id; a deleted record is absent
    # The same records as their writes start from (`load_reference` fills it when it reads
    # them; empty when the caller gave them).
    stored: dict[int, StoredRecord] = field(default_factory=dict)


def load_reference(
    conn: Connection,
    ctx: Context,
    rows: Sequence[repo.EnrollmentRow],
    *,
    types: dict[str, RecordType] | None = None,
    records: dict[int, RecordSnapshot] | None = None,
) -> Reference:
    """The flows, record types and records of `rows`: three queries (a flow version's
    definition is parsed once per process, `definitions_cache`). `types` and `records` (which
    must hold every record of `rows` that exists): what the caller read in this transaction
    and knows to be unchanged since, not read again. A batch with a flow that asks people
    reads the directory too (`runner.people`: four or five more queries)."""
    infos = repo.load_flows(
        conn, {(r.flow_id, r.flow_version) for r in rows}, definitions_cache(ctx)
    )
    if types is None:
        types = record_type_catalog(conn)
    stored: dict[int, StoredRecord] = {}
    if records is None:
        records = repo.load_records(conn, {r.record_id for r in rows}, types, stored=stored)
    # Who the flows' responsibilities may name comes with each record (runner.people).
    return Reference(infos, types, with_people(conn, infos, records, types), stored)
