"""Saved-query filters compiled to SQLAlchemy Core over the `records` table, per dialect.

Field values live in the records' JSON `data`: SQLite reads them with
`json_extract(data, '$.field')` (which already yields numbers and 1/0 booleans), PostgreSQL with
`data->>'field'`, cast for numbers, booleans and ids. Values are always bound parameters; field
keys, which the record type has already vetted, are rendered as literals so that the SQL matches
hand-written SQL and any expression index an operator creates on `json_extract(data, '$.x')` or
`(data->>'x')`.

A long `in` list (and a long list of usernames) is bound as ONE parameter, as `store.idlists`
binds id lists: a JSON array read with `json_each` on SQLite, an array compared with `= ANY` on
PostgreSQL. One placeholder per value would stop at PostgreSQL's 65,535 parameters per statement
(and SQLite's 32,766), and costs a statement as long as the list; short lists stay plain `IN (...)`.
Integers past 64 bits (SQLite's driver cannot bind them) are compared as REAL on SQLite, and
left out of an id array on PostgreSQL, where no id can equal them.

Negation is pushed down to the leaves (De Morgan) and a negated leaf adds `field IS NULL`, so
`!=`, `not in` and `not` include records whose field is empty (see `crmflow.engine.querylang`),
while the positive leaves stay the plain comparisons a person would write.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, tzinfo
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

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
from crmflow.store.database import json_text
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
# From this many values on, an `in` list is bound as one array parameter (see the module text).
ARRAY_FROM = 50
_INT64 = range(-(2**63), 2**63)
_ID_COLUMNS = frozenset({"id", "owner_id"})
# How SQLAlchemy's DATETIME stores a naive UTC instant on SQLite (see store.types.UTCDateTime).
_SQLITE_DATETIME = "%Y-%m-%d %H:%M:%S.%f"


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
                return expr.in_(self.user_ids([pred.value.name]))
            return _COMPARE[pred.op](expr, self.bind(fref, pred.value))
        names = [v.name for v in pred.values if isinstance(v, Username)]
        others = [v for v in pred.values if not isinstance(v, Username)]
        parts: list[sa.ColumnElement[bool]] = []
        if others:
            parts.append(self.one_of(fref, expr, others))
        if names:
            parts.append(expr.in_(self.user_ids(names)))
        return parts[0] if len(parts) == 1 else sa.or_(*parts)

    def one_of(
        self, fref: FieldRef, expr: sa.ColumnElement[Any], values: Sequence[Value]
    ) -> sa.ColumnElement[bool]:
        if len(values) < ARRAY_FROM:
            return expr.in_([self.bind(fref, v) for v in values])
        if self.postgres:
            element, items = self.pg_array(fref, values)
            return expr == sa.any_(sa.bindparam(None, items, type_=postgresql.ARRAY(element)))
        plain = (int, float, str)  # as they are (a bool is not one of them: `type` is exact)
        items = [v if type(v) in plain else self.sqlite_item(fref, v) for v in values]
        return expr.in_(_json_each(items))

    def pg_array(self, fref: FieldRef, values: Sequence[Value]) -> tuple[Any, list[Any]]:
        """The element type of `typed(fref)` on PostgreSQL, and the values bound in it."""
        if fref.column in _ID_COLUMNS or fref.type in (FieldType.USER, FieldType.REFERENCE):
            return sa.BigInteger, [v for v in values if type(v) is int and v in _INT64]
        if fref.column is not None:  # created_at, updated_at
            return sa.DateTime(timezone=True), list(values)
        if fref.type is FieldType.NUMBER:
            return sa.Numeric, list(values)
        if fref.type is FieldType.BOOL:
            return sa.Boolean, list(values)
        return sa.Text, [v if type(v) is str else _as_text(v) for v in values]

    def sqlite_item(self, fref: FieldRef, value: Value) -> Any:
        """`value` as `json_each` yields it, comparable with what `raw(fref)` reads."""
        if isinstance(value, datetime):
            if fref.column is not None:
                return value.astimezone(UTC).strftime(_SQLITE_DATETIME)
            return format_datetime(value)
        if isinstance(value, date):
            return value.isoformat()
        if isinstance(value, bool):
            return int(value)
        return value  # json_each reads integers past 64 bits as REAL, like json_extract

    def user_ids(self, usernames: list[str]) -> sa.Select[Any]:
        matches: sa.ColumnElement[bool]
        if len(usernames) < ARRAY_FROM:
            matches = users.c.username.in_(usernames)
        elif self.postgres:
            array = sa.bindparam(None, usernames, type_=postgresql.ARRAY(sa.Text))
            matches = users.c.username == sa.any_(array)
        else:
            matches = users.c.username.in_(_json_each(usernames))
        return sa.select(users.c.id).where(matches)

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
            if isinstance(value, int) and value not in _INT64:
                # No BIGINT holds it: PostgreSQL compares it as NUMERIC, SQLite as REAL.
                if self.postgres:
                    return sa.bindparam(None, value, type_=sa.Numeric)
                return sa.bindparam(None, _as_real(value), type_=sa.Float)
            return sa.bindparam(None, value, type_=sa.Float if isinstance(value, float) else None)
        if isinstance(value, Username):  # pragma: no cover - handled by the callers
            raise TypeError("usernames are compared through a sub-select")
        return sa.bindparam(None, value, type_=sa.Text)


def _json_each(values: list[Any]) -> sa.Select[Any]:
    listed = sa.func.json_each(sa.bindparam(None, json_text(values), type_=sa.Text))
    return sa.select(listed.table_valued("value").c.value)


def _as_text(value: Value) -> str:
    """A value of a text-typed field (text, choice, email, phone, date, datetime) as stored."""
    if isinstance(value, datetime):
        return format_datetime(value)
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def _as_real(value: int) -> float:
    """An integer SQLite cannot bind, as the REAL it compares like (infinite past 1e308)."""
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf  # copysign would convert it, and overflow
