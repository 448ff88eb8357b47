"""The batch runner: a claimed batch of enrollments -> the pure engine -> one write.

```
  worker.run_batch ----------- due enrollments, locked (repo.due_ids / repo.lock)
  change feed (record_changes) records entering, and enrollments hearing of their record's changes
  lifecycle (resume) --------- the records of a flow that was frozen    (BatchWrites directly)
  manual and webhook starts,   one enrollment each
  decisions, restarts -------- (services.enrollments)
        |
        v
  move_batch(conn, ctx, actor, rows, events=..., evaluation=..., reference=...)     batch.py
        |  reference data read once per transaction: flows, record types, records   reference.py
        |  a start held by the loop guard, or that the flow no longer admits,       loop_guard.py
        |  is cancelled as it comes due
        |  the engine for each enrollment (enter / advance / restart), or the       evaluation.py
        |  outcome `evaluate_batch` computed on a read snapshot before the lock
        v
  BatchWrites.write: the commands carried out (services.effects), states and step   writes.py
  runs saved, tasks of runs that are over closed, messages of cancelled runs cancelled
```

Everything is written on the caller's transaction, with a fixed number of statements per batch.
Layers: services and the worker call the runner; the runner calls the store and the engine, and
imports no service, but for `services.effects`' appliers (see `writes._apply_commands`).
"""

from __future__ import annotations

from crmflow.runner.batch import Moved, move_batch
from crmflow.runner.evaluation import (
    Evaluated,
    Evaluation,
    Restart,
    condition_refusal_for,
    engine_outcome,
    evaluate_batch,
    state_of,
)
from crmflow.runner.loop_guard import notify_loop_guard, trip_loop_guard
from crmflow.runner.reference import Reference, load_reference
from crmflow.runner.writes import BatchWrites, close_tasks, with_action_failures

__all__ = [
    "BatchWrites",
    "Evaluated",
    "Evaluation",
    "Moved",
    "Reference",
    "Restart",
    "close_tasks",
    "condition_refusal_for",
    "engine_outcome",
    "evaluate_batch",
    "load_reference",
    "move_batch",
    "notify_loop_guard",
    "state_of",
    "trip_loop_guard",
    "with_action_failures",
]
