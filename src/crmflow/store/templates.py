"""Stored email templates (`email_templates`): the only module that reads or writes them.

A template is kept as its whole document (a JSON column) under its name; `services.templates`
checks a document before it is written and renders it when a message is sent.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from crmflow.store.schema import email_templates

__all__ = ["StoredTemplate", "find_template", "list_templates", "save_template", "template_names"]


@dataclass(frozen=True)
class StoredTemplate:
    """A row of `email_templates`: the document as it was loaded, and who loaded it when."""

    name: str
    document: dict[str, Any]
    updated_at: datetime
    updated_by: str | None


def _stored(row: sa.Row[Any]) -> StoredTemplate:
    return StoredTemplate(row.name, dict(row.document), row.updated_at, row.updated_by)


def find_template(conn: sa.Connection, name: str) -> StoredTemplate | None:
    row = conn.execute(sa.select(email_templates).where(email_templates.c.name == name)).first()
    return _stored(row) if row is not None else None


def list_templates(conn: sa.Connection) -> list[StoredTemplate]:
    """Every template, by name."""
    query = sa.select(email_templates).order_by(email_templates.c.name)
    return [_stored(row) for row in conn.execute(query)]


def template_names(conn: sa.Connection) -> frozenset[str]:
    """The names of the stored templates (what a flow's `template:` may name)."""
    return frozenset(conn.execute(sa.select(email_templates.c.name)).scalars())


def save_template(
    conn: sa.Connection, name: str, document: dict[str, Any], *, at: datetime, by: str | None
) -> bool:
    """Write the template `name` (replacing the one of that name); True when it is new."""
    replace = (
        sa.update(email_templates)
        .where(email_templates.c.name == name)
        .values(document=document, updated_at=at, updated_by=by)
    )
    if conn.execute(replace).rowcount:
        return False
    try:
        # A savepoint: another writer may create the same name between the update and this
        # insert; then theirs is replaced, as if this write had come second.
        with conn.begin_nested():
            conn.execute(
                sa.insert(email_templates).values(
                    name=name, document=document, updated_at=at, updated_by=by
                )
            )
    except sa.exc.IntegrityError:
        conn.execute(replace)
        return False
    return True
