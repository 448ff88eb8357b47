"""Records: create, read, update, delete, list, change events, bulk import and export."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from typing import Annotated, Any, Literal, TextIO, cast

from fastapi import (
    APIRouter,
    Depends,
    Path,
    Query,
    Request,
    Response,
    UploadFile,
    status,
)
from fastapi.responses import StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel

from crmflow.api.deps import (
    AfterId,
    CurrentActor,
    PageLimit,
    RowId,
    ServiceContext,
    WebhookId,
    WebhookSignature,
    WebhookTimestamp,
)
from crmflow.api.limits import GuardedRoute
from crmflow.api.preconditions import (
    NOT_MODIFIED,
    PRECONDITION_FAILED,
    IfMatch,
    IfNoneMatch,
    expected_version,
    not_modified,
    set_etag,
)
from crmflow.api.responses.records import (
    ImportReport,
    Record,
    RecordChangePage,
    RecordPage,
    SyncReport,
)
from crmflow.errors import InvalidInputError, NotFoundError, Problem
from crmflow.services import imports, record_sync, records
from crmflow.services.context import Context

router = APIRouter(prefix="/api", tags=["records"], route_class=GuardedRoute)


class RecordWrite(BaseModel):
    data: dict[str, Any]
    owner: str | int | None = None


def _record_of_type(ctx: Context, type_key: str, record_id: int) -> records.RecordView:
    record = records.get_record(ctx, record_id)
    if record.type != type_key:
        raise NotFoundError(f"record {record_id} is a {record.type}, not a {type_key}")
    return record


@router.get("/records/{type_key}", response_model=RecordPage)
def list_records(
    ctx: ServiceContext,
    _actor: CurrentActor,
    type_key: str,
    after: AfterId | None = None,
    limit: PageLimit = 50,
) -> dict[str, Any]:
    """One page of records ordered by id; pass `next_after` back as `after`."""
    page = records.list_records(ctx, type_key, after=after, limit=limit)
    return page.as_dict(lambda r: r.as_dict())


@router.post("/records/{type_key}", status_code=status.HTTP_201_CREATED, response_model=Record)
def create_record(
    ctx: ServiceContext, actor: CurrentActor, type_key: str, body: RecordWrite, response: Response
) -> dict[str, Any]:
    record = records.create_record(ctx, actor, type_key, body.data, owner=body.owner)
    set_etag(response, record.version)
    return record.as_dict()


# The export is a file, not JSON: its two media types are declared so the OpenAPI document
# describes this answer too.
_EXPORT_ANSWER: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The records as a file: CSV with a header row, or one JSON object per line.",
        "content": {
            "text/csv": {"schema": {"type": "string"}},
            "application/x-ndjson": {"schema": {"type": "string"}},
        },
    }
}


@router.get(
    "/records/{type_key}/export", response_class=StreamingResponse, responses=_EXPORT_ANSWER
)
def export_records(
    ctx: ServiceContext,
    _actor: CurrentActor,
    type_key: str,
    fmt: Literal["csv", "jsonl"] = "jsonl",
) -> StreamingResponse:
    # Spooled: small exports stay in memory, large ones go to a temporary file, never all in RAM.
    spool = tempfile.SpooledTemporaryFile(  # noqa: SIM115 - closed by chunks() once streamed
        max_size=8 * 1024 * 1024, mode="w+", encoding="utf-8"
    )
    imports.export_records(ctx, type_key, cast(TextIO, spool), fmt=fmt)
    spool.seek(0)

    def chunks() -> Iterator[str]:
        with spool:
            while chunk := spool.read(64 * 1024):
                yield chunk

    media = "text/csv" if fmt == "csv" else "application/x-ndjson"
    return StreamingResponse(
        chunks(),
        media_type=media,
        headers={"Content-Disposition": f'attachment; filename="{type_key}.{fmt}"'},
    )


ExternalId = Annotated[
    str,
    Path(
        description="The id the existing CRM knows the record by (unique per record type)",
        max_length=record_sync.EXTERNAL_ID_CHARS,
    ),
]


@router.get(
    "/records/{type_key}/external/{external_id}", response_model=Record, responses=NOT_MODIFIED
)
def get_external_record(
    ctx: ServiceContext,
    _actor: CurrentActor,
    type_key: str,
    external_id: ExternalId,
    response: Response,
    if_none_match: IfNoneMatch = None,
) -> dict[str, Any] | Response:
    """The record with this external id; its version is the ETag, as for a record by id."""
    record = record_sync.get_external(ctx, type_key, external_id)
    if (unchanged := not_modified(if_none_match, record.version)) is not None:
        return unchanged
    set_etag(response, record.version)
    return record.as_dict()


@router.put(
    "/records/{type_key}/external/{external_id}",
    response_model=Record,
    responses={
        **PRECONDITION_FAILED,
        201: {"model": Record, "description": "No record had this external id: created"},
    },
)
def upsert_external_record(
    ctx: ServiceContext,
    actor: CurrentActor,
    type_key: str,
    external_id: ExternalId,
    body: RecordWrite,
    response: Response,
    if_match: IfMatch = None,
) -> dict[str, Any]:
    """Create the record with this external id (201; `data` is then a whole record), or change
    the fields `data` gives on the one that has it (200; null clears a field, the others keep
    their value). With If-Match, only if the record exists at that version."""
    expected = expected_version(if_match)
    done = record_sync.upsert_external(
        ctx, actor, type_key, external_id, body.data, owner=body.owner, if_version=expected
    )
    response.status_code = status.HTTP_201_CREATED if done.created else status.HTTP_200_OK
    set_etag(response, done.record.version)
    return done.record.as_dict()


_sync_bearer = HTTPBearer(
    auto_error=False,
    description="A manager's or admin's API token, unless the body is signed with the server's "
    "CRMFLOW_SYNC_SECRET",
)


async def _changes_body(request: Request) -> bytes:
    """The body exactly as sent (the signature is over these bytes), within the request cap."""
    return await request.body()


@router.post(
    "/records/{type_key}/changes",
    response_model=SyncReport,
    openapi_extra={
        "requestBody": {
            "required": True,
            # Declared as text/plain, which every client (and OpenAPI tool) can send; any
            # content type is read the same way, application/x-ndjson included.
            "description": "JSON Lines, one change per line: "
            '{"op": "upsert", "external_id": "crm-42", "data": {...}, "owner": "maria"} or '
            '{"op": "delete", "external_id": "crm-17"} (application/x-ndjson or text/plain)',
            "content": {"text/plain": {"schema": {"type": "string"}}},
        }
    },
    responses={
        401: {"description": "Neither a valid signature nor a token: says which"},
        403: {"description": "The token's user is not a manager or an admin"},
    },
)
def apply_record_changes(
    ctx: ServiceContext,
    type_key: str,
    body: Annotated[bytes, Depends(_changes_body)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_sync_bearer)],
    webhook_id: WebhookId = None,
    webhook_timestamp: WebhookTimestamp = None,
    webhook_signature: WebhookSignature = None,
) -> dict[str, Any]:
    """Apply a batch of changes by external id, JSON Lines (see docs/integrations.md): each bad
    line is reported with its number and why, the others are applied, in one transaction. Every
    change is made as a change in crmflow is, so it triggers flows."""
    signature = record_sync.Signature(webhook_id, webhook_timestamp, webhook_signature)
    token = credentials.credentials if credentials is not None else None
    actor = record_sync.authenticate_sync(ctx, body, signature, token)
    return record_sync.apply_changes(ctx, actor, type_key, body).as_dict()


@router.get("/records/{type_key}/{record_id}", response_model=Record, responses=NOT_MODIFIED)
def get_record(
    ctx: ServiceContext,
    _actor: CurrentActor,
    type_key: str,
    record_id: RowId,
    response: Response,
    if_none_match: IfNoneMatch = None,
) -> dict[str, Any] | Response:
    """The record, with its version in the body and as the ETag (send it back as If-Match);
    304 with no body when If-None-Match names that version."""
    record = _record_of_type(ctx, type_key, record_id)
    if (unchanged := not_modified(if_none_match, record.version)) is not None:
        return unchanged
    set_etag(response, record.version)
    return record.as_dict()


@router.patch(
    "/records/{type_key}/{record_id}", response_model=Record, responses=PRECONDITION_FAILED
)
def update_record(
    ctx: ServiceContext,
    actor: CurrentActor,
    type_key: str,
    record_id: RowId,
    body: RecordWrite,
    response: Response,
    if_match: IfMatch = None,
) -> dict[str, Any]:
    """Change the given fields; with If-Match, only if the record is still at that version."""
    expected = expected_version(if_match)
    _record_of_type(ctx, type_key, record_id)
    record = records.update_record(
        ctx, actor, record_id, body.data, owner=body.owner, if_version=expected
    )
    set_etag(response, record.version)
    return record.as_dict()


@router.delete(
    "/records/{type_key}/{record_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=PRECONDITION_FAILED,
)
def delete_record(
    ctx: ServiceContext,
    actor: CurrentActor,
    type_key: str,
    record_id: RowId,
    if_match: IfMatch = None,
) -> None:
    """Delete the record; with If-Match, only if it is still at that version."""
    expected = expected_version(if_match)
    _record_of_type(ctx, type_key, record_id)
    records.delete_record(ctx, actor, record_id, if_version=expected)


@router.get("/records/{type_key}/{record_id}/changes", response_model=RecordChangePage)
def record_changes(
    ctx: ServiceContext,
    _actor: CurrentActor,
    type_key: str,
    record_id: RowId,
    after: AfterId | None = None,
    limit: PageLimit = 100,
) -> dict[str, Any]:
    page = records.record_changes(ctx, record_id, after=after, limit=limit)
    # The record may be deleted (its changes outlive it), so check the type on the changes.
    if any(change.record_type != type_key for change in page.items):
        raise NotFoundError(f"record {record_id} is not a {type_key}")
    return page.as_dict(lambda c: c.as_dict())


@router.get("/changes", response_model=RecordChangePage)
def change_feed(
    ctx: ServiceContext, _actor: CurrentActor, after: AfterId | None = None, limit: PageLimit = 500
) -> dict[str, Any]:
    """Every record change, in order: what triggers flows."""
    page = records.change_feed(ctx, after=after, limit=limit)
    return page.as_dict(lambda c: c.as_dict())


@router.post("/records/{type_key}/import", response_model=ImportReport)
def import_records(
    ctx: ServiceContext,
    actor: CurrentActor,
    type_key: str,
    file: UploadFile,
    fmt: Literal["csv", "jsonl"] | None = None,
    all_or_nothing: bool = False,
    upsert_by: Annotated[
        str | None,
        Query(
            description="`external_id` or a field key: a row naming an existing record (by its "
            "`external_id` column, or by that field's value, unique among the type's records) "
            "updates it instead of adding a copy"
        ),
    ] = None,
) -> dict[str, Any]:
    """Bulk import a CSV or JSONL file. Good rows are kept and each bad row is reported with its
    line number, unless `all_or_nothing` is set: then any bad row refuses the whole file. With
    `upsert_by`, importing the same file again updates the records, it does not duplicate them."""
    if fmt is None:
        suffix = (file.filename or "").rsplit(".", 1)[-1].lower()
        if suffix not in ("csv", "jsonl", "ndjson"):
            raise InvalidInputError(
                "the import",
                [
                    Problem(
                        "file",
                        f"cannot tell the format of {file.filename!r}",
                        "name it .csv or .jsonl (one JSON object per line), or pass fmt=",
                    )
                ],
            )
        fmt = "csv" if suffix == "csv" else "jsonl"
    # Read as bytes and decoded row by row: a bad byte rejects its row, not the file.
    report = imports.import_records(
        ctx,
        actor,
        type_key,
        file.file,
        fmt=fmt,
        all_or_nothing=all_or_nothing,
        upsert_by=upsert_by,
        source_name=file.filename or "the uploaded file",
    )
    return report.as_dict()
