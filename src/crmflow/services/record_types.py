"""Record types: the built-in CRM types and the organisation's own, with checked evolution.

A type may always gain optional fields. Removing a field, changing its type, dropping choices or
making a field required is refused while records contradict it, with the number of such records,
so that no stored record ever stops matching its type.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from crmflow.engine.recordtypes import (
    BUILTIN_TYPES,
    FieldType,
    RecordType,
    compare_definitions,
    record_type_from_definition,
)
from crmflow.engine.source import MAX_DOCUMENT_CHARS, parse_source
from crmflow.errors import ConflictError, InvalidInputError, NotFoundError, Problem
from crmflow.services.context import Actor, Context
from crmflow.services.documents import read_document
from crmflow.services.permissions import require_admin
from crmflow.store import record_types as store
from crmflow.store.database import Connection, IntegrityError, read_connection
from crmflow.store.record_files import count_files

__all__ = [
    "catalog",
    "create_record_type",
    "get_record_type",
    "list_record_types",
    "load_record_type_file",
    "update_record_type",
]


def catalog_in(conn: Connection) -> dict[str, RecordType]:
    """Every record type, read on an open connection (for services inside a transaction)."""
    return store.record_type_catalog(conn)


def record_type_in(conn: Connection, key: str) -> RecordType:
    row = store.find_record_type(conn, key)
    if row is None:
        known = ", ".join(store.record_type_keys(conn))
        raise NotFoundError(
            f"no record type {key!r} (known types: {known}; see `crmflow types list`)"
        )
    return store.record_type_from_row(row)


def catalog(ctx: Context) -> dict[str, RecordType]:
    """The built-in types (with any fields the organisation added) and the organisation's own."""
    with read_connection(ctx.engine) as conn:
        return catalog_in(conn)


def list_record_types(ctx: Context) -> list[RecordType]:
    return list(catalog(ctx).values())


def get_record_type(ctx: Context, key: str) -> RecordType:
    with read_connection(ctx.engine) as conn:
        return record_type_in(conn, key)


def _check_references(rtype: RecordType, known: Mapping[str, RecordType]) -> list[Problem]:
    problems = []
    for i, f in enumerate(rtype.fields):
        if (
            f.type is FieldType.REFERENCE
            and f.reference_type
            and f.reference_type not in known
            and f.reference_type != rtype.key
        ):
            problems.append(
                Problem(
                    f"fields[{i}].reference_type",
                    f"no record type {f.reference_type!r}",
                    f"known types: {', '.join(sorted(known))}",
                )
            )
    return problems


def _fields_json(rtype: RecordType) -> list[dict[str, Any]]:
    return [f.as_dict() for f in rtype.fields]


def create_record_type(ctx: Context, actor: Actor, definition: Mapping[str, Any]) -> RecordType:
    """A new, user-defined record type (admins only)."""
    require_admin(actor, "create record types")
    rtype = record_type_from_definition(definition)
    if rtype.key in BUILTIN_TYPES:
        raise ConflictError(
            f"{rtype.key!r} is a built-in record type; add fields to it with "
            "`crmflow types load FILE` (it updates a type that exists) or choose another key"
        )
    now = ctx.now()
    exists = ConflictError(f"a record type {rtype.key!r} already exists (update it instead)")
    try:
        with ctx.engine.begin() as conn:
            known = catalog_in(conn)
            if rtype.key in known:
                raise exists
            problems = _check_references(rtype, known)
            if problems:
                raise InvalidInputError(f"the record type {rtype.key!r}", problems)
            store.insert_record_type(
                conn,
                key=rtype.key,
                name=rtype.name,
                builtin=False,
                fields=_fields_json(rtype),
                now=now,
            )
    except IntegrityError:
        raise exists from None  # created by another request meanwhile
    return RecordType(key=rtype.key, name=rtype.name, fields=rtype.fields)


def update_record_type(
    ctx: Context, actor: Actor, key: str, definition: Mapping[str, Any]
) -> RecordType:
    """Replace the definition of record type `key` (admins only), refusing what records contradict.

    The definition is the whole new type (as in the type file); its `key` may be omitted.
    """
    require_admin(actor, "change record types")
    document = dict(definition)
    document.setdefault("key", key)
    if document["key"] != key:
        raise InvalidInputError(
            f"the record type {key!r}",
            [Problem("key", f"is {document['key']!r}, not {key!r}", "a type's key cannot change")],
        )
    document.pop("builtin", None)
    new = record_type_from_definition(document)
    with ctx.engine.begin() as conn:
        known = catalog_in(conn)
        old = known.get(key)
        if old is None:
            record_type_in(conn, key)  # raises NotFoundError listing the known types
            raise AssertionError("unreachable")  # pragma: no cover
        problems = _check_references(new, known)
        if old.builtin:
            problems.extend(_builtin_problems(new))
        for change in compare_definitions(old, new):
            if change.change == "choices_removed":
                count = store.count_with_value_in(conn, key, change.key, change.removed_choices)
            elif change.change == "now_required":
                count = store.count_without_value(conn, key, change.key)
            elif _is_file_field(old, change.key):
                # A file field's files are kept beside the records, not in their values.
                count = count_files(conn, key, change.key)
                if count:
                    noun = "record keeps a file" if count == 1 else "records keep a file"
                    problems.append(
                        Problem(
                            f"fields.{change.key}",
                            f"{change.detail}, but {count} {key} {noun} in it",
                            "delete those files first (`crmflow records detach ID FIELD`)",
                        )
                    )
                continue
            else:
                count = store.count_with_value(conn, key, change.key)
            if count:
                noun = "record has" if count == 1 else "records have"
                problems.append(
                    Problem(
                        f"fields.{change.key}",
                        f"{change.detail}, but {count} {key} {noun} "
                        + ("no value for it" if change.change == "now_required" else "a value"),
                        "update or clear those records first",
                    )
                )
        if problems:
            raise InvalidInputError(f"the change to record type {key!r}", problems)
        store.update_record_type(conn, key, name=new.name, fields=_fields_json(new), now=ctx.now())
    return RecordType(key=new.key, name=new.name, fields=new.fields, builtin=old.builtin)


def _is_file_field(rtype: RecordType, key: str) -> bool:
    found = rtype.field(key)
    return found is not None and found.type is FieldType.FILE


def _builtin_problems(new: RecordType) -> list[Problem]:
    """A built-in type may gain fields and choices but keeps the fields crmflow ships."""
    shipped = BUILTIN_TYPES[new.key]
    problems = []
    for f in shipped.fields:
        now = new.field(f.key)
        if now is None:
            problems.append(Problem(f"fields.{f.key}", "is a built-in field and cannot be removed"))
        elif now.type is not f.type or now.reference_type != f.reference_type:
            problems.append(
                Problem(f"fields.{f.key}", "is a built-in field and cannot change its type")
            )
        elif set(f.choices) - set(now.choices):
            problems.append(
                Problem(f"fields.{f.key}.choices", "a built-in choice cannot be removed")
            )
    return problems


def read_definition_file(path: Path, *, max_chars: int = MAX_DOCUMENT_CHARS) -> Any:
    """The document in a YAML or JSON type file (YAML 1.2, so `12:30` and `on` stay text),
    read within the document limits (size, nesting, aliases, numbers)."""
    what = f"the record type file {path}"
    text = read_document(path, what=what, max_chars=max_chars)
    fmt: Literal["json"] | None = "json" if path.suffix.lower() == ".json" else None
    return parse_source(text, source=str(path), fmt=fmt, max_chars=max_chars).data


def load_record_type_file(ctx: Context, actor: Actor, path: str | Path) -> RecordType:
    """Create the record type a file describes, or update it when it already exists."""
    file = Path(path)
    document = read_definition_file(file, max_chars=ctx.settings.max_document_chars)
    try:
        key = document.get("key") if isinstance(document, Mapping) else None
        with read_connection(ctx.engine) as conn:
            exists = isinstance(key, str) and store.find_record_type(conn, key) is not None
        if exists:
            return update_record_type(ctx, actor, str(key), document)
        return create_record_type(ctx, actor, document)
    except InvalidInputError as exc:
        raise InvalidInputError(
            f"the record type file {file}",
            [
                Problem(p.path, p.message, p.hint, line=p.line, source=str(file))
                for p in exc.problems
            ],
        ) from None
