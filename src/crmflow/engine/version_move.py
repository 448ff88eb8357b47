"""What moving to a new version of a flow does to the records inside it (seed 000: a flow edited
while paused or archived resumes on its new version). Pure rules; `services.lifecycle` counts the
records per step and version, asks these rules, and moves the records.

Records move by step key. A record whose step is unchanged, or whose action step only changed
its actions, keeps its place and due time ("stays"); one whose step changed its type or timing
starts that step again at the resume ("restarts"); one whose step the new version removed goes
where the person resuming says: a step of the new version, or END ("removed").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from crmflow.engine.definition import FlowDefinition
from crmflow.errors import InvalidInputError, MovesRequiredError, Problem

__all__ = ["END", "Fate", "StepImpact", "check_moves", "fate", "step_impacts"]

END = "end"  # a move target: the records of a removed step end (cancelled, with the reason)

Fate = Literal["stays", "restarts", "removed"]


@dataclass(frozen=True)
class StepImpact:
    """Records at one step of an older version, and what resuming does to them."""

    step: str
    records: int
    versions: tuple[int, ...]  # the versions these records are on now
    fate: Fate
    detail: str
    move_to: str | None = None  # for a removed step: the choice given, if any

    def as_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "records": self.records,
            "versions": list(self.versions),
            "fate": self.fate,
            "detail": self.detail,
            "move_to": self.move_to,
        }


def fate(old: FlowDefinition, new: FlowDefinition, key: str, version: int) -> tuple[Fate, str]:
    """What becomes of a record at step `key` of `old` when it moves to `new` (version
    `version`), and why, in words for the person resuming."""
    before, after = old.step(key), new.step(key)
    if after is None:
        return "removed", (
            f"version {version} has no step {key!r}: choose a step of version {version} "
            f"for these records (--move {key}=STEP), or end them (--move {key}={END})"
        )
    if before is None or before == after:
        return "stays", "unchanged: each record continues where it is"
    # What a record waiting at a step holds (its due time, what it waits for) comes from the
    # step's type and timing, and for waits and approvals from the whole step. When those are
    # the same the record can keep its place; otherwise its place means nothing in the new step.
    if before.type == after.type == "action" and before.timing == after.timing:
        return "stays", "actions changed: each record keeps its due time and runs the new actions"
    return "restarts", (
        "its type or timing changed: the step starts again at the resume, its timing counted "
        "from then"
    )


def step_impacts(
    counts: Sequence[tuple[int, str, int]],
    definitions: Mapping[int, FlowDefinition],
    version: int,
    moves: Mapping[str, str],
) -> list[StepImpact]:
    """Per step, by step key, what moving to `version` does to the records of `counts` ((flow
    version, step key, records) on versions other than `version`); `definitions` holds the
    flow's definition of each of those versions and of `version`. A step whose records are on
    several versions shows the strongest consequence (a restart on one of them)."""
    new = definitions[version]
    by_step: dict[str, tuple[int, set[int], Fate, str]] = {}
    for old_version, key, count in counts:
        found, detail = fate(definitions[old_version], new, key, version)
        records, versions, seen_fate, seen_detail = by_step.get(key, (0, set(), found, detail))
        if seen_fate == "restarts":  # the strongest consequence is the one to show
            found, detail = seen_fate, seen_detail
        by_step[key] = (records + count, versions | {old_version}, found, detail)
    return [
        StepImpact(
            step=key,
            records=records,
            versions=tuple(sorted(versions)),
            fate=found,
            detail=detail,
            move_to=moves.get(key) if found == "removed" else None,
        )
        for key, (records, versions, found, detail) in sorted(by_step.items())
    ]


def check_moves(
    impacts: Sequence[StepImpact], moves: Mapping[str, str], new: FlowDefinition, key: str
) -> None:
    """Every removed step with records has a valid choice in `moves`, and nothing else is
    mapped: InvalidInputError for a wrong choice, MovesRequiredError for a missing one (flow
    `key`, resuming on `new`)."""
    problems = []
    removed = {i.step: i.records for i in impacts if i.fate == "removed"}
    for old_step, target in sorted(moves.items()):
        if new.step(old_step) is None and old_step not in removed:
            listed = ", ".join(f"{s} ({n} record(s))" for s, n in sorted(removed.items()))
            problems.append(
                Problem(
                    f"moves.{old_step}",
                    f"no record is at a step {old_step!r} that the new version removed",
                    f"the steps to map: {listed}"
                    if listed
                    else "nothing needs moving: leave the moves out",
                )
            )
        elif new.step(old_step) is not None:
            problems.append(
                Problem(
                    f"moves.{old_step}",
                    f"step {old_step!r} is still in the new version; its records stay there",
                    "map only steps that the new version removed",
                )
            )
        elif target != END and new.step(target) is None:
            steps = ", ".join(s.key for s in new.steps)
            problems.append(
                Problem(
                    f"moves.{old_step}",
                    f"the new version has no step {target!r}",
                    f"choose one of: {steps}, or {END}",
                )
            )
    if problems:
        raise InvalidInputError(f"the moves for resuming {key!r}", problems)
    missing = [i for i in impacts if i.fate == "removed" and i.step not in moves]
    if missing:
        listed = "; ".join(f"{i.records} record(s) are in step {i.step!r}" for i in missing)
        options = " ".join(f"--move {i.step}=STEP|{END}" for i in missing)
        raise MovesRequiredError(
            f"the new version of {key!r} removes steps that have records inside: {listed}. "
            f"Say where they go: `crmflow flows resume {key} {options}` "
            f"(see `crmflow flows impact {key}`)",
            steps=missing,
        )
