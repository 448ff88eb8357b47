"""The files of records' `file` fields: uploaded, read and deleted one per record and field,
and read by the dispatcher for the emails whose `attachments:` name them.

A file is bounded where it comes in: at most `max_file_bytes` (CRMFLOW_MAX_FILE_BYTES), and of
a content type `file_types` allows (CRMFLOW_FILE_TYPES), sniffed from its first bytes rather
than taken from the name or the client's word, so a program renamed `quote.pdf` is refused.
Whoever may change a record may change its files (as `records.update_record`).
"""

from __future__ import annotations

import hashlib
import re
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import PurePosixPath, PureWindowsPath

from crmflow.engine.commands import EmailPayload, RecordFileRef
from crmflow.engine.recordtypes import FieldType, RecordType
from crmflow.errors import (
    DeliveryError,
    InvalidInputError,
    NotFoundError,
    PayloadTooLargeError,
    Problem,
)
from crmflow.services.context import Actor, Context
from crmflow.services.record_types import record_type_in
from crmflow.store import record_files as store
from crmflow.store.database import Connection, read_connection
from crmflow.store.history import HistoryEntry, insert_history
from crmflow.store.record_files import FileInfo, StoredFile
from crmflow.store.record_reads import find_record

__all__ = [
    "DEFAULT_FILE_TYPES",
    "AttachmentCache",
    "FileInfo",
    "StoredFile",
    "allowed_types",
    "check_upload",
    "clean_filename",
    "delete_file",
    "email_attachments",
    "file_too_large",
    "get_file",
    "list_files",
    "put_file",
    "sniff_content_type",
]

PDF = "application/pdf"
ZIP = "application/zip"
OCTET_STREAM = "application/octet-stream"
_OOXML = "application/vnd.openxmlformats-officedocument"
_ODF = "application/vnd.oasis.opendocument"
# What an office document in a ZIP container is, by its name's extension (the container alone
# does not say which program wrote it).
_ZIP_KINDS = {
    ".docx": f"{_OOXML}.wordprocessingml.document",
    ".xlsx": f"{_OOXML}.spreadsheetml.sheet",
    ".pptx": f"{_OOXML}.presentationml.presentation",
    ".odt": f"{_ODF}.text",
    ".ods": f"{_ODF}.spreadsheet",
}
_OLE_KINDS = {".doc": "application/msword", ".xls": "application/vnd.ms-excel"}
_TEXT_KINDS = {".csv": "text/csv", ".ics": "text/calendar"}
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"%PDF-", PDF),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)
DEFAULT_FILE_TYPES = (
    PDF,
    "image/png",
    "image/jpeg",
    "image/gif",
    "image/webp",
    "text/plain",
    "text/csv",
    "text/calendar",
    *_ZIP_KINDS.values(),
    *_OLE_KINDS.values(),
    ZIP,
)
# Text is UTF-8 without control characters other than tab, line ends and form feed.
_BINARY_TEXT = re.compile(rb"[\x00-\x08\x0b\x0e-\x1f\x7f]")
_MAX_FILENAME = 255


def sniff_content_type(content: bytes, filename: str) -> str:
    """The content type of `content` from its first bytes (its magic number); the name's
    extension only tells apart what one container holds (a .docx from a .xlsx, a .csv from
    plain text). application/octet-stream when the bytes are none of the known kinds."""
    head = content[:16]
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    suffix = PurePosixPath(filename.lower()).suffix
    if head.startswith(b"RIFF") and content[8:12] == b"WEBP":
        return "image/webp"
    if head.startswith(b"PK\x03\x04"):
        return _ZIP_KINDS.get(suffix, ZIP)
    if head.startswith(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"):
        return _OLE_KINDS.get(suffix, OCTET_STREAM)
    if content and _BINARY_TEXT.search(content[:65536]) is None:
        try:
            content.decode("utf-8")
        except UnicodeDecodeError:
            return OCTET_STREAM
        return _TEXT_KINDS.get(suffix, "text/plain")
    return OCTET_STREAM


def allowed_types(setting: str | None) -> frozenset[str] | None:
    """The content types CRMFLOW_FILE_TYPES allows (None: any, for `*`)."""
    if setting is None or not setting.strip():
        return frozenset(DEFAULT_FILE_TYPES)
    listed = {t.strip().lower() for t in setting.split(",") if t.strip()}
    return None if "*" in listed else frozenset(listed)


def _megabytes(size: int) -> str:
    return f"{size / 1_000_000:,.1f} MB" if size >= 100_000 else f"{size:,} bytes"


def clean_filename(filename: str) -> str:
    """The file's own name (a client may send its path): no directories, no control
    characters, at most 255 characters; InvalidInputError when nothing is left."""
    name = PureWindowsPath(PurePosixPath(filename).name).name.strip()
    problem = None
    if not name or name in (".", ".."):
        problem = "is empty: give the file's name (e.g. contract.pdf)"
    elif any(ord(c) < 32 or ord(c) == 127 for c in name):
        problem = "holds a control character (a line break?): rename the file"
    elif len(name) > _MAX_FILENAME:
        problem = f"is {len(name)} characters long; at most {_MAX_FILENAME}: rename the file"
    if problem is not None:
        raise InvalidInputError("the file", [Problem("filename", problem)])
    return name


def _file_field(conn: Connection, record_id: int, field: str, *, lock: bool = False) -> RecordType:
    """The record's type, when the record exists and `field` is one of its file fields."""
    record = find_record(conn, record_id, for_update=lock)
    if record is None:
        raise NotFoundError(f"no record with id {record_id}")
    rtype = record_type_in(conn, record.type)
    fdef = rtype.field(field)
    if fdef is None or fdef.type is not FieldType.FILE:
        files = [f.key for f in rtype.fields if f.type is FieldType.FILE]
        what = (
            f"the {rtype.key} record type has no field {field!r}"
            if fdef is None
            else f"{field!r} is a {fdef.type} field of the {rtype.key} record, not a file field"
        )
        raise InvalidInputError(
            f"record {record_id}",
            [
                Problem(
                    "field",
                    what,
                    f"its file fields: {', '.join(files)}"
                    if files
                    else f"add one to the type: {{key: {field}, type: file}} "
                    "(`crmflow types load FILE`)",
                )
            ],
        )
    return rtype


def file_too_large(ctx: Context, filename: str, size: int) -> PayloadTooLargeError | None:
    """Why a file of `size` bytes may not be kept (None: it may), naming the setting."""
    limit = ctx.settings.max_file_bytes
    if size <= limit:
        return None
    return PayloadTooLargeError(
        f"the file {filename} is {size:,} bytes; a file field holds at most {limit:,} bytes "
        "(the server's max_file_bytes): send a smaller file, or an administrator raises "
        "CRMFLOW_MAX_FILE_BYTES"
    )


def check_upload(ctx: Context, filename: str, content: bytes) -> tuple[str, str]:
    """The clean file name and the sniffed content type of an upload, or why it is refused:
    too large (PayloadTooLargeError) or of a type not allowed (InvalidInputError)."""
    name = clean_filename(filename)
    too_large = file_too_large(ctx, name, len(content))
    if too_large is not None:
        raise too_large
    if not content:
        raise InvalidInputError("the file", [Problem("content", f"{name} is empty (0 bytes)")])
    kind = sniff_content_type(content, name)
    allowed = allowed_types(ctx.settings.file_types)
    if allowed is not None and kind not in allowed:
        raise InvalidInputError(
            f"the file {name}",
            [
                Problem(
                    "content_type",
                    f"its content is {kind} (read from its first bytes, whatever its name "
                    "says), which the server does not take",
                    f"allowed: {', '.join(sorted(allowed))}; an administrator may add it to "
                    "CRMFLOW_FILE_TYPES (`*` takes any)",
                )
            ],
        )
    return name, kind


def put_file(
    ctx: Context, actor: Actor, record_id: int, field: str, filename: str, content: bytes
) -> tuple[FileInfo, bool]:
    """Keep `content` as the file of the record's file field, replacing the one it had; the
    file's description and whether it replaced one. The record's history says who did it."""
    name, kind = check_upload(ctx, filename, content)
    now = ctx.now()
    info = FileInfo(
        record_id=record_id,
        field=field,
        filename=name,
        content_type=kind,
        size=len(content),
        sha256=hashlib.sha256(content).hexdigest(),
        created_at=now,
        created_by=actor.id,
    )
    with ctx.engine.begin() as conn:
        _file_field(conn, record_id, field, lock=True)  # uploads to one record queue
        replaced = store.save_file(conn, info, content)
        verb = "replaced by" if replaced else "attached as"
        text = f"File {name} ({_megabytes(len(content))}) {verb} {field} by {actor.username}"
        insert_history(conn, [HistoryEntry(record_id, None, text, now)])
    return info, replaced


def get_file(ctx: Context, record_id: int, field: str) -> StoredFile:
    """The file of the record's file field, with its bytes."""
    with read_connection(ctx.engine) as conn:
        _file_field(conn, record_id, field)
        found = store.read_file(conn, record_id, field)
    if found is None:
        raise NotFoundError(
            f"record {record_id} has no file in {field} (upload one with `crmflow records "
            f"attach {record_id} {field} PATH`)"
        )
    return found


def list_files(ctx: Context, record_id: int) -> list[FileInfo]:
    """The record's files, by field (without their bytes)."""
    with read_connection(ctx.engine) as conn:
        if find_record(conn, record_id) is None:
            raise NotFoundError(f"no record with id {record_id}")
        return store.files_of(conn, record_id)


def delete_file(ctx: Context, actor: Actor, record_id: int, field: str) -> None:
    """Delete the file of the record's file field; NotFoundError when it has none."""
    with ctx.engine.begin() as conn:
        _file_field(conn, record_id, field, lock=True)
        info = store.file_info(conn, record_id, field)
        if info is None or not store.delete_file(conn, record_id, field):
            raise NotFoundError(f"record {record_id} has no file in {field}")
        text = f"File {info.filename} removed from {field} by {actor.username}"
        insert_history(conn, [HistoryEntry(record_id, None, text, ctx.now())])


class AttachmentCache:
    """The bytes of record files read for emails, by file (record and field) and checksum, at
    most `max_bytes` together (the least recently used dropped first; a larger file is never
    kept): the emails of a dispatcher's batch that carry the same file (a company's brochure,
    its logo) read it from the database once. A file replaced meanwhile has another checksum,
    so the next email reads and carries the new one."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._kept: OrderedDict[tuple[int, str, str], bytes] = OrderedDict()
        self._bytes = 0
        self.reads = 0  # files' bytes read from the database (tests count them)

    def content(self, conn: Connection, info: FileInfo) -> bytes | None:
        """The bytes of the file `info` describes (kept, or read now); None if it is gone or
        was replaced since `info` was read."""
        key = (info.record_id, info.field, info.sha256)
        kept = self._kept.get(key)
        if kept is not None:
            self._kept.move_to_end(key)
            return kept
        stored = store.read_file(conn, info.record_id, info.field)
        self.reads += 1
        if stored is None or stored.info.sha256 != info.sha256:
            return None
        self._keep(key, stored.content)
        return stored.content

    def clear(self) -> None:
        self._kept.clear()
        self._bytes = 0

    def _keep(self, key: tuple[int, str, str], content: bytes) -> None:
        if len(content) > self.max_bytes:
            return
        self._kept[key] = content
        self._bytes += len(content)
        while self._bytes > self.max_bytes:
            _, dropped = self._kept.popitem(last=False)
            self._bytes -= len(dropped)


def email_attachments(
    ctx: Context, payload: EmailPayload, cache: AttachmentCache | None = None
) -> list[StoredFile]:
    """The record files `payload` names, as they are now (their bytes from `cache` when it
    holds them at the same checksum); DeliveryError (permanent: another attempt would find the
    same) when one is gone or they make the email larger than `max_email_bytes`, said before
    any file's bytes are read."""
    refs = payload.record_files
    if not refs:
        return []
    cache = cache or AttachmentCache(0)
    found: list[StoredFile] = []
    with read_connection(ctx.engine) as conn:
        infos = [(ref, store.file_info(conn, ref.record_id, ref.field)) for ref in refs]
        for ref, info in infos:
            if info is None:
                raise _gone(ref)
        known = [info for _, info in infos if info is not None]
        _check_total(ctx, known)
        for ref, info in zip(refs, known, strict=True):
            content = cache.content(conn, info)
            if content is None:  # deleted or replaced since its description was read
                raise _gone(ref)
            found.append(StoredFile(info, content))
    return found


def _gone(ref: RecordFileRef) -> DeliveryError:
    return DeliveryError(
        f"the attachment {ref.label}: record {ref.record_id} has no file in "
        f"{ref.field} (deleted, or never uploaded): upload it with `crmflow records "
        f"attach {ref.record_id} {ref.field} PATH` and start the step again",
        permanent=True,
    )


def _check_total(ctx: Context, files: Sequence[FileInfo]) -> None:
    total = sum(f.size for f in files)
    # Base64 makes the attachments a third larger on the wire.
    wire = total * 4 // 3
    limit = ctx.settings.max_email_bytes
    if wire > limit:
        names = ", ".join(f"{f.filename} ({_megabytes(f.size)})" for f in files)
        raise DeliveryError(
            f"the attachments ({names}) make the email about {wire:,} bytes once encoded; "
            f"an email carries at most {limit:,} bytes (the server's max_email_bytes): "
            "attach fewer or smaller files, or an administrator raises CRMFLOW_MAX_EMAIL_BYTES",
            permanent=True,
        )
