"""What every action has: an optional key and name, an active flag and an order within its step."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from crmflow.engine.definition.common import Definition, Key

__all__ = ["ActionBase", "FieldValues"]

# A value written to a field: a literal, a template string ("{{ ... }}"), or `{cel: "expr"}`.
FieldValues = dict[str, Any]


class ActionBase(Definition):
    """An action runs only when it, its step and its flow are active (seed 002).

    Actions run by `order` (absent = position in the list) within their step.
    """

    key: Key | None = None
    name: str = ""
    active: bool = True
    order: int | None = Field(default=None, ge=0, le=1_000_000)
