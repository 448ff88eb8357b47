"""Turning an action definition into commands: one module per action `type`, each a `Kind` (its
checks and its runner), listed in `registry.KINDS`.

`run_action` never lets an evaluation problem escape: it comes back as an `EvaluationError`
for the step to record as a failed action.
"""

from __future__ import annotations
