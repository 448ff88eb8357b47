"""Bringing a database to the current schema and its built-in contents (`crmflow db upgrade`)."""

from __future__ import annotations

import sqlalchemy as sa

from crmflow.engine.recordtypes import BUILTIN_TYPES
from crmflow.services.context import Context
from crmflow.services.users import ensure_system_user
from crmflow.store import migrate
from crmflow.store.schema import record_types

__all__ = ["upgrade_database"]


def upgrade_database(ctx: Context) -> None:
    """Apply migrations, then make the built-in record types and the system user match the code."""
    migrate.upgrade(ctx.engine)
    now = ctx.now()
    with ctx.engine.begin() as conn:
        present = set(
            conn.execute(
                sa.select(record_types.c.key).where(record_types.c.builtin.is_(True))
            ).scalars()
        )
        for rtype in BUILTIN_TYPES.values():
            fields = [f.as_dict() for f in rtype.fields]
            if rtype.key in present:
                conn.execute(
                    record_types.update()
                    .where(record_types.c.key == rtype.key)
                    .values(name=rtype.name, fields=fields, updated_at=now)
                )
            else:
                conn.execute(
                    record_types.insert().values(
                        key=rtype.key,
                        name=rtype.name,
                        builtin=True,
                        fields=fields,
                        created_at=now,
                        updated_at=now,
                    )
                )
    ensure_system_user(ctx)
