"""The files of records' `file` fields (`record_files`): the only module that reads or writes
them. One file per record and field; `services.record_files` checks a file before it is kept."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from crmflow.store.schema import record_files, records

__all__ = [
    "FileInfo",
    "StoredFile",
    "count_files",
    "delete_file",
    "file_info",
    "files_of",
    "read_file",
    "save_file",
]


@dataclass(frozen=True)
class FileInfo:
    """What is known of a kept file without its bytes."""

    record_id: int
    field: str
    filename: str
    content_type: str
    size: int
    sha256: str
    created_at: datetime
    created_by: int | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "record_id": self.record_id,
            "field": self.field,
            "filename": self.filename,
            "content_type": self.content_type,
            "size": self.size,
            "sha256": self.sha256,
            "created_at": self.created_at.isoformat(),
        }


@dataclass(frozen=True)
class StoredFile:
    info: FileInfo
    content: bytes


_INFO_COLUMNS = (
    record_files.c.record_id,
    record_files.c.field,
    record_files.c.filename,
    record_files.c.content_type,
    record_files.c.size,
    record_files.c.sha256,
    record_files.c.created_at,
    record_files.c.created_by,
)


def _info(row: Any) -> FileInfo:
    return FileInfo(
        record_id=row.record_id,
        field=row.field,
        filename=row.filename,
        content_type=row.content_type,
        size=row.size,
        sha256=row.sha256,
        created_at=row.created_at,
        created_by=row.created_by,
    )


def _one(record_id: int, field: str) -> sa.ColumnElement[bool]:
    return sa.and_(record_files.c.record_id == record_id, record_files.c.field == field)


def save_file(conn: sa.Connection, info: FileInfo, content: bytes) -> bool:
    """Keep `content` as the file of the record's field, replacing the one it had; True when it
    replaced one. The caller holds the record's row lock (two uploads to one field queue)."""
    replaced = conn.execute(
        sa.delete(record_files).where(_one(info.record_id, info.field))
    ).rowcount
    conn.execute(
        sa.insert(record_files).values(
            record_id=info.record_id,
            field=info.field,
            filename=info.filename,
            content_type=info.content_type,
            size=info.size,
            sha256=info.sha256,
            content=content,
            created_at=info.created_at,
            created_by=info.created_by,
        )
    )
    return bool(replaced)


def file_info(conn: sa.Connection, record_id: int, field: str) -> FileInfo | None:
    row = conn.execute(sa.select(*_INFO_COLUMNS).where(_one(record_id, field))).first()
    return _info(row) if row is not None else None


def read_file(conn: sa.Connection, record_id: int, field: str) -> StoredFile | None:
    """The file with its bytes, or None when the field has none."""
    query = sa.select(*_INFO_COLUMNS, record_files.c.content).where(_one(record_id, field))
    row = conn.execute(query).first()
    return StoredFile(_info(row), bytes(row.content)) if row is not None else None


def files_of(conn: sa.Connection, record_id: int) -> list[FileInfo]:
    """The record's files, by field."""
    query = (
        sa.select(*_INFO_COLUMNS)
        .where(record_files.c.record_id == record_id)
        .order_by(record_files.c.field)
    )
    return [_info(row) for row in conn.execute(query)]


def delete_file(conn: sa.Connection, record_id: int, field: str) -> bool:
    """Delete the field's file; False when it had none."""
    return bool(conn.execute(sa.delete(record_files).where(_one(record_id, field))).rowcount)


def count_files(conn: sa.Connection, record_type: str, field: str) -> int:
    """How many records of `record_type` keep a file in `field`."""
    query = (
        sa.select(sa.func.count())
        .select_from(record_files.join(records, records.c.id == record_files.c.record_id))
        .where(records.c.type == record_type, record_files.c.field == field)
    )
    return int(conn.execute(query).scalar_one())
