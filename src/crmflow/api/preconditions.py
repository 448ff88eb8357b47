"""ETag and If-Match: the HTTP face of optimistic concurrency (see `services.preconditions`).

A record's or a saved query's ETag is its version as a strong entity tag (`"7"`), a flow's is its
revision. Send it back as `If-Match: "7"` on an update or a delete: if the row changed since, the
answer is 412 and nothing is written. `If-Match: *` matches whatever version the row is at; without
If-Match, writes apply whatever the version (last writer wins).
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import Header, Response

from crmflow.errors import InvalidInputError, Problem
from crmflow.services.preconditions import ExpectedVersion

__all__ = [
    "NOT_MODIFIED",
    "PRECONDITION_FAILED",
    "IfMatch",
    "IfNoneMatch",
    "etag",
    "expected_version",
    "not_modified",
    "set_etag",
]

IfMatch = Annotated[
    str | None,
    Header(
        description="Update or delete only if the row is still at this version: the ETag a GET "
        'answered, e.g. `"7"` (or `*` for any version). A row that changed since answers 412 '
        "and nothing is written; without If-Match the write applies whatever the version.",
    ),
]

IfNoneMatch = Annotated[
    str | None,
    Header(
        description='The ETag of the copy you hold, e.g. `"7"`: while the row is still at that '
        "version the answer is 304 Not Modified, with no body.",
    ),
]

# One entity tag of an If-Match list: "7", W/"7", or any other quoted opaque tag.
_TAG = re.compile(r'\s*(W/)?"([^"]*)"\s*(?:,|$)')


def etag(version: int) -> str:
    return f'"{version}"'


def set_etag(response: Response, version: int) -> None:
    response.headers["ETag"] = etag(version)


def not_modified(if_none_match: str | None, version: int) -> Response | None:
    """304 Not Modified when If-None-Match names `version` (compared weakly, as RFC 9110 wants
    for If-None-Match) or is `*`; None when the whole answer is to be sent."""
    if if_none_match is None:
        return None
    tags = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    if "*" in tags or etag(version) in tags:
        return Response(status_code=304, headers={"ETag": etag(version)})
    return None


def expected_version(if_match: str | None) -> ExpectedVersion:
    """The versions an If-Match header accepts: None for any (absent or `*`), else the set of
    versions its strong entity tags name (weak tags never match: If-Match compares strongly)."""
    if if_match is None or if_match.strip() == "*":
        return None
    versions: set[int] = set()
    position = 0
    text = if_match.strip()
    while position < len(text):
        found = _TAG.match(text, position)
        if found is None:
            raise _malformed(if_match)
        weak, opaque = found.groups()
        if not weak and opaque.isascii() and opaque.isdigit() and len(opaque) <= 18:
            versions.add(int(opaque))
        position = found.end()
    if not versions and position == 0:
        raise _malformed(if_match)
    return versions


def _malformed(if_match: str) -> InvalidInputError:
    return InvalidInputError(
        "the If-Match header",
        [
            Problem(
                "If-Match",
                f"{if_match[:40]!r} is not an entity tag",
                'send the ETag a GET answered, quotes included (If-Match: "7"), or * for any '
                "version",
            )
        ],
    )


# Declared on each read that takes If-None-Match.
NOT_MODIFIED: dict[int | str, dict[str, Any]] = {
    304: {"description": "If-None-Match names the current version: your copy is current"}
}

# Declared on each route that takes If-Match, so that the OpenAPI document says it may answer 412.
PRECONDITION_FAILED: dict[int | str, dict[str, Any]] = {
    412: {
        "description": "If-Match names a version the row is no longer at: nothing was written; "
        "the message says the current version. Read it again and redo the change on it."
    }
}
