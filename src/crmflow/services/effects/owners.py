"""assign_owner: the lead distributor picks and sets each record's owner
(`services.owner_assignment`)."""

from __future__ import annotations

from collections.abc import Sequence

from crmflow.engine.commands import AssignOwner
from crmflow.services.effects.batch import Applies, EffectBatch
from crmflow.services.owner_assignment import assign_owners

__all__ = ["OWNERS"]


def apply_owners(batch: EffectBatch, commands: Sequence[AssignOwner]) -> None:
    items = [(c, batch.record_id(c)) for c in commands]
    assign_owners(batch.conn, batch.actor, items, batch.fail, flow_of=batch.flow_of, now=batch.now)


OWNERS = Applies((AssignOwner,), apply_owners)
