"""The answers of the saved-query routes: saved queries, their pages and counts. A preview of a
query's records is a page of records (`RecordPage`, from the records module)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from crmflow.api.responses.records import NextAfter, Timestamp

__all__ = ["FilterCountResult", "QueryCountResult", "SavedQuery", "SavedQueryPage"]


class SavedQuery(BaseModel):
    """A named filter over the records of one type."""

    id: int
    name: str
    version: int = Field(
        description="One more on every update; also the ETag: send it back as If-Match"
    )
    record_type: str
    description: str
    filter: dict[str, Any] = Field(
        description="The filter: a condition `{field, op, value}` or a group `{all: [...]}` / "
        "`{any: [...]}` / `{not: ...}` of them; values may be relative dates (`today - 180 days`)"
    )
    created_by: int | None = Field(description="The id of the user who saved it")
    created_at: Timestamp
    updated_at: Timestamp


class SavedQueryPage(BaseModel):
    """One page of saved queries, by id."""

    items: list[SavedQuery]
    next_after: NextAfter


class FilterCountResult(BaseModel):
    count: int = Field(description="How many records the filter selects now")


class QueryCountResult(BaseModel):
    name: str = Field(description="The saved query's name")
    count: int = Field(description="How many records the query selects now")
