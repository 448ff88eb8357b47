"""Building blocks shared by every part of a flow document: the strict base model and small types.

Models are strict (no silent "yes" -> True or 3.0 -> 3) and forbid unknown keys, so that a typo in a
hand-written YAML file is reported instead of ignored.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

__all__ = [
    "KEY_PATTERN",
    "TIME_PATTERN",
    "Definition",
    "Duration",
    "DurationUnit",
    "Key",
    "TimeOfDay",
    "Weekday",
]

KEY_PATTERN = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
TIME_PATTERN = re.compile(r"^([01][0-9]|2[0-3]):[0-5][0-9]$")

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class Definition(BaseModel):
    """Base of every model in a flow document."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        populate_by_name=True,
        frozen=True,
        use_enum_values=False,
    )


def _check_key(value: str) -> str:
    if not KEY_PATTERN.match(value):
        raise ValueError(
            f"{value!r} is not a valid key: use lower-case letters, digits, '-' or '_', "
            "starting with a letter (at most 63 characters)"
        )
    return value


def _check_time(value: str) -> str:
    if not TIME_PATTERN.match(value):
        raise ValueError(
            f"{value!r} is not a time of day: write HH:MM on a 24-hour clock, e.g. 09:30"
        )
    return value


Key = Annotated[str, AfterValidator(_check_key)]
TimeOfDay = Annotated[str, AfterValidator(_check_time)]
DurationUnit = Literal["minutes", "hours", "days"]


class Duration(Definition):
    """An amount of time: `{amount: 3, unit: days}`; days may count business days only."""

    amount: Annotated[int, Field(ge=0, le=100_000)]
    unit: DurationUnit = "days"
    business_days: bool = False
