"""Flow definitions parsed once per flow version: a version that has run never changes, and the
worker, the triggers and the views ask for the same few thousands of times."""

from __future__ import annotations

import weakref

import sqlalchemy as sa

from crmflow.engine.definition import FlowDefinition
from crmflow.services.context import Context

__all__ = ["definitions_cache"]

# Definitions parsed once per flow version, per database (tests open many databases).
_DEFINITIONS: weakref.WeakKeyDictionary[sa.Engine, dict[tuple[int, int], FlowDefinition]] = (
    weakref.WeakKeyDictionary()
)


def definitions_cache(ctx: Context) -> dict[tuple[int, int], FlowDefinition]:
    return _DEFINITIONS.setdefault(ctx.engine, {})
