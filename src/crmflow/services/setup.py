"""Bringing a database to the current schema and its built-in contents (`crmflow db upgrade`)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from crmflow.engine.recordtypes import BUILTIN_TYPES, FieldDef, FieldType, RecordType
from crmflow.errors import ConflictError
from crmflow.services.context import Context
from crmflow.services.users import ensure_system_user
from crmflow.store import migrate
from crmflow.store import record_types as stored_types

__all__ = ["prepare_to_serve", "upgrade_database"]


def prepare_to_serve(ctx: Context) -> bool:
    """Make the database ready for `crmflow serve`: a new or empty one (no tables at all) is
    set up, so that the embedded default just works, and True is answered. One at another
    migration is left alone (upgrading a database that holds data is the operator's decision,
    after a backup): ConflictError says what to run."""
    current, head = migrate.current_revision(ctx.engine), migrate.head_revision()
    if current == head:
        return False
    if current is None and not migrate.has_tables(ctx.engine):
        upgrade_database(ctx)
        return True
    _refuse_a_newer_database(current, head)
    found = f"at migration {current}" if current else "not empty but has no crmflow migration"
    raise ConflictError(
        f"the database is {found}, and this crmflow needs migration {head}; "
        "run `crmflow db upgrade` first (after a backup)"
    )


def _refuse_a_newer_database(current: str | None, head: str | None) -> None:
    """A database a newer crmflow upgraded (during an upgrade, docs/deploy.md) is refused in
    words: this crmflow can neither go there nor back, and its code may not fit the schema."""
    if current is not None and not migrate.is_known(current):
        raise ConflictError(
            f"the database is at migration {current}, newer than this crmflow knows (its "
            f"newest is {head}): a newer crmflow upgraded it; run that version instead"
        )


def upgrade_database(ctx: Context) -> None:
    """Apply migrations, then make the built-in record types and the system user match the code."""
    current, head = migrate.current_revision(ctx.engine), migrate.head_revision()
    _refuse_a_newer_database(current, head)
    if current != head:  # at head Alembic has nothing to do, but would read every migration again
        migrate.upgrade(ctx.engine)
    now = ctx.now()
    with ctx.engine.begin() as conn:
        present = {
            row.key: row.fields for row in stored_types.all_record_types(conn) if row.builtin
        }
        for rtype in BUILTIN_TYPES.values():
            fields = _merged_fields(rtype, present.get(rtype.key) or [])
            if rtype.key in present:
                stored_types.update_record_type(
                    conn, rtype.key, name=rtype.name, fields=fields, now=now
                )
            else:
                stored_types.insert_record_type(
                    conn, key=rtype.key, name=rtype.name, builtin=True, fields=fields, now=now
                )
    ensure_system_user(ctx)


def _merged_fields(shipped: RecordType, stored: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The shipped fields of a built-in type, plus what the organisation added to it: its own
    fields, and extra choices on built-in choice fields. An upgrade never drops either."""
    stored_by_key = {f["key"]: FieldDef.from_dict(f) for f in stored}
    merged: list[dict[str, Any]] = []
    for field in shipped.fields:
        mine = stored_by_key.pop(field.key, None)
        if mine is not None and field.type is FieldType.CHOICE and mine.type is FieldType.CHOICE:
            extra = tuple(c for c in mine.choices if c not in field.choices)
            merged.append(replace(field, choices=field.choices + extra).as_dict())
        else:
            merged.append(field.as_dict())
    merged.extend(f.as_dict() for f in stored_by_key.values())
    return merged
