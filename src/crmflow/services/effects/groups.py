"""add_to_group and remove_from_group: records join and leave lists (`services.record_groups`),
in the engine's order, so that the last of a join and a leave of one record wins."""

from __future__ import annotations

from collections.abc import Sequence

from crmflow.engine.commands import AddToGroup, RemoveFromGroup
from crmflow.services.effects.batch import Applies, EffectBatch
from crmflow.services.record_groups import apply_group_changes

__all__ = ["GROUPS"]


def apply_groups(batch: EffectBatch, commands: Sequence[AddToGroup | RemoveFromGroup]) -> None:
    changes = [(c, batch.record_id(c)) for c in commands]
    apply_group_changes(batch.conn, changes, batch.fail, now=batch.now)


GROUPS = Applies[AddToGroup | RemoveFromGroup]((AddToGroup, RemoveFromGroup), apply_groups)
