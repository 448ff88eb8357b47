"""What the engine knows of people when it names who is responsible: the users (active or not,
and their managers), the active members of each group, the members of private flows, and the
values of related records a responsibility reads (`field: company.account_manager`).

The engine is pure: the runner reads these in the batch's transaction (`runner.reference`) and
hands them over with each record (`RecordSnapshot.people`). A record without them (a simulation,
a test of the engine alone) resolves what needs no lookup and falls back to the flow's
controller for the rest.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Directory", "Person", "Turns"]


@dataclass(frozen=True)
class Person:
    username: str
    active: bool
    manager: str | None = None  # the manager's username


class Turns:
    """Round-robin turns per (flow key, step key, group): `base` as stored, plus the turns the
    batch took so far; the same step run asks the same member however often it is resolved."""

    def __init__(self, base: Mapping[tuple[str, str, str], int] | None = None) -> None:
        self.base = dict(base or {})
        self.taken: dict[tuple[str, str, str], int] = {}
        self._given: dict[tuple[str, str, str, Any], int] = {}

    def pick(self, key: tuple[str, str, str], run: Any, size: int) -> int:
        """The index (0 <= i < size) of the member whose turn it is for step run `run`."""
        given = self._given.get((*key, run))
        if given is None:
            given = self.base.get(key, 0) + self.taken.get(key, 0)
            self.taken[key] = self.taken.get(key, 0) + 1
            self._given[(*key, run)] = given
        return given % size


@dataclass(frozen=True, eq=False)
class Directory:
    """The people of one batch; shared by its records (one object, read once).

    Two directories are equal when they hold the same people (whatever turns were taken). The
    runner compares each record of a batch with the one its outcome was computed from, and all
    of a batch's records share one directory: the comparison of two directories is made once
    and remembered."""

    users: Mapping[str, Person] = field(default_factory=dict)  # by username
    usernames: Mapping[int, str] = field(default_factory=dict)  # by user id
    groups: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # active, sorted
    flow_members: Mapping[str, frozenset[str]] = field(default_factory=dict)  # private flows
    # Values of related records, by (record id, dotted path): `company.account_manager`.
    related: Mapping[tuple[int, str], Any] = field(default_factory=dict)
    # Not compared: two reads of the same people are the same directory, whatever was taken.
    turns: Turns = field(default_factory=Turns, compare=False, repr=False)
    _compared: dict[int, tuple[Directory, bool]] = field(
        default_factory=dict, init=False, compare=False, repr=False
    )

    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        if not isinstance(other, Directory):
            return NotImplemented
        known = self._compared.get(id(other))
        if known is not None and known[0] is other:
            return known[1]
        same = self._people() == other._people()
        self._compared[id(other)] = (other, same)
        return same

    __hash__ = None  # type: ignore[assignment]

    def _people(self) -> tuple[Any, ...]:
        return (self.users, self.usernames, self.groups, self.flow_members, self.related)

    def person(self, ref: str | int) -> Person | None:
        """The user named (or numbered) `ref`, or None when there is no such user."""
        if isinstance(ref, int) and not isinstance(ref, bool):
            name = self.usernames.get(ref)
            return None if name is None else self.users.get(name)
        return self.users.get(str(ref))
