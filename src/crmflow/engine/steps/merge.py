"""A merge joins branches: whichever branch led here, the flow goes on from it."""

from __future__ import annotations

from crmflow.engine.definition import MergeStep
from crmflow.engine.runtime import StepStatus
from crmflow.engine.steps.base import Go, StepResult, StepRun

__all__ = ["start"]


def start(step: MergeStep, run: StepRun) -> StepResult:
    run.log(step, StepStatus.DONE, "branches join here")
    return Go()
