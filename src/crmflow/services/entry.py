"""Whether records may enter a flow, decided for many records at once, and the reason kept when
they may not (`entry_decisions`).

The rules are the engine's (`engine.entry`: admission, the loop guard, the re-entry policy, the
entry condition, in that order); this module gives them their facts and keeps their verdicts.
Everything works on a batch: the enrollments that bear on the re-entry policy and the loop guard
of all the batch's (flow, record) pairs are read with one query per chunk
(`store.enrollments.past_entries`), the entry condition is evaluated in Python (CEL cannot run in
SQL), and refusals are written with one executemany. The loop guard tripping, which cancels and
notifies, is the batch runner's (`runner.loop_guard`): it is rare by nature (a flow that keeps
restarting itself) and is the same code as manual starts.

The rules' names (FlowRef, Candidate, admission_refusal...) are re-exported here for the
triggers and effects that judge entries through this module.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from functools import partial

from crmflow.context import Context, flow_zone
from crmflow.engine.entry import (
    LOOP_GUARD_LIMIT,
    Candidate,
    Decision,
    FlowRef,
    PastEntry,
    Verdict,
    admission_refusal,
    condition_refusal,
    decide,
    loop_guard_reason,
    reentry_refusal,
)
from crmflow.runner.loop_guard import notify_loop_guard
from crmflow.store.database import Connection
from crmflow.store.enrollments import insert_enrollments, past_entries
from crmflow.store.entry_decisions import insert_decisions

__all__ = [
    "LOOP_GUARD_LIMIT",
    "Candidate",
    "Decision",
    "FlowRef",
    "PastEntry",
    "Verdict",
    "admission_refusal",
    "condition_refusal",
    "decide_entries",
    "flow_zone",
    "insert_enrollments",
    "loop_guard_reason",
    "notify_loop_guard",
    "past_entries",
    "reentry_refusal",
    "write_decisions",
]

# Each refusal kept as one `entry_decisions` row (the name the triggers write them by).
write_decisions = insert_decisions


def decide_entries(
    conn: Connection, ctx: Context, candidates: Sequence[Candidate], *, now: datetime
) -> Verdict:
    """Split `candidates` (in the order their triggers fired) into admitted, refused and
    tripped, by the engine's rules (`engine.entry.decide`) over the records' past entries in
    their flows, read in one query per chunk.

    A record proposed twice in one batch (created, then updated) is judged the second time
    knowing that it entered the first time, as if the batch had run one change at a time.
    """
    past = past_entries(conn, {(c.flow.id, c.record_id) for c in candidates})
    return decide(
        candidates,
        past,
        now=now,
        zone_of=partial(flow_zone, ctx),
        limits=ctx.evaluation_limits,
    )
