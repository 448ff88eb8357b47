"""Carrying out the engine's commands on crmflow's own data, inside the batch's transaction.

Everything here happens in the transaction that moves the enrollments (DESIGN principle 3): a
task, a history line or a record change exists exactly when the step that made it is committed.
External effects only become outbox rows (`ON CONFLICT DO NOTHING` on their idempotency key); the
dispatcher delivers them. Each kind is applied set-based for the whole batch.

A command that cannot be carried out (a value that no longer fits the record, a follow-up flow
that refuses the record, an unknown list, SQL turned off) is never dropped silently: it comes back
as a failure, which the caller writes into the step run's action log.

One applier per command family, in a module of this package, listed in `registry.APPLIERS` in
the order they run; the larger ones call modules of their own (`services.related_records`,
`owner_assignment`, `record_groups`, `sql_actions`). Their statements are the store's
(`store.history`, `store.tasks`, `store.outbox`, `store.records`...).
"""

from __future__ import annotations

from crmflow.services.effects.batch import Applied
from crmflow.services.effects.registry import apply_commands

__all__ = ["Applied", "apply_commands"]
