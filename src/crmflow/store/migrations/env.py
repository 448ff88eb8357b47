"""Alembic environment: the engine comes from `crmflow.store.migrate` (or the settings)."""

from __future__ import annotations

from alembic import context

from crmflow.settings import get_settings
from crmflow.store.database import create_db_engine
from crmflow.store.schema import metadata

config = context.config
engine = config.attributes.get("engine") or create_db_engine(get_settings().database_url)

with engine.begin() as connection:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    context.run_migrations()
