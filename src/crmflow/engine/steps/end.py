"""An end step ends the flow for the record."""

from __future__ import annotations

from crmflow.engine.definition import EndStep
from crmflow.engine.runtime import EnrollmentStatus
from crmflow.engine.steps.base import End, StepResult, StepRun

__all__ = ["start"]


def start(step: EndStep, run: StepRun) -> StepResult:
    return End(EnrollmentStatus.FINISHED, f"reached the end step {step.key!r}")
