"""The saved-query filter language: typed models, parsing with precise problems, type checking
against a record type, and resolution of relative dates into concrete predicates.

A filter is plain data (from YAML, JSON or an API body)::

    all:
      - {field: client_since, op: "=", value: "today - 180 days"}
      - any:
          - {field: status, op: in, value: [client, donor]}
          - {field: total_donations, op: ">=", value: 1000}

Three stages, all pure (no clock, no database):

1. `parse_filter` (module `parse`) turns plain data into `Condition` / `Group` nodes, or
   raises InvalidInputError listing every structural problem with its path
   (`filter.all[1].any[0].op`).
2. `check_filter` (module `typecheck`) checks those nodes against a `RecordType` (known fields,
   operators that fit the field type, values of the right type, well-formed relative dates) and
   returns a `CheckedFilter`, or raises with every problem.
3. `CheckedFilter.resolve(now=..., zone=...)` (module `resolve`) turns relative values into
   concrete ones and returns a `Pred` tree that `crmflow.store.querysql` compiles to SQL.

Semantics, chosen for what a CRM user expects:

- **Empty fields.** A field is empty when its key is missing, holds JSON null, or (for `is empty`)
  an empty string. `!=`, `not in` and `not: {...}` are exact complements of `=`, `in` and the
  negated group: they *include* records whose field is empty ("status != client" lists contacts
  without a status), instead of silently dropping them as SQL's NULL logic would. Ordering
  operators (`<`, `>=`, `between`), `contains` and `starts with` never match an empty field.
- **Dates.** A value is either a *day* (`today`, `yesterday`, `start of month`, `2026-05-27`, any
  of these moved by days/weeks/months/years) or an *instant* (`now`, anything moved by hours or
  minutes, an ISO date-time). Days and "today" are taken in the organisation's time zone. On a
  date field an instant counts as its local day. On a date-time field a day stands for the whole
  local day, a half-open UTC range that is 23 or 25 hours long on DST days: `= today` means
  "during today", `< today` before its first instant, `<= today` before tomorrow's first instant,
  `> today` from tomorrow's first instant, `between [a, b]` from the start of day a to the end of
  day b.
- **Arithmetic.** Days, weeks, months and years move the local calendar date or wall-clock time;
  months and years use relativedelta, so Jan 31 + 1 month is Feb 28, and `end of month - 1 month`
  is the last day of the previous month (a month end stays a month end). Hours and minutes are
  elapsed time. Weeks start on Monday. Instants have whole-second precision, like stored values.
- **Text.** `=` and `in` compare exactly; `contains` and `starts with` ignore case.
- **Users.** `owner` and user fields take a user id or a username.

The modules, one per concern: `parse` (plain data to nodes), `timevalues` (absolute and relative
days and instants), `checked` (the nodes of a checked filter), `typecheck` (checking against a
record type) and `resolve` (predicates at a moment). This package re-exports their public names,
so callers import from `crmflow.engine.querylang`.
"""

from __future__ import annotations

from crmflow.engine.querylang.checked import (
    BUILTIN_FIELDS,
    CheckedCondition,
    CheckedGroup,
    CheckedNode,
    FieldRef,
    Operand,
    Username,
)
from crmflow.engine.querylang.parse import (
    Condition,
    FilterNode,
    Group,
    Op,
    filter_to_data,
    parse_filter,
)
from crmflow.engine.querylang.resolve import (
    CheckedFilter,
    Compare,
    Empty,
    OneOf,
    Pred,
    PredGroup,
    TextMatch,
    Value,
)
from crmflow.engine.querylang.timevalues import (
    RELATIVE_FORMS,
    DayValue,
    InstantValue,
    RelativeTime,
    day_start,
    parse_time_value,
)
from crmflow.engine.querylang.typecheck import ALLOWED_OPS, check_filter

__all__ = [
    "ALLOWED_OPS",
    "BUILTIN_FIELDS",
    "RELATIVE_FORMS",
    "CheckedCondition",
    "CheckedFilter",
    "CheckedGroup",
    "CheckedNode",
    "Compare",
    "Condition",
    "DayValue",
    "Empty",
    "FieldRef",
    "FilterNode",
    "Group",
    "InstantValue",
    "OneOf",
    "Op",
    "Operand",
    "Pred",
    "PredGroup",
    "RelativeTime",
    "TextMatch",
    "Username",
    "Value",
    "check_filter",
    "day_start",
    "filter_to_data",
    "parse_filter",
    "parse_time_value",
]
