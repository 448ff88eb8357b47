"""Saved-query filters compiled to SQLAlchemy Core over the `records` table, per dialect.

Field values live in the records' JSON `data`: SQLite reads them with
`json_extract(data, '$.field')` (which already yields numbers and 1/0 booleans), PostgreSQL with
`data->>'field'`, cast for numbers, booleans and ids. Values are always bound parameters; field
keys, which the record type has already vetted, are rendered as literals so that the SQL matches
hand-written SQL and any expression index an operator creates on `json_extract(data, '$.x')` or
`(data->>'x')`.

Negation is pushed down to the leaves (De Morgan) and a negated leaf adds `field IS NULL`, so
`!=`, `not in` and `not` include records whose field is empty (see `crmflow.engine.querylang`),
while the positive leaves stay the plain comparisons a person would write.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from datetime import date, datetime, tzinfo
from typing import Any

import sqlalchemy as sa

from crmflow.engine.querylang import (
    CheckedFilter,
    Compare,
    Empty,
    FieldRef,
    OneOf,
    Pred,
    PredGroup,
    TextMatch,
    Username,
    Value,
)
from crmflow.engine.recordtypes import FieldType, format_datetime
from crmflow.store.schema import records, users

__all__ = ["compile_pred", "filter_clause"]

_SAFE_KEY = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_COMPARE: dict[str, Callable[[Any, Any], sa.ColumnElement[bool]]] = {
    "=": operator.eq,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
_NEVER_NULL = frozenset({"id", "created_at", "updated_at"})


def filter_clause(
    checked: CheckedFilter, *, dialect: str, now: datetime, zone: tzinfo
) -> sa.ColumnElement[bool]:
    """The WHERE clause selecting the records of the filter's type that match it at `now`."""
    return sa.and_(
        records.c.type == checked.record_type,
        compile_pred(checked.resolve(now=now, zone=zone), dialect),
    )


def compile_pred(pred: Pred, dialect: str) -> sa.ColumnElement[bool]:
    """A boolean expression over `records` for a resolved predicate ('sqlite' or 'postgresql')."""
    return _Compiler(dialect).compile(pred, negated=False)


class _Compiler:
    def __init__(self, dialect: str) -> None:
        if dialect not in ("sqlite", "postgresql"):
            raise ValueError(f"saved queries support SQLite and PostgreSQL, not {dialect!r}")
        self.postgres = dialect == "postgresql"

    def compile(self, pred: Pred, *, negated: bool) -> sa.ColumnElement[bool]:
        if isinstance(pred, PredGroup):
            if pred.kind == "not":
                return self.compile(pred.items[0], negated=not negated)
            parts = [self.compile(item, negated=negated) for item in pred.items]
            conjunction = (pred.kind == "all") != negated
            if not parts:
                return sa.true() if conjunction else sa.false()
            if len(parts) == 1:
                return parts[0]
            return sa.and_(*parts) if conjunction else sa.or_(*parts)
        leaf = self.leaf(pred)
        if not negated:
            # In a WHERE clause built only from AND and OR, a NULL leaf acts as false, which is
            # what "empty never matches" means, so positive leaves need no guard.
            return leaf
        if isinstance(pred, Empty):
            return sa.not_(leaf)
        if pred.field.column in _NEVER_NULL:
            return sa.not_(leaf)
        return sa.or_(self.raw(pred.field).is_(None), sa.not_(leaf))

    def leaf(self, pred: Compare | OneOf | TextMatch | Empty) -> sa.ColumnElement[bool]:
        fref = pred.field
        if isinstance(pred, Empty):
            raw = self.raw(fref)
            if fref.column is not None:
                return raw.is_(None)
            return sa.or_(raw.is_(None), raw == "")
        if isinstance(pred, TextMatch):
            text = self.raw(fref)
            if pred.mode == "contains":
                return text.icontains(pred.text, autoescape=True)
            return text.istartswith(pred.text, autoescape=True)
        expr = self.typed(fref)
        if isinstance(pred, Compare):
            if isinstance(pred.value, Username):
                # IN rather than = so that "!= someone" stays true if that user is gone.
                return expr.in_(_user_ids([pred.value.name]))
            return _COMPARE[pred.op](expr, self.bind(fref, pred.value))
        names = [v.name for v in pred.values if isinstance(v, Username)]
        others = [self.bind(fref, v) for v in pred.values if not isinstance(v, Username)]
        parts: list[sa.ColumnElement[bool]] = []
        if others:
            parts.append(expr.in_(others))
        if names:
            parts.append(expr.in_(_user_ids(names)))
        return parts[0] if len(parts) == 1 else sa.or_(*parts)

    def raw(self, fref: FieldRef) -> sa.ColumnElement[Any]:
        """The field as stored: a column, or the JSON value as SQLite returns it / PG's text."""
        if fref.column is not None:
            return records.c[fref.column]
        if not _SAFE_KEY.match(fref.key):
            raise ValueError(f"unsafe field key {fref.key!r}")  # record types forbid these
        if self.postgres:
            return records.c.data.op("->>", return_type=sa.Text)(sa.literal_column(f"'{fref.key}'"))
        return sa.func.json_extract(
            records.c.data, sa.literal_column(f"'$.{fref.key}'"), type_=sa.Text
        )

    def typed(self, fref: FieldRef) -> sa.ColumnElement[Any]:
        """The field in the type its comparisons need (PostgreSQL's `->>` always yields text)."""
        raw = self.raw(fref)
        if fref.column is not None or not self.postgres:
            return raw
        if fref.type is FieldType.NUMBER:
            return sa.cast(raw, sa.Numeric)
        if fref.type is FieldType.BOOL:
            return sa.cast(raw, sa.Boolean)
        if fref.type in (FieldType.USER, FieldType.REFERENCE):
            return sa.cast(raw, sa.BigInteger)
        return raw

    def bind(self, fref: FieldRef, value: Value) -> sa.BindParameter[Any]:
        if isinstance(value, datetime):
            if fref.column is not None:
                return sa.bindparam(None, value, type_=records.c[fref.column].type)
            return sa.bindparam(None, format_datetime(value), type_=sa.Text)
        if isinstance(value, date):
            return sa.bindparam(None, value.isoformat(), type_=sa.Text)
        if isinstance(value, bool):
            if self.postgres:
                return sa.bindparam(None, value, type_=sa.Boolean)
            # json_extract yields 1/0 for JSON true/false.
            return sa.bindparam(None, int(value), type_=sa.Integer)
        if isinstance(value, int | float):
            if self.postgres and fref.type is FieldType.NUMBER and fref.column is None:
                return sa.bindparam(None, value, type_=sa.Numeric)
            return sa.bindparam(None, value, type_=sa.Float if isinstance(value, float) else None)
        if isinstance(value, Username):  # pragma: no cover - handled by the callers
            raise TypeError("usernames are compared through a sub-select")
        return sa.bindparam(None, value, type_=sa.Text)


def _user_ids(usernames: list[str]) -> sa.Select[Any]:
    return sa.select(users.c.id).where(users.c.username.in_(usernames))
