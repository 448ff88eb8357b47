"""A record's files (its `file` fields): list, upload, download and delete, one per field.

An upload is the file as the raw body (its name in `?filename=` or a Content-Disposition
header) or a multipart form with a `file` part. Whoever may change the record may change its
files; the size and type limits are the server's (services.record_files)."""

from __future__ import annotations

from email.message import Message
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Path, Query, Request, Response, status
from pydantic import BaseModel, Field
from starlette.datastructures import UploadFile

from crmflow.api.deps import CurrentActor, RowId, ServiceContext
from crmflow.api.limits import GuardedRoute
from crmflow.api.responses.runs import Timestamp
from crmflow.errors import InvalidInputError, Problem
from crmflow.services import record_files

router = APIRouter(prefix="/api", tags=["records"], route_class=GuardedRoute)

FieldKey = Annotated[str, Path(max_length=63, description="The record type's file field")]


class RecordFileInfo(BaseModel):
    """A file kept in a record's file field (without its bytes)."""

    record_id: int
    field: str
    filename: str
    content_type: str = Field(description="Read from the file's first bytes")
    size: int = Field(description="Bytes")
    sha256: str = Field(description="SHA-256 of the bytes, hex")
    created_at: Timestamp = Field(description="When it was uploaded")


class RecordFile(RecordFileInfo):
    """A file kept in a record's file field, as an upload answers."""

    replaced: bool = Field(default=False, description="Whether it replaced a file")


class RecordFiles(BaseModel):
    """The files a record keeps, one per file field that has one, by field."""

    record_id: int
    files: list[RecordFileInfo]


def _filename_of(disposition: str | None) -> str | None:
    if not disposition:
        return None
    header = Message()
    header["content-disposition"] = disposition
    return header.get_filename()


async def _upload(
    request: Request,
    filename: Annotated[
        str | None,
        Query(max_length=1000, description="The file's name, when the body is the file"),
    ] = None,
) -> tuple[str, bytes]:
    """The uploaded file's name and bytes, from a multipart form's `file` part or the body."""
    content_type = request.headers.get("content-type", "")
    name: str | None
    if content_type.lower().startswith("multipart/form-data"):
        form = await request.form(max_files=1, max_fields=10)
        part = form.get("file")
        if not isinstance(part, UploadFile):
            raise InvalidInputError(
                "the upload",
                [Problem("file", "the form has no file part named `file`", "-F file=@PATH")],
            )
        content = await part.read()
        name = part.filename or filename
    else:
        content = await request.body()
        name = filename or _filename_of(request.headers.get("content-disposition"))
    if not name:
        raise InvalidInputError(
            "the upload",
            [
                Problem(
                    "filename",
                    "the file has no name",
                    "give it as ?filename=contract.pdf, in a Content-Disposition header, or "
                    "as the multipart part's filename",
                )
            ],
        )
    return name, content


@router.get("/records/{record_id}/files", response_model=RecordFiles)
def list_record_files(
    ctx: ServiceContext, _actor: CurrentActor, record_id: RowId
) -> dict[str, Any]:
    """The record's files (name, field, size, content type, SHA-256, when uploaded), without
    their bytes (GET .../files/{field} downloads one); whoever may read the record sees them."""
    files = record_files.list_files(ctx, record_id)
    return {"record_id": record_id, "files": [f.as_dict() for f in files]}


@router.put(
    "/records/{record_id}/files/{field}",
    response_model=RecordFile,
    responses={
        201: {"model": RecordFile, "description": "The file is kept (the field had none)"},
        413: {"description": "The file is larger than the server's max_file_bytes"},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": "The file as the body (name in ?filename=), or multipart with a "
            "`file` part",
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {"file": {"type": "string", "format": "binary"}},
                    }
                },
            },
        }
    },
)
def put_record_file(
    ctx: ServiceContext,
    actor: CurrentActor,
    record_id: RowId,
    field: FieldKey,
    upload: Annotated[tuple[str, bytes], Depends(_upload)],
    response: Response,
) -> dict[str, Any]:
    """Keep the file in the record's file field, replacing the one it had (200) or not (201)."""
    name, content = upload
    info, replaced = record_files.put_file(ctx, actor, record_id, field, name, content)
    response.status_code = status.HTTP_200_OK if replaced else status.HTTP_201_CREATED
    return {**info.as_dict(), "replaced": replaced}


@router.get(
    "/records/{record_id}/files/{field}",
    response_class=Response,
    responses={200: {"content": {"application/octet-stream": {}}, "description": "The file"}},
)
def get_record_file(
    ctx: ServiceContext, _actor: CurrentActor, record_id: RowId, field: FieldKey
) -> Response:
    """The file, as a download with its name, content type and SHA-256 (as the ETag)."""
    found = record_files.get_file(ctx, record_id, field)
    info = found.info
    fallback = info.filename.encode("ascii", "replace").decode().replace('"', "_")
    return Response(
        content=found.content,
        media_type=info.content_type,
        headers={
            "Content-Disposition": (
                f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(info.filename)}"
            ),
            "ETag": f'"{info.sha256}"',
            "X-Content-Type-Options": "nosniff",
        },
    )


@router.delete("/records/{record_id}/files/{field}", status_code=status.HTTP_204_NO_CONTENT)
def delete_record_file(
    ctx: ServiceContext, actor: CurrentActor, record_id: RowId, field: FieldKey
) -> None:
    """Delete the file of the record's file field (an email naming it then fails, saying so)."""
    record_files.delete_file(ctx, actor, record_id, field)
