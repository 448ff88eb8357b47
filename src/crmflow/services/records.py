"""Records of any type: create, update, delete, get, list; every change leaves a change event."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

__all__ = ["RecordView", "record_view"]


@dataclass(frozen=True)
class RecordView:
    id: int
    type: str
    owner_id: int | None
    created_at: datetime
    updated_at: datetime
    data: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": self.type,
            "owner_id": self.owner_id,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
            "data": self.data,
        }


def record_view(row: sa.Row[Any]) -> RecordView:
    """A view of a row selected from the `records` table."""
    return RecordView(
        id=row.id,
        type=row.type,
        owner_id=row.owner_id,
        created_at=row.created_at,
        updated_at=row.updated_at,
        data=dict(row.data),
    )
