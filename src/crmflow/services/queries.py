"""Saved queries: named filters over records, checked when saved, counted and previewed in SQL.

The filter language and its semantics (empty fields, days vs instants, time zones) are described
in `crmflow.engine.querylang`; the SQL it compiles to in `crmflow.store.querysql`. Relative
values (`today - 180 days`) are resolved each time a query runs, from the context's clock in the
organisation's time zone.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, tzinfo
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from crmflow.engine.querylang import (
    CheckedFilter,
    check_filter,
    filter_to_data,
    parse_filter,
)
from crmflow.errors import ConflictError, InvalidInputError, NotFoundError, Problem
from crmflow.services.context import Actor, Context
from crmflow.services.documents import parse_document_file
from crmflow.services.paging import DEFAULT_PAGE_SIZE, Page, keyset_page, page_size
from crmflow.services.permissions import require_manager
from crmflow.services.preconditions import ExpectedVersion, require_version
from crmflow.services.record_types import record_type_in
from crmflow.services.records import RecordView, record_view
from crmflow.store import flows as flow_store
from crmflow.store import queries as store
from crmflow.store.database import Connection, IntegrityError, Row, read_connection
from crmflow.store.queries import IdSelect
from crmflow.store.record_types import record_type_keys
from crmflow.store.users import user_ids_by_name

__all__ = [
    "RESERVED_NAMES",
    "QueryView",
    "count_filter",
    "count_query",
    "delete_query",
    "flows_using",
    "get_query",
    "list_queries",
    "load_query_file",
    "matching_ids",
    "preview_filter",
    "preview_query",
    "save_query",
    "update_query",
]

T = TypeVar("T")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$")
_FILE_KEYS = ("name", "record_type", "description", "filter")
# Paths of the web's query builder (/queries/new, /queries/row, /queries/preview): a query saved
# under one of these names could never be opened at /queries/<name>.
RESERVED_NAMES = ("new", "preview", "row")


@dataclass(frozen=True)
class QueryView:
    id: int
    name: str
    record_type: str
    description: str
    filter: dict[str, Any]
    created_by: int | None
    created_at: datetime
    updated_at: datetime
    version: int = 1  # one more on every update: If-Match compares it

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "version": self.version,
            "record_type": self.record_type,
            "description": self.description,
            "filter": self.filter,
            "created_by": self.created_by,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }


def _view(row: Row) -> QueryView:
    return QueryView(
        id=row.id,
        name=row.name,
        record_type=row.record_type,
        description=row.description,
        filter=dict(row.filter),
        created_by=row.created_by,
        created_at=row.created_at,
        updated_at=row.updated_at,
        version=row.version,
    )


def _row(conn: Connection, name: str, *, for_update: bool = False) -> Row:
    row = store.find_saved_query(conn, name, for_update=for_update)
    if row is None:
        raise NotFoundError(
            f"no saved query named {name!r} (see `crmflow queries list` or GET /api/queries)"
        )
    return row


def _check(
    conn: Connection,
    what: str,
    *,
    record_type: str,
    filter: object,
    now: datetime,
    zone: tzinfo,
    name: str | None = None,
) -> tuple[CheckedFilter, dict[str, object]]:
    """The checked filter and its canonical form; every problem at once, each with its path.

    The filter is also resolved at `now`, so that a relative date that falls outside the years
    1 to 9999 (`today - 3000 years`) is refused here, not when a flow runs it."""
    problems: list[Problem] = []
    if name is not None and not _NAME.match(name):
        problems.append(
            Problem(
                "name",
                f"{name!r} is not a valid query name",
                "1 to 100 letters, digits, '-', '_' or '.', e.g. clients-six-months",
            )
        )
    elif name in RESERVED_NAMES:
        problems.append(
            Problem(
                "name",
                f"{name!r} is reserved (the query pages use /queries/{name})",
                f"choose another name, e.g. {name}-clients; reserved: {', '.join(RESERVED_NAMES)}",
            )
        )
    rtype = None
    try:
        rtype = record_type_in(conn, record_type)
    except NotFoundError:
        problems.append(
            Problem(
                "record_type",
                f"unknown record type {record_type!r}",
                f"known types: {', '.join(record_type_keys(conn))}",
            )
        )
    node = None
    try:
        node = parse_filter(filter)
    except InvalidInputError as exc:
        problems.extend(exc.problems)
    checked = None
    if node is not None and rtype is not None:
        try:
            checked = check_filter(node, rtype, existing_users=partial(_existing_users, conn))
        except InvalidInputError as exc:
            problems.extend(exc.problems)
    if checked is not None:
        try:
            checked.resolve(now=now, zone=zone)
        except InvalidInputError as exc:
            problems.extend(exc.problems)
    if problems or checked is None or node is None:
        raise InvalidInputError(what, problems)
    return checked, filter_to_data(node)


def _existing_users(conn: Connection, names: set[str]) -> list[str]:
    return list(user_ids_by_name(conn, names))


def _saved_filter(conn: Connection, row: Row) -> CheckedFilter:
    """A stored query's filter, re-checked: its record type may have changed since it was saved."""
    try:
        node = parse_filter(row.filter)
        return check_filter(node, record_type_in(conn, row.record_type))
    except InvalidInputError as exc:
        raise InvalidInputError(
            f"the saved query {row.name!r} (it no longer passes the checks of record type "
            f"{row.record_type!r}: the type changed, or the query was saved before a check "
            "existed; fix it with `crmflow queries load` or PATCH /api/queries/{name})",
            exc.problems,
        ) from None


def _on_saved(conn: Connection, row: Row, run: Callable[[CheckedFilter], T]) -> T:
    """`run` on a stored query's filter (re-checked): a date that falls outside the years 1 to
    9999 when it is resolved (a query saved before such dates were refused) is an
    InvalidInputError naming the query, not an OverflowError."""
    checked = _saved_filter(conn, row)
    try:
        return run(checked)
    except InvalidInputError as exc:
        raise InvalidInputError(
            f"the saved query {row.name!r} (fix it with `crmflow queries load` or "
            "PATCH /api/queries/{name})",
            exc.problems,
        ) from None


def save_query(
    ctx: Context,
    actor: Actor,
    *,
    name: str,
    record_type: str,
    filter: Mapping[str, Any],
    description: str = "",
) -> QueryView:
    """Create a saved query (managers and admins); ConflictError if the name is taken."""
    require_manager(actor, "save queries")
    now = ctx.now()
    with ctx.engine.begin() as conn:
        _, canonical = _check(
            conn,
            "the saved query",
            name=name,
            record_type=record_type,
            filter=filter,
            now=now,
            zone=ctx.zone,
        )
        if store.saved_query_id(conn, name) is not None:
            raise ConflictError(
                f"a saved query named {name!r} already exists "
                "(change it with `crmflow queries load` or PATCH /api/queries/{name})"
            )
        try:
            query_id = store.insert_saved_query(
                conn,
                name=name,
                record_type=record_type,
                description=description,
                filter=canonical,
                created_by=actor.id,
                now=now,
            )
        except IntegrityError:
            raise ConflictError(f"a saved query named {name!r} already exists") from None
        return _view(store.saved_query_by_id(conn, query_id))


def update_query(
    ctx: Context,
    actor: Actor,
    name: str,
    *,
    filter: Mapping[str, Any] | None = None,
    description: str | None = None,
    record_type: str | None = None,
    if_version: ExpectedVersion = None,
) -> QueryView:
    """Change a saved query (managers and admins); the result is checked whole, as when saved.
    With `if_version`, PreconditionFailedError unless the query is at that version."""
    require_manager(actor, "change saved queries")
    with ctx.engine.begin() as conn:
        row = _row(conn, name, for_update=True)
        _require_version(row, if_version)
        new_type = record_type if record_type is not None else row.record_type
        new_filter = filter if filter is not None else row.filter
        _, canonical = _check(
            conn,
            f"the saved query {name!r}",
            record_type=new_type,
            filter=new_filter,
            now=ctx.now(),
            zone=ctx.zone,
        )
        store.update_saved_query(
            conn,
            row.id,
            record_type=new_type,
            filter=canonical,
            description=description,
            now=ctx.now(),
        )
        return _view(store.saved_query_by_id(conn, row.id))


def _require_version(row: Row, expected: ExpectedVersion) -> None:
    require_version(
        f"saved query {row.name!r}",
        row.version,
        expected,
        read_again=f"GET /api/queries/{row.name} or `crmflow queries show {row.name}`",
    )


def flows_using(conn: Connection, name: str) -> list[str]:
    """Keys of the flows whose current definition starts or schedules from query `name`."""
    return [
        key
        for key, document in flow_store.current_documents(conn)
        if any(t.get("query") == name for t in document.get("triggers") or ())
    ]


def delete_query(
    ctx: Context, actor: Actor, name: str, *, if_version: ExpectedVersion = None
) -> None:
    """Delete a saved query (managers and admins); refused while a flow uses it. With
    `if_version`, PreconditionFailedError unless the query is at that version."""
    require_manager(actor, "delete saved queries")
    with ctx.engine.begin() as conn:
        row = _row(conn, name, for_update=True)
        _require_version(row, if_version)
        users_of = flows_using(conn, name)
        if users_of:
            raise ConflictError(
                f"saved query {name!r} is used by the flow(s) {', '.join(users_of)}; "
                "change those flows first"
            )
        store.delete_saved_query(conn, row.id)


def get_query(ctx: Context, name: str) -> QueryView:
    with read_connection(ctx.engine) as conn:
        return _view(_row(conn, name))


def list_queries(
    ctx: Context, *, after: int | None = None, limit: int = DEFAULT_PAGE_SIZE
) -> Page[QueryView]:
    """Saved queries by id; pass `next_after` back as `after` for the next page."""
    size = page_size(ctx, limit)
    with read_connection(ctx.engine) as conn:
        rows = store.saved_query_page(conn, after=after, limit=size + 1)
    return keyset_page([_view(r) for r in rows], size)


def count_query(ctx: Context, name: str) -> int:
    """How many records the saved query matches now (one `SELECT count(*)`)."""
    now, zone = ctx.now(), ctx.zone
    with read_connection(ctx.engine) as conn:
        return _on_saved(
            conn,
            _row(conn, name),
            lambda checked: store.count_matching(conn, checked, now=now, zone=zone),
        )


def count_filter(ctx: Context, record_type: str, filter: Mapping[str, Any]) -> int:
    """How many records an unsaved filter matches now (try a filter before saving it)."""
    with read_connection(ctx.engine) as conn:
        now = ctx.now()
        checked, _ = _check(
            conn, "the filter", record_type=record_type, filter=filter, now=now, zone=ctx.zone
        )
        return store.count_matching(conn, checked, now=now, zone=ctx.zone)


def preview_query(
    ctx: Context, name: str, *, after: int | None = None, limit: int = DEFAULT_PAGE_SIZE
) -> Page[RecordView]:
    """The records the saved query matches now, by id (keyset paging)."""
    size = page_size(ctx, limit)
    now, zone = ctx.now(), ctx.zone
    with read_connection(ctx.engine) as conn:
        rows = _on_saved(
            conn,
            _row(conn, name),
            lambda checked: store.matching_records(
                conn, checked, now=now, zone=zone, after=after, limit=size + 1
            ),
        )
    return keyset_page([record_view(r) for r in rows], size)


def preview_filter(
    ctx: Context,
    record_type: str,
    filter: Mapping[str, Any],
    *,
    after: int | None = None,
    limit: int = DEFAULT_PAGE_SIZE,
) -> Page[RecordView]:
    """The records an unsaved filter matches now, by id (keyset paging): the same checks as
    saving it (InvalidInputError listing every problem)."""
    size = page_size(ctx, limit)
    with read_connection(ctx.engine) as conn:
        now = ctx.now()
        checked, _ = _check(
            conn, "the filter", record_type=record_type, filter=filter, now=now, zone=ctx.zone
        )
        rows = store.matching_records(
            conn, checked, now=now, zone=ctx.zone, after=after, limit=size + 1
        )
    return keyset_page([record_view(r) for r in rows], size)


def matching_ids(
    ctx: Context,
    conn: Connection,
    name: str,
    *,
    now: datetime | None = None,
    zone: tzinfo | None = None,
) -> IdSelect:
    """`SELECT records.id FROM records WHERE <the saved query>`, not executed.

    For set-based work in the caller's transaction, e.g. enrolling a start list with one
    `INSERT INTO enrollments (...) SELECT ... FROM records WHERE records.id IN (<this>)`, or
    `sa.select(...).where(records.c.id.in_(matching_ids(...)))`. The saved query is read on
    `conn` (so inside the caller's transaction) and compiled for `conn`'s dialect. Relative dates
    are resolved at `now` (default: the context's clock) in `zone` (default: the organisation's
    zone). Raises NotFoundError for an unknown name, InvalidInputError if the query no longer
    fits its record type or one of its dates falls outside the years 1 to 9999. The select is
    unordered; add `.order_by(records.c.id)` if needed.
    """
    at = now if now is not None else ctx.now()
    in_zone = zone if zone is not None else ctx.zone
    return _on_saved(
        conn,
        _row(conn, name),
        lambda checked: store.matching_ids(conn, checked, now=at, zone=in_zone),
    )


def load_query_file(ctx: Context, actor: Actor, path: str | Path) -> QueryView:
    """Create or update the saved query a YAML or JSON file describes::

        name: clients-six-months
        record_type: contact
        description: Contacts who became clients exactly 180 days ago
        filter:
          all:
            - {field: client_since, op: "=", value: "today - 180 days"}

    Problems carry the file name and line.
    """
    require_manager(actor, "save queries")
    file = Path(path)
    what = f"the saved query file {file}"
    max_chars = ctx.settings.max_document_chars
    parsed = parse_document_file(file, what=what, max_chars=max_chars)
    doc = parsed.data

    def located(problems: list[Problem]) -> InvalidInputError:
        return InvalidInputError(
            what,
            [
                Problem(p.path, p.message, p.hint, parsed.line_of(p.path), str(file))
                for p in problems
            ],
        )

    if not isinstance(doc, dict):
        raise located([Problem("", "expected a mapping with name, record_type and filter")])
    problems = [
        Problem(str(key), "unknown key", f"use {', '.join(_FILE_KEYS)}")
        for key in doc
        if key not in _FILE_KEYS
    ]
    for key in ("name", "record_type"):
        if not isinstance(doc.get(key), str) or not doc[key]:
            problems.append(Problem(key, "is missing" if key not in doc else "expected text"))
    if "filter" not in doc:
        problems.append(Problem("filter", "is missing", "use filter: {} to match every record"))
    description = doc.get("description")
    if description is not None and not isinstance(description, str):
        problems.append(Problem("description", "expected text"))
    if problems:
        raise located(problems)
    name, record_type = str(doc["name"]), str(doc["record_type"])
    with read_connection(ctx.engine) as conn:
        exists = store.saved_query_id(conn, name) is not None
    try:
        if exists:
            return update_query(
                ctx,
                actor,
                name,
                filter=doc["filter"] if doc["filter"] is not None else {},
                description=description or "",
                record_type=record_type,
            )
        return save_query(
            ctx,
            actor,
            name=name,
            record_type=record_type,
            filter=doc["filter"] if doc["filter"] is not None else {},
            description=description or "",
        )
    except InvalidInputError as exc:
        raise located(exc.problems) from None
